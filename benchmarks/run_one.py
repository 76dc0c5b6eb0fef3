"""Run one benchmark in this (fresh) process.

``python -m benchmarks.run_one NAME [--quick] [--json]``

With ``--json`` the only thing written to stdout is one JSON document
``{"benchmark", "seconds", "rows", "na"}``; everything else (logs, libraries' chatter) goes to
stderr. Without it, the rows are printed as a small table for a human.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from .harness import Config, NotAvailable
from .registry import BY_NAME


def run(name: str, quick: bool) -> dict[str, Any]:
    bench = BY_NAME[name]
    t0 = time.perf_counter()
    na = None
    rows: list[dict[str, Any]] = []
    try:
        rows = bench.load()(Config(quick=quick)).rows
    except NotAvailable as exc:
        na = str(exc)
    return {
        "benchmark": name,
        "seconds": round(time.perf_counter() - t0, 3),
        "rows": rows,
        "na": na,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_one")
    parser.add_argument("name", choices=sorted(BY_NAME))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = parser.parse_args(argv)
    if args.json:
        real_stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args.name, args.quick)
        json.dump(result, real_stdout)
        real_stdout.write("\n")
        real_stdout.flush()
        return 0
    result = run(args.name, args.quick)
    if result["na"]:
        print(f"{args.name}: n/a: {result['na']}")
    for row in result["rows"]:
        if row["median"] is None:
            value = f"n/a: {row['extra'].get('na')}"
        else:
            value = f"{row['median']:.4g} ({row['min']:.4g}-{row['max']:.4g}) {row['unit']}"
        print(f"{row['subject']:<28} {row['op']:<36} {value}")
    print(f"{result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
