"""The report's ratios: subjects measured in turns compare round by round, others by medians."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import harness, report

        yield harness, report
    finally:
        sys.path.remove(str(ROOT))


def _script(*values: float) -> Any:
    """A run that returns ``values`` one per call: warm-up first, then one per round."""
    it = iter(values)
    return lambda: next(it)


def test_interleaved_rows_compare_round_by_round(bench: tuple[ModuleType, ModuleType]) -> None:
    harness, report = bench
    # The machine turns slow during round 2, after ours ran and before the floor did: by medians
    # ours looks 0.6x the floor (a fast median against a slow one), round by round it is 1.2x.
    floor = [0.5, 0.5, 1.0, 1.0, 1.0]
    ours = [0.6, 0.6, 0.6, 1.2, 1.2]
    samples = harness.interleaved(
        {"floor": _script(0.0, *floor), "ours": _script(0.0, *ours)}, reps=5
    )
    assert samples["floor"] == floor and samples["ours"] == ours
    res = harness.Results("b", harness.Config())
    res.add("floor", harness.FLOOR, "op", "µs/op", samples["floor"])
    res.add("ours", harness.OURS, "op", "µs/op", samples["ours"])
    look = report.Lookup(res.rows)
    assert look.ratio("b", "ours", "op", "floor") == pytest.approx(1.2)
    assert statistics.median(ours) / statistics.median(floor) == pytest.approx(0.6)
    table = "\n".join(report.group_table("b", res.rows))  # the table shows the same figure
    assert "| **ours** | 0.6 µs (0.6-1.2) | 1.20x |" in table


def test_rows_of_separate_runs_compare_medians(bench: tuple[ModuleType, ModuleType]) -> None:
    harness, report = bench
    res = harness.Results("b", harness.Config())
    first = harness.interleaved({"floor": _script(0.0, 1.0, 4.0, 1.0)}, reps=3)
    second = harness.interleaved({"ours": _script(0.0, 3.0, 1.0, 2.0)}, reps=3)
    res.add("floor", harness.FLOOR, "op", "µs/op", first["floor"])
    res.add("ours", harness.OURS, "op", "µs/op", second["ours"])
    res.add("plain", harness.PEER, "op", "µs/op", [2.0, 2.0, 2.0])  # repeat(), not in turns
    look = report.Lookup(res.rows)
    assert res.rows[0]["round_group"] != res.rows[1]["round_group"]
    assert res.rows[2]["round_group"] is None
    assert look.ratio("b", "ours", "op", "floor") == pytest.approx(2.0 / 1.0)
    assert look.ratio("b", "plain", "op", "floor") == pytest.approx(2.0)
    assert look.ratio("b", "ours", "op", "missing") is None


def test_a_zero_sample_falls_back_to_medians(bench: tuple[ModuleType, ModuleType]) -> None:
    harness, report = bench
    samples = harness.interleaved(
        {"floor": _script(0.0, 0.0, 2.0, 2.0), "ours": _script(0.0, 1.0, 4.0, 4.0)}, reps=3
    )
    res = harness.Results("b", harness.Config())
    res.add("floor", harness.FLOOR, "op", "ms", samples["floor"])
    res.add("ours", harness.OURS, "op", "ms", samples["ours"])
    assert report.Lookup(res.rows).ratio("b", "ours", "op", "floor") == pytest.approx(2.0)


def test_rows_survive_json(bench: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    """results.json holds the group, so a report rendered again from the file pairs the same."""
    harness, report = bench
    samples = harness.interleaved({"a": _script(0.0, 1.0, 2.0), "b": _script(0.0, 2.0, 2.0)}, 2)
    res = harness.Results("x", harness.Config())
    res.add("a", harness.FLOOR, "op", "ms", samples["a"])
    res.add("b", harness.OURS, "op", "ms", samples["b"])
    rows = json.loads(json.dumps(res.rows))
    assert report.Lookup(rows).ratio("x", "b", "op", "a") == pytest.approx(1.5)


def _render(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_render_writes_the_report_again_from_results_json(tmp_path: Path) -> None:
    published = ROOT / "benchmarks" / "results" / "2026-12-01-kv-mutex-1" / "results.json"
    shutil.copy(published, tmp_path / "results.json")
    before = (tmp_path / "results.json").read_bytes()
    done = _render(tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "results.md").read_text()
    assert "Report written again on" in text
    assert "| memory insert of a new key, collector on ≤ 2.0x floor |" in text
    assert "(memory inserts: 15," in text  # from the rows, not from today's settings
    assert (tmp_path / "results.json").read_bytes() == before

    missing = tmp_path / "nothing-here"
    done = _render(missing)
    assert done.returncode == 2
    assert f"cannot read {missing / 'results.json'}" in done.stderr
    assert not missing.exists()
