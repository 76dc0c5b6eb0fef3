"""Concurrency: mixed readers and writers on every backend, with threads, processes and tasks.

Writers append numbered turns ("WRITER:i") to a few threads through ThreadStore and keep every
acknowledged turn; readers take snapshots of the same threads the whole time. Every snapshot
must be consistent (reliability_workers.turns.check_snapshot: no duplicate, each writer's turns
0..k-1 in order, each snapshot starting with the previous one), and at the end every thread
holds exactly the acknowledged turns: nothing lost, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability_workers.figures import record
from reliability_workers.turns import check_snapshot
from threadstore import AsyncThreadStore, Storage, ThreadStore, open_storage

WORKER = str(Path(__file__).parent / "reliability_workers" / "turns.py")
SIZES = {"memory": (8, 1000), "sqlite": (4, 300), "redis": (6, 400)}  # writers, turns each


@pytest.fixture
def storage(any_url: str) -> Iterator[Storage]:
    s = open_storage(any_url, fallback="fail")
    yield s
    s.close()


def _final_check(store: ThreadStore, tids: list[str], acked: dict[str, list[str]]) -> int:
    total = 0
    for tid in tids:
        thread = store.get_thread(tid)
        assert thread is not None
        contents = [t.content for t in thread.turns]
        assert check_snapshot(contents, None) is None
        assert sorted(contents) == sorted(acked[tid]), "lost or extra turns"
        total += len(contents)
    return total


def test_threads_mixed_readers_and_writers(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100_000)
    writers, per_writer = SIZES[storage.kind]
    tids = [store.create_thread("chat") for _ in range(3)]
    acked: dict[str, list[str]] = {tid: [] for tid in tids}
    ack_lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()
    snapshots = [0]

    def writer(w: int) -> None:
        try:
            for i in range(per_writer):
                tid = tids[i % len(tids)]
                turn = store.add_turn(tid, "user", f"w{w}:{i // len(tids)}")
                with ack_lock:
                    acked[tid].append(turn.content)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        previous: dict[str, list[str]] = {}
        try:
            while not done.is_set():
                for tid in tids:
                    thread = store.get_thread(tid)
                    assert thread is not None
                    contents = [t.content for t in thread.turns]
                    problem = check_snapshot(contents, previous.get(tid))
                    assert problem is None, problem
                    previous[tid] = contents
                    snapshots[0] += 1
                page = store.list_threads(limit=10)
                assert {t.thread_id for t in page.threads} == set(tids)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    workers = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    started = time.monotonic()
    for t in readers + workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    done.set()
    for t in readers:
        t.join(timeout=30)
    assert errors == []
    total = _final_check(store, tids, acked)
    assert total == writers * per_writer
    record(
        f"concurrency threads {storage.kind}",
        writers=writers,
        readers=3,
        turns_acknowledged=total,
        snapshots_checked=snapshots[0],
        lost=0,
        duplicated=0,
        reordered=0,
        seconds=round(time.monotonic() - started, 2),
    )


def test_processes_mixed_readers_and_writers(shared_url: str, tmp_path: Path) -> None:
    storage = open_storage(shared_url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100_000)
    tids = [store.create_thread("chat") for _ in range(2)]
    writers, per_writer, readers = 3, 300, 2
    stop_file = tmp_path / "stop"
    env = {**__import__("os").environ, "THREADSTORE_STOP_FILE": str(stop_file)}
    started = time.monotonic()
    reading = [
        subprocess.Popen(
            [sys.executable, WORKER, "read", shared_url, "60", *tids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(readers)
    ]
    writing = [
        subprocess.Popen(
            [sys.executable, WORKER, "write", shared_url, f"p{w}", str(per_writer), *tids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    acked: dict[str, list[str]] = {tid: [] for tid in tids}
    try:
        for w, p in enumerate(writing):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            lines = out.split("\n")
            assert "done" in lines
            for line in lines:
                if line.startswith("ack "):
                    _, tid, number = line.split()
                    acked[tid].append(f"p{w}:{number}")
        stop_file.touch()
        stats = []
        for p in reading:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            stats.append(json.loads(out))
    finally:
        for p in writing + reading:
            if p.poll() is None:
                p.kill()
                p.wait()
    total = _final_check(store, tids, acked)
    assert total == writers * per_writer
    record(
        f"concurrency processes {storage.kind}",
        writer_processes=writers,
        reader_processes=readers,
        turns_acknowledged=total,
        snapshots_checked=sum(s["snapshots"] for s in stats),
        lost=0,
        seconds=round(time.monotonic() - started, 2),
    )
    storage.close()


def test_async_tasks_mixed_readers_and_writers(any_url: str) -> None:
    """AsyncThreadStore: 40 writer tasks and 4 reader tasks on one event loop."""
    storage = open_storage(any_url, fallback="fail")
    store = AsyncThreadStore(storage, ttl_seconds=600, max_turns=100_000)
    writers, per_writer = 40, 15

    async def main() -> tuple[int, int]:
        tid = await store.create_thread("chat")
        acked: list[str] = []
        done = asyncio.Event()
        snapshots = 0

        async def writer(w: int) -> None:
            for i in range(per_writer):
                turn = await store.add_turn(tid, "assistant", f"t{w}:{i}")
                acked.append(turn.content)

        async def reader() -> None:
            nonlocal snapshots
            previous: list[str] | None = None
            while not done.is_set():
                thread = await store.get_thread(tid)
                assert thread is not None
                contents = [t.content for t in thread.turns]
                problem = check_snapshot(contents, previous)
                assert problem is None, problem
                previous = contents
                snapshots += 1
                await asyncio.sleep(0)

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(writers))), 120)
        done.set()
        await asyncio.gather(*readers)
        thread = await store.get_thread(tid)
        assert thread is not None
        contents = [t.content for t in thread.turns]
        assert check_snapshot(contents, None) is None
        assert sorted(contents) == sorted(acked)
        if hasattr(storage, "aclose"):
            await storage.aclose()
        return len(contents), snapshots

    total, snapshots = asyncio.run(main())
    storage.close()
    assert total == writers * per_writer
    record(
        f"concurrency async tasks {storage.kind}",
        writer_tasks=writers,
        reader_tasks=4,
        turns_acknowledged=total,
        snapshots_checked=snapshots,
        lost=0,
    )
