"""Benchmark runs stay out of `git status` and their progress output stays readable (#17)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_default_benchmark_output_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.__main__ import default_out; print(default_out())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(out).is_relative_to(ROOT / "benchmarks" / "results")
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", str(Path(out) / "results.md")]
    )
    assert ignored.returncode == 0, f"{out} would show in git status"


def test_mcp_latency_servers_log_no_info_lines() -> None:
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.workloads_mcp import floor_server, threadstore_server;"
        "print(floor_server().settings.log_level, threadstore_server('memory://').settings.log_level)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["WARNING", "WARNING"]
