"""The activity index against a full scan (issue #13), on every backend.

A hypothesis test drives random creates, turns, deletes, expiries and imports, then checks that
``list_threads`` pages (through the index) give exactly what ranking every stored thread by a
full scan gives, and that ``count_threads`` agrees. A second test pages while writers work and
checks the cursor promise: no repeats, and every thread that stayed put is seen once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import ALL_BACKENDS, backend_url
from threadstore import (
    Storage,
    Thread,
    ThreadFull,
    ThreadNotFound,
    ThreadStore,
    Turn,
    open_storage,
)
from threadstore._logic import Logic, _micros

DEADLINE = 10.0  # seconds to wait for an expiry to be visible (a loaded machine is slow)


@pytest.fixture(params=ALL_BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Opens a fresh, empty namespace of one backend per call (hypothesis runs many examples)."""
    url = backend_url(request, request.param, tmp_path)
    opened: list[Storage] = []

    def open_fresh() -> Storage:
        storage = open_storage(url, namespace=f"p{uuid.uuid4().hex[:12]}", fallback="fail")
        opened.append(storage)
        return storage

    yield open_fresh
    for storage in opened:
        storage.close()


def full_scan_ranking(storage: Storage) -> list[str]:
    """The order list_threads had before the index: every thread ranked from its items."""
    logic = Logic(ttl_seconds=600, max_turns=5)
    ranked = []
    for key in storage.scan("thread:"):
        op = logic._rank(key[len("thread:") :])
        try:
            call = next(op)
            while True:
                call = op.send(getattr(storage, call.method)(*call.args, **call.kwargs))
        except StopIteration as done:
            if done.value is not None:
                ranked.append(done.value)
    ranked.sort(reverse=True)
    return [thread_id for _, thread_id, _ in ranked]


def listed(store: ThreadStore, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = store.list_threads(limit=limit, cursor=cursor)
        ids += [t.thread_id for t in page.threads]
        cursor = page.next_cursor
        if cursor is None:
            return ids


def wait_gone(storage: Storage, key: str) -> None:
    give_up = time.monotonic() + DEADLINE
    while storage.exists(key):
        assert time.monotonic() < give_up, f"{key} did not expire"
        time.sleep(0.002)


_WHEN = st.datetimes(
    min_value=datetime(2001, 1, 1),
    max_value=datetime(2025, 12, 31),  # import refuses timestamps in the future
    timezones=st.just(UTC),
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create")),
        st.tuples(st.just("create")),
        st.tuples(st.just("create")),
        st.tuples(st.just("turn"), st.integers(0, 50)),
        st.tuples(st.just("turn"), st.integers(0, 50)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.tuples(st.just("expire"), st.integers(0, 50)),
        st.tuples(st.just("import"), _WHEN, st.lists(_WHEN, max_size=3), st.booleans()),
    ),
    min_size=5,
    max_size=30,
)


def export_line(thread_id: str, created: datetime, last: datetime, turns: list[datetime]) -> str:
    return Thread(
        thread_id=thread_id,
        created_at=created,
        last_updated_at=last,
        tool_name="imported",
        turns=[Turn(role="user", content=f"t{i}", timestamp=t) for i, t in enumerate(turns)],
    ).model_dump_json()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=st.integers(0, 20), ops=_OPS, limit=st.integers(1, 7))
def test_index_listing_matches_a_full_scan(
    opener: object, initial: int, ops: list[tuple[object, ...]], limit: int
) -> None:
    storage = opener()  # type: ignore[operator]
    store = ThreadStore(storage, ttl_seconds=600, max_turns=5)
    live = [store.create_thread("chat") for _ in range(initial)]  # the model: which exist
    for op in ops:
        kind = op[0]
        if kind == "create":
            live.append(store.create_thread("chat"))
        elif kind == "import":
            _, created, turns, replace = op
            assert isinstance(created, datetime) and isinstance(turns, list)
            target = live[0] if replace and live else str(uuid.uuid4())
            line = export_line(target, created, (turns or [created])[-1], turns)
            assert store.import_threads([line], replace=bool(replace)) == 1
            if target not in live:
                live.append(target)
        elif live:
            index = op[1]
            assert isinstance(index, int)
            thread_id = live[index % len(live)]
            if kind == "turn":
                with contextlib.suppress(ThreadFull):
                    store.add_turn(thread_id, "user", "hello")
            elif kind == "delete":
                assert store.delete_thread(thread_id)
                live.remove(thread_id)
            else:  # expire: the store's own expiry, not a delete
                assert storage.expire(f"thread:{thread_id}", 0.001)
                wait_gone(storage, f"thread:{thread_id}")
                live.remove(thread_id)
    event(f"threads at the end: {min(len(live), 15) // 5 * 5}+")
    reference = full_scan_ranking(storage)
    assert sorted(reference) == sorted(live)
    assert listed(store, limit) == reference
    assert store.count_threads() == len(live)
    exported = list(store.export_threads())
    assert len(exported) == len(live)


def test_imported_threads_are_ranked_by_their_last_turn(opener: object) -> None:
    storage = opener()  # type: ignore[operator]
    store = ThreadStore(storage, ttl_seconds=600, max_turns=5)
    base = datetime(2020, 1, 1, tzinfo=UTC)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    lines = [
        export_line(ids[0], base, base + timedelta(hours=5), [base + timedelta(hours=5)]),
        export_line(ids[1], base + timedelta(hours=1), base + timedelta(hours=1), []),
        export_line(ids[2], base, base + timedelta(hours=3), [base + timedelta(hours=3)]),
    ]
    assert store.import_threads(lines) == 3
    page = store.list_threads()
    assert [t.thread_id for t in page.threads] == [ids[0], ids[2], ids[1]]
    assert [_micros(t.last_updated_at) for t in page.threads] == [
        _micros(base + timedelta(hours=h)) for h in (5, 3, 1)
    ]


def test_cursor_pages_under_concurrent_writers(opener: object) -> None:
    """Writers add turns to some threads and create new ones while a reader pages through.
    Activity only grows, so a thread can only move up past the cursor: no page repeats a thread,
    and every thread that stayed put is seen exactly once."""
    storage = opener()  # type: ignore[operator]
    store = ThreadStore(storage, ttl_seconds=600, max_turns=10_000)
    stable = [store.create_thread("stable") for _ in range(40)]
    hot = [store.create_thread("hot") for _ in range(10)]
    stop = threading.Event()
    wrote = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                store.add_turn(hot[(seed + n) % len(hot)], "user", f"turn {n}")
                if n % 3 == 0:
                    store.create_thread("new")
                n += 1
                wrote.set()
        except (ThreadNotFound, ThreadFull):  # pragma: no cover - not expected here
            pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for w in writers:
        w.start()
    try:
        assert wrote.wait(DEADLINE)
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_threads(limit=3, cursor=cursor)
            seen += [t.thread_id for t in page.threads]
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert errors == []
    assert len(seen) == len(set(seen)), "a thread was listed twice"
    assert set(stable) <= set(seen), "a thread that stayed put was skipped"
    assert store.count_threads() == len(list(storage.scan("thread:")))


def test_pages_past_threads_whose_ids_are_not_uuids(opener: object) -> None:
    """compat stores the ids its callers chose: a cursor may have to point past one of them."""
    from threadstore._logic import LENIENT

    storage = opener()  # type: ignore[operator]
    logic = Logic(ttl_seconds=600, max_turns=5, rules=LENIENT)
    ids = [f"custom id {i} ✓" for i in range(5)]
    for thread_id in ids:
        run(storage, logic.create_thread("compat", thread_id=thread_id))
    store = ThreadStore(storage, ttl_seconds=600, max_turns=5)
    assert listed(store, 2) == list(reversed(ids))
    assert store.count_threads() == 5
    exported = [json.loads(line)["thread_id"] for line in store.export_threads()]
    assert exported == ids  # oldest activity first


def run(storage: Storage, op: Any) -> Any:
    try:
        call = next(op)
        while True:
            call = op.send(getattr(storage, call.method)(*call.args, **call.kwargs))
    except StopIteration as done:
        return done.value


def test_reindex_files_threads_written_before_the_index(opener: object) -> None:
    """A Redis store written by an older release: its threads are read and written as before,
    and listed once reindex() has filed them (notes/index.md, "Existing data")."""
    storage = opener()  # type: ignore[operator]
    store = ThreadStore(storage, ttl_seconds=600, max_turns=5)
    ids = [store.create_thread("chat") for _ in range(3)]
    store.add_turn(ids[0], "user", "newest")
    legacy = []
    for i in range(4):  # what an older release left: the same lists, not filed
        thread_id = str(uuid.uuid4())
        created = datetime(2030, 1, 1 + i, tzinfo=UTC)
        line = export_line(thread_id, created, created, [])
        meta = json.dumps({"v": 1, "thread_id": thread_id, "created_at": created.isoformat(),
                           "tool_name": "old"})  # fmt: skip
        assert storage.list_create(f"thread:{thread_id}", 600, meta)
        assert json.loads(line)["thread_id"] == thread_id
        legacy.append(thread_id)
    store.add_turn(legacy[0], "user", "an old thread still takes turns")
    assert store.count_threads() == 3
    assert store.reindex() == 7
    assert store.count_threads() == 7
    assert listed(store, 3) == full_scan_ranking(storage)
    assert store.reindex() == 7  # harmless to repeat
    assert listed(store, 10) == full_scan_ranking(storage)
