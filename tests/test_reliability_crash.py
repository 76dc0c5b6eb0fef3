"""Crashes: writer processes on one SQLite file are SIGKILLed at random moments, many times.

Each round starts writer processes (reliability_workers/turns.py write) that append turns to
two threads and print "ack" after each add_turn returned; after a random delay one or both are
killed with SIGKILL (no cleanup, no atexit, possibly inside a transaction). After every round:
``PRAGMA integrity_check`` is "ok", every acknowledged turn is in its thread, no turn is
duplicated or out of order, and a fresh process can still write. A turn whose process died
between its commit and its "ack" may be present unacknowledged; nothing else may.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from reliability_workers.figures import record
from reliability_workers.turns import check_snapshot
from threadstore import ThreadStore, open_storage

WORKER = str(Path(__file__).parent / "reliability_workers" / "turns.py")
ROUNDS = int(os.environ.get("THREADSTORE_CRASH_ROUNDS", "12"))


def _spawn(url: str, writer: str, tids: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, "write", url, writer, "100000", *tids],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _collect(
    proc: subprocess.Popen[str], into: list[str], first_ack: threading.Event
) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            into.append(line.rstrip("\n"))
            if line.startswith("ack "):
                first_ack.set()
        first_ack.set()  # the writer ended (or died) without acknowledging: do not wait on it

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def test_sigkill_writers_lose_no_acknowledged_turn(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=1_000_000)
    tids = [store.create_thread("chat") for _ in range(2)]
    storage.close()
    rng = random.Random(int(os.environ.get("THREADSTORE_CRASH_SEED", "8")))
    acked: dict[str, set[str]] = {tid: set() for tid in tids}
    kills = acked_total = unacked_present = 0
    started = time.monotonic()
    for rnd in range(ROUNDS):
        pad = rng.choice([0, 0, 2000, 100_000])  # big turns widen the window inside a commit
        writers = {f"r{rnd}w{w}" + "." * pad: [] for w in range(2)}
        procs = {name: _spawn(url, name, tids) for name in writers}
        acks = {name: threading.Event() for name in writers}
        pumps = [_collect(p, writers[name], acks[name]) for name, p in procs.items()]
        # Kills are timed from each writer's first acknowledgement, not from its spawn: on a
        # loaded machine a writer may need most of a second just to start (interpreter, imports).
        for event in acks.values():
            assert event.wait(timeout=120), "a writer never acknowledged its first turn"
        time.sleep(rng.uniform(0.05, 0.3))
        victims = list(procs) if rng.random() < 0.5 else [rng.choice(list(procs))]
        for name in victims:
            procs[name].send_signal(signal.SIGKILL)
            kills += 1
        for name, p in procs.items():
            if name not in victims:
                time.sleep(rng.uniform(0.0, 0.1))
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait(timeout=30)
        for t in pumps:
            t.join(timeout=10)
        for name, lines in writers.items():
            for line in lines:
                if line.startswith("ack "):
                    _, tid, number = line.split()
                    acked[tid].add(f"{name}:{number}")

        # After every round: the file is sound and holds every acknowledged turn.
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        storage = open_storage(url, fallback="fail")
        store = ThreadStore(storage, ttl_seconds=3600, max_turns=1_000_000)
        for tid in tids:
            thread = store.get_thread(tid)
            assert thread is not None
            contents = [t.content for t in thread.turns]
            assert check_snapshot(contents, None) is None
            missing = acked[tid] - set(contents)
            assert not missing, f"round {rnd}: acknowledged turns lost: {sorted(missing)[:5]}"
        store.add_turn(tids[0], "user", f"after{rnd}:0")  # a new writer gets through at once
        acked[tids[0]].add(f"after{rnd}:0")
        storage.close()

    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=1_000_000)
    for tid in tids:
        thread = store.get_thread(tid)
        assert thread is not None
        contents = {t.content for t in thread.turns}
        acked_total += len(acked[tid])
        unacked_present += len(contents - acked[tid])
    storage.close()
    assert acked_total > ROUNDS * 10, "the writers hardly wrote: the test proved little"
    record(
        "crash sqlite sigkill",
        rounds=ROUNDS,
        kills=kills,
        acknowledged_turns=acked_total,
        committed_but_unacknowledged=unacked_present,
        lost=0,
        integrity_checks_ok=ROUNDS,
        seconds=round(time.monotonic() - started, 1),
    )
