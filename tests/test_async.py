"""AsyncThreadStore on every backend: same answers as the sync facade, concurrency, no blocking."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from threadstore import AsyncThreadStore, InvalidThreadId, ThreadFull, ThreadNotFound, open_storage

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def astore(any_url: str) -> AsyncIterator[AsyncThreadStore]:
    storage = open_storage(any_url, fallback="fail")
    yield AsyncThreadStore(storage, ttl_seconds=60, max_turns=2000)
    storage.close()


async def test_round_trip(astore: AsyncThreadStore) -> None:
    parent = await astore.create_thread("chat", {"q": 1})
    await astore.add_turn(parent, "user", "hi", files=["a"])
    child = await astore.create_thread("chat", parent_thread_id=parent)
    await astore.add_turn(child, "assistant", "yo")
    thread = await astore.get_thread(child)
    assert thread is not None
    assert [t.content for t in thread.turns] == ["yo"]
    chain = await astore.get_thread_chain(child)
    assert [t.thread_id for t in chain] == [parent, child]
    history = await astore.build_history(child, max_tokens=500)
    assert history.turns_included == 2
    page = await astore.list_threads(limit=10)
    assert {t.thread_id for t in page.threads} == {parent, child}
    lines = [line async for line in astore.export_threads()]
    assert len(lines) == 2
    assert await astore.import_threads(lines) == 0
    assert await astore.delete_thread(child) is True
    assert await astore.get_thread(child) is None


async def test_errors(astore: AsyncThreadStore) -> None:
    with pytest.raises(InvalidThreadId):
        await astore.get_thread("nope")
    with pytest.raises(ThreadNotFound):
        await astore.add_turn(str(uuid.uuid4()), "user", "x")
    small = AsyncThreadStore(astore.storage, ttl_seconds=60, max_turns=1)
    tid = await small.create_thread("chat")
    await small.add_turn(tid, "user", "x")
    with pytest.raises(ThreadFull):
        await small.add_turn(tid, "user", "y")


async def test_concurrent_coroutines_lose_nothing(astore: AsyncThreadStore) -> None:
    tid = await astore.create_thread("chat")
    await asyncio.gather(*(astore.add_turn(tid, "user", f"c{i}") for i in range(64)))
    thread = await astore.get_thread(tid)
    assert thread is not None
    assert sorted(t.content for t in thread.turns) == sorted(f"c{i}" for i in range(64))


async def test_event_loop_stays_responsive(astore: AsyncThreadStore) -> None:
    """Other tasks run while store calls wait on I/O (a thread for SQLite, a socket for Redis).

    Memory calls are a few microseconds with no I/O, so they run inline and never yield.
    """
    if astore.storage.kind == "memory":
        pytest.skip("memory calls never wait on I/O; they run inline")
    tid = await astore.create_thread("chat")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    for i in range(50):
        await astore.add_turn(tid, "user", f"t{i}")
        await astore.get_thread(tid)
    stop.set()
    await task
    assert ticks > 0


async def test_index_pages_counts_exports_and_reindex(astore: AsyncThreadStore) -> None:
    """The activity index through the async side: several export pages, cursors, reindex."""
    ids = [await astore.create_thread("chat") for _ in range(130)]  # > one export page (100)
    await astore.add_turn(ids[0], "user", "latest")
    assert await astore.count_threads() == 130
    seen: list[str] = []
    cursor = None
    while True:
        page = await astore.list_threads(limit=40, cursor=cursor)
        seen += [t.thread_id for t in page.threads]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen[0] == ids[0] and sorted(seen) == sorted(ids)
    lines = [line async for line in astore.export_threads()]
    assert len(lines) == 130 and ids[0] in lines[-1]  # oldest activity first
    assert await astore.reindex() == 130  # idempotent: filed again, nothing doubled
    assert await astore.count_threads() == 130
