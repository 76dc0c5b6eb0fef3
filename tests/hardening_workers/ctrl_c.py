"""Press Ctrl-C again and again while the main thread uses a store (run as a script).

    python ctrl_c.py URL INTERRUPTS

A helper thread sends SIGINT to the process every 50 to 500 us while the main thread loops over
get, set_with_ttl, add_turn and get_thread on the store at URL, catching each KeyboardInterrupt.
The handler raises it wherever the signal lands inside those calls, as the default one does;
between them it lets the signal pass, so the loop itself is never cut. After each interrupt the
store's locks must be free: a lock taken by ``acquire()`` just before a ``try`` stays held when
the interrupt lands between them, and every later call would hang. At the end, with SIGINT
ignored, a fresh thread must still read, write, list and close the store, and a memory store
must be consistent again (its interrupted updates mended). Prints one JSON line
{"interrupts", "operations", "leaked", "hung"}, plus "mended" for memory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

from threadstore import Storage, ThreadStore, open_storage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from memory_invariants import assert_filed_once


def held(storage: Storage) -> bool:
    """Whether a lock or an in-flight mark of the store is still taken (no other thread uses it)."""
    locks = [getattr(storage, name, None) for name in ("_lock", "_write_lock")]
    if any(lock is not None and lock.locked() for lock in locks):
        return True
    return bool(getattr(storage, "_inflight", None))


def main(url: str, wanted: int) -> dict[str, int]:
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1_000_000)
    tid = store.create_thread("ctrl-c")
    storage.set_with_ttl("k", 600, "v")
    stop, go = threading.Event(), threading.Event()

    def pester() -> None:
        go.wait()
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(random.uniform(0.00005, 0.0005))  # lands at a different point each time

    armed = [False]  # SIGINT raises KeyboardInterrupt only while a store call runs

    def on_sigint(signum: int, frame: object) -> None:
        if armed[0]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    pesterer = threading.Thread(target=pester, daemon=True)
    pesterer.start()
    interrupts = operations = leaked = 0
    go.set()
    while interrupts < wanted and not leaked:
        try:
            armed[0] = True
            storage.get("k")
            storage.set_with_ttl("k", 600, "v")
            if operations % 8 == 0:
                store.add_turn(tid, "user", "t")
                store.get_thread(tid)
            armed[0] = False
            operations += 1
        except KeyboardInterrupt:
            armed[0] = False
            interrupts += 1
            if held(storage):
                leaked += 1  # the next call would wait for good
    stop.set()
    pesterer.join()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    done = threading.Event()
    stats: dict[str, int] = {}

    def still_works() -> None:
        storage.set_with_ttl("k", 600, "w")
        assert storage.get("k") == "w"
        assert [t.thread_id for t in store.list_threads().threads] == [tid]
        assert store.count_threads() == 1
        thread = store.get_thread(tid)
        assert thread is not None and all(turn.content == "t" for turn in thread.turns)
        if storage.kind == "memory":
            stats["mended"] = storage.stats()["mended"]
            assert_filed_once(storage)  # type: ignore[arg-type]
        storage.close()
        done.set()

    checker = threading.Thread(target=still_works, daemon=True)
    checker.start()
    checker.join(60)
    return {
        "interrupts": interrupts,
        "operations": operations,
        "leaked": leaked,
        "hung": 0 if done.is_set() else 1,
        **stats,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
