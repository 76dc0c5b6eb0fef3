"""Close a SQLite store while 8 threads use it (run as a script: a crash is an exit status).

    python close_race.py DIRECTORY ROUNDS

Each round opens a store on a new file, starts 8 threads calling add_turn / get_thread in a loop
(half of them readers only), and closes the store from the main thread 10-40 ms later, through
one of the three paths in turn: storage.close(), ThreadStore.close(), reset_storage_backend().
Every call racing the close must finish or raise StorageUnavailable("... closed"); anything
else is printed and the script exits 1. It prints one JSON line {"rounds", "refused", "calls"}.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

import threadstore
from threadstore import StorageUnavailable, ThreadStore, open_storage


def one_round(rnd: int, directory: str, delay: float, failures: list[str]) -> tuple[int, int]:
    """One store, 8 threads, one close(); returns (calls refused as closed, calls made)."""
    url = f"sqlite:///{os.path.join(directory, f'race{rnd}.db')}"
    way = ("storage", "facade", "singleton")[rnd % 3]
    if way == "singleton":
        os.environ["THREADSTORE_URL"] = url
        storage = threadstore.get_storage_backend()
    else:
        storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1_000_000)
    tid = store.create_thread("race")
    started = threading.Barrier(9)
    counts = [0] * 8
    refused = [0] * 8

    def work(n: int) -> None:
        started.wait()
        try:
            while True:
                if n % 2:
                    store.get_thread(tid)
                else:
                    store.add_turn(tid, "user", f"w{n}")
                counts[n] += 1
        except StorageUnavailable as exc:
            if "closed" not in str(exc):
                failures.append(f"round {rnd}: {exc}")
            refused[n] = 1
        except BaseException as exc:
            failures.append(f"round {rnd}: {type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    started.wait()
    time.sleep(delay)  # the race itself: close while the calls run
    if way == "storage":
        storage.close()
    elif way == "facade":
        store.close()
    else:
        threadstore.reset_storage_backend()
    for w in workers:
        w.join(timeout=60)
        if w.is_alive():
            failures.append(f"round {rnd}: a worker still runs 60 s after close()")
    return sum(refused), sum(counts)


def main(directory: str, rounds: int) -> int:
    rng = random.Random(7)
    refused = calls = 0
    failures: list[str] = []
    for rnd in range(rounds):
        r, c = one_round(rnd, directory, rng.uniform(0.01, 0.04), failures)
        refused += r
        calls += c
    for failure in failures[:10]:
        print(failure, file=sys.stderr)
    print(json.dumps({"rounds": rounds, "refused": refused, "calls": calls}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
