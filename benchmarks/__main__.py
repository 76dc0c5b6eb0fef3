"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR] [--list] [--render DIR]``

Runs each benchmark in a fresh Python process (``python -m benchmarks.run_one NAME --json``),
then writes ``results.json``, ``results.md`` and one PNG per benchmark to the output directory
(default ``benchmarks/results/local/<YYYY-MM-DD>-<host>/``, which git ignores: a published run
is a deliberate ``--out benchmarks/results/<name>``). Progress goes to stderr.

``--render DIR`` runs nothing: it writes ``DIR/results.md`` again from ``DIR/results.json`` with
the current report code (after a change to how ratios or targets are computed).

Exit status: 0 when every benchmark ran (subjects reported "n/a" because a part has not landed or
a binary is missing are fine), 1 when any benchmark crashed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import machine, report
from .registry import BENCHMARKS, BY_NAME

HERE = Path(__file__).resolve().parent


def default_out() -> Path:
    host = socket.gethostname().split(".")[0] or "host"
    return HERE / "results" / "local" / f"{dt.date.today().isoformat()}-{host}"


def run_child(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.run_one", name, "--json"]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            cmd,
            cwd=machine.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's own stderr (tracebacks, warnings) shows as it happens
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"benchmark": name, "rows": [], "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"benchmark": name, "rows": [], "error": f"exit status {proc.returncode}"}
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"benchmark": name, "rows": [], "error": "no JSON on stdout"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="threadstore's benchmark suite: threadstore vs its floors and peers.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 2 repetitions (CI: harness check only)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--out", type=Path, help="output directory (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed per benchmark (default 1800)"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="DIR",
        help="write DIR/results.md again from DIR/results.json, running nothing",
    )
    args = parser.parse_args(argv)

    if args.render:
        return render(parser, args.render)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<18} {b.about}")
        return 0
    selected = BENCHMARKS
    if args.only:
        unknown = [n for n in args.only if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; see --list")
        selected = [b for b in BENCHMARKS if b.name in args.only]

    out: Path = args.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    log = sys.stderr
    print(f"benchmarks: {len(selected)} to run, results in {out}", file=log)

    benches: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    crashed = []
    for i, b in enumerate(selected, 1):
        print(f"[{i:>2}/{len(selected)}] {b.name} ...", file=log, flush=True)
        t0 = time.perf_counter()
        res = run_child(b.name, args.quick, args.timeout)
        elapsed = time.perf_counter() - t0
        brows = res.get("rows", [])
        n_na = sum(1 for r in brows if r["median"] is None)
        entry: dict[str, Any] = {"name": b.name, "seconds": round(elapsed, 2)}
        if res.get("error"):
            entry["error"] = res["error"]
            crashed.append(b.name)
            status = f"CRASHED ({res['error']})"
        elif res.get("na"):
            entry["na"] = res["na"]
            status = f"n/a: {res['na']}"
        else:
            status = f"ok, {len(brows) - n_na} rows" + (f", {n_na} n/a" if n_na else "")
        print(f"[{i:>2}/{len(selected)}] {b.name}: {status} in {elapsed:.1f} s", file=log)
        benches.append(entry)
        rows += brows

    for entry in benches:
        brows = [r for r in rows if r["benchmark"] == entry["name"]]
        png = f"{entry['name']}.png"
        try:
            if report.plot(entry["name"], brows, out / png):
                entry["plot"] = png
        except Exception as exc:  # a plot must never lose the numbers
            print(f"plot {png} failed: {exc!r}", file=log)
            crashed.append(f"plot {png}")

    result: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine.describe(),
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 2),
        "benchmarks": benches,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(report.nan_free(result), indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(result))
    print(
        f"benchmarks: done in {result['seconds']:.0f} s: {out / 'results.md'}"
        + (f"; CRASHED: {', '.join(crashed)}" if crashed else ""),
        file=log,
    )
    return 1 if crashed else 0


def render(parser: argparse.ArgumentParser, out: Path) -> int:
    try:
        result = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {out / 'results.json'}: {exc}")
    result["rendered"] = dt.datetime.now().isoformat(timespec="seconds")
    (out / "results.md").write_text(report.markdown(result))
    print(f"benchmarks: wrote {out / 'results.md'} again from results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
