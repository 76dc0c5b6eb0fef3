"""Several processes open the same new SQLite file at the same moment, many times.

    python init_race.py DIRECTORY PROCESSES ROUNDS

Each round names a new file; PROCESSES processes wait on a barrier, then all open it at once
(one of them initialises it, the others must see either nothing or the whole schema), write a
key and close. Prints one JSON line {"opens", "failures"}; exits 1 if any open failed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from multiprocessing.synchronize import Barrier


def worker(directory: str, rounds: int, barrier: Barrier, errors: mp.Queue[str]) -> None:
    from threadstore import open_storage

    for rnd in range(rounds):
        barrier.wait(timeout=120)
        try:
            store = open_storage(f"sqlite:///{directory}/init{rnd}.db", fallback="fail")
            store.set_with_ttl(f"k{os.getpid()}", 60, "v")
            store.close()
        except Exception as exc:
            errors.put(f"round {rnd}: {type(exc).__name__}: {exc}")


def main(directory: str, processes: int, rounds: int) -> int:
    ctx = mp.get_context("fork")  # this parent has one thread and no store
    barrier = ctx.Barrier(processes)
    errors: mp.Queue[str] = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(directory, rounds, barrier, errors))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        if p.is_alive():
            p.kill()
            errors.put("a process did not finish in time")
    failures: list[str] = []
    while not errors.empty():
        failures.append(errors.get())
    for f in failures[:10]:
        print(f, file=sys.stderr)
    print(json.dumps({"opens": processes * rounds, "failures": len(failures)}), flush=True)
    return 1 if failures or any(p.exitcode for p in procs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
