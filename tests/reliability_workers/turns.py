"""Worker processes for the reliability suite (run as scripts, one per process).

    python turns.py write URL WRITER COUNT TID [TID ...]
        append COUNT turns "WRITER:i" round-robin over the thread ids through ThreadStore,
        printing "ack TID i" after each add_turn returned (flushed: the parent reads the
        acknowledged turns even if this process is killed a moment later), then "done".
    python turns.py read URL SECONDS TID [TID ...]
        read the threads again and again for SECONDS (or until a file named by the
        THREADSTORE_STOP_FILE environment variable exists), checking every snapshot; prints one
        JSON line {"snapshots": n, "turns_seen": m}; exits 3 with a message on a violation.

Snapshot rules (check_snapshot): turns parse as "WRITER:i"; no duplicate; for every writer
its numbers are 0..k-1 in order (a writer waits for each acknowledgement, so nothing after a gap
can be visible); and every snapshot starts with the previous one of the same thread (appends
are atomic and never reordered).
"""

from __future__ import annotations

import json
import os
import sys
import time

from threadstore import ThreadStore, open_storage


def check_snapshot(contents: list[str], previous: list[str] | None) -> str | None:
    """None when the snapshot is consistent, else what is wrong."""
    if len(set(contents)) != len(contents):
        return f"duplicate turns in a snapshot of {len(contents)}"
    nxt: dict[str, int] = {}
    for c in contents:
        writer, sep, number = c.rpartition(":")
        if not sep or not number.isdigit():
            return f"unexpected turn content {c[:40]!r}"
        expected = nxt.get(writer, 0)
        if int(number) != expected:
            return f"writer {writer}: turn {number} seen where {expected} was due (gap/reorder)"
        nxt[writer] = expected + 1
    if previous is not None and contents[: len(previous)] != previous:
        return "a later snapshot does not start with the earlier one (lost or reordered turn)"
    return None


def write(url: str, writer: str, count: int, tids: list[str]) -> None:
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1_000_000)
    for i in range(count):
        tid = tids[i % len(tids)]
        store.add_turn(tid, "user", f"{writer}:{i // len(tids)}")
        sys.stdout.write(f"ack {tid} {i // len(tids)}\n")
        sys.stdout.flush()
    storage.close()
    print("done", flush=True)


def read(url: str, seconds: float, tids: list[str]) -> int:
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=1_000_000)
    stop_file = os.environ.get("THREADSTORE_STOP_FILE")
    previous: dict[str, list[str]] = {}
    snapshots = seen = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file)):
        for tid in tids:
            thread = store.get_thread(tid)
            if thread is None:
                print(f"thread {tid} vanished", file=sys.stderr)
                return 3
            contents = [t.content for t in thread.turns]
            problem = check_snapshot(contents, previous.get(tid))
            if problem:
                print(f"thread {tid}: {problem}", file=sys.stderr)
                return 3
            previous[tid] = contents
            snapshots += 1
            seen += len(contents)
    storage.close()
    print(json.dumps({"snapshots": snapshots, "turns_seen": seen}), flush=True)
    return 0


def main() -> int:
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "write":
        write(url, sys.argv[3], int(sys.argv[4]), sys.argv[5:])
        return 0
    if mode == "read":
        return read(url, float(sys.argv[3]), sys.argv[4:])
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
