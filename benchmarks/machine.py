"""What the numbers were measured on: host, CPU, memory, Python and the versions of every peer."""

from __future__ import annotations

import os
import platform
import re
import socket
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = ("threadstore", "cachetools", "diskcache", "redis", "hiredis", "mcp", "matplotlib")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    return round(int(m.group(1)) / 1024 / 1024, 1) if m else None


def _redis_server_version() -> str | None:
    from threadstore.testing import redis_binary

    binary = redis_binary()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v=(\S+)", out.stdout)
    return m.group(1) if m else out.stdout.strip() or None


def _git(*args: str) -> str | None:
    """Read-only git queries (rev-parse, status) about the checkout being measured."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def describe() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    # Changes to tracked files only: a run's own output directory is untracked until published.
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "redis_server": _redis_server_version(),
        "packages": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def one_line(m: dict[str, Any]) -> str:
    mem = f", {m['memory_gib']} GiB RAM" if m.get("memory_gib") else ""
    return (
        f"{m['host']}: {m['cpu']}, {m['cores']} cores{mem}, {m['os']}, {m['python']},"
        f" SQLite {m['sqlite']}, redis-server {m['redis_server'] or 'not installed'}"
    )
