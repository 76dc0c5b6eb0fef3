"""fork() while other threads use a store (run as a script; the parent kills a hung child).

    python fork_under_load.py URL FORKS

Four threads call add_turn / get_thread on one store in a loop while the main thread forks
FORKS times. Each child uses the store it inherited (a write and a read), then opens a store of
its own on the same URL and uses that (SQLite: the same file). A child may get a
StorageUnavailable telling it to open its own store; it must never hang or fail otherwise. A
child still running after CHILD_TIMEOUT seconds counts as hung: it is asked to print every
thread's stack to stderr (SIGUSR1, faulthandler), then killed. Prints one JSON
line {"forks", "inherited_ok", "told_to_reopen", "hung", "failed"}; exits 1 on any hang or
failure.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time

from threadstore import StorageUnavailable, ThreadStore, open_storage

CHILD_TIMEOUT = 20.0
OK, REOPEN, FAILED = 0, 3, 1


def child(url: str, store: ThreadStore, tid: str) -> int:
    status = OK
    try:
        store.add_turn(tid, "user", f"child {os.getpid()}")
        assert store.get_thread(tid) is not None
    except StorageUnavailable as exc:
        if "open a new store" not in str(exc):
            print(f"child: unclear error: {exc}", file=sys.stderr)
            return FAILED
        status = REOPEN
    own = ThreadStore(open_storage(url, fallback="fail"), ttl_seconds=600, max_turns=10**6)
    if url.startswith("sqlite"):
        own.add_turn(tid, "user", "child's own store")
        assert own.get_thread(tid) is not None
    else:
        assert own.get_thread(own.create_thread("child")) is not None
    own.close()
    return status


def main(url: str, forks: int) -> int:
    store = ThreadStore(open_storage(url, fallback="fail"), ttl_seconds=600, max_turns=10**6)
    tid = store.create_thread("fork")
    stop = threading.Event()
    running = threading.Barrier(5)

    def load(n: int) -> None:
        running.wait()
        mine, i = store.create_thread("load"), 0
        while not stop.is_set():
            if n % 2:
                store.get_thread(tid)
            else:
                i += 1
                if i % 200 == 0:  # keep threads short: reads stay cheap
                    mine = store.create_thread("load")
                store.add_turn(mine, "user", f"parent {n}")

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    running.wait()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # inherited: a hung child's stacks
    counts = {"forks": forks, "inherited_ok": 0, "told_to_reopen": 0, "hung": 0, "failed": 0}
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            code = FAILED
            try:
                code = child(url, store, tid)
            except BaseException as exc:
                print(f"child: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                os._exit(code)
        deadline = time.monotonic() + CHILD_TIMEOUT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                key = {OK: "inherited_ok", REOPEN: "told_to_reopen"}.get(code, "failed")
                counts[key] += 1
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGUSR1)
                time.sleep(1.0)  # diagnostics only: time for the child to print its stacks
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                counts["hung"] += 1
                break
            time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    store.close()
    print(json.dumps(counts), flush=True)
    return 1 if counts["hung"] or counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
