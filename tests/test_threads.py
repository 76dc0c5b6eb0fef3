"""The conversation layer on every backend: threads, turns, chains, history, listing, limits."""

from __future__ import annotations

import inspect
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadstore
from threadstore import (
    AsyncThreadStore,
    CorruptData,
    InvalidInput,
    InvalidThreadId,
    Storage,
    ThreadFull,
    ThreadNotFound,
    ThreadStore,
    open_storage,
)


@pytest.fixture
def storage(any_url: str) -> Iterator[Storage]:
    s = open_storage(any_url, fallback="fail")
    yield s
    s.close()


@pytest.fixture
def store(storage: Storage) -> ThreadStore:
    return ThreadStore(storage, ttl_seconds=3600, max_turns=50)


def test_create_add_get(store: ThreadStore) -> None:
    tid = store.create_thread("chat", {"prompt": "hello"})
    assert uuid.UUID(tid).version == 4
    assert str(uuid.UUID(tid)) == tid
    turn = store.add_turn(
        tid,
        "user",
        "hi",
        files=["a.py"],
        images=["i.png"],
        tool_name="chat",
        model_provider="openai",
        model_name="gpt-x",
        metadata={"k": [1, 2]},
    )
    assert turn.role == "user"
    assert turn.timestamp.tzinfo is not None
    store.add_turn(tid, "assistant", "hello back")
    thread = store.get_thread(tid)
    assert thread is not None
    assert thread.thread_id == tid
    assert thread.tool_name == "chat"
    assert thread.initial_context == {"prompt": "hello"}
    assert [t.content for t in thread.turns] == ["hi", "hello back"]
    assert thread.turns[0].files == ["a.py"]
    assert thread.turns[0].metadata == {"k": [1, 2]}
    assert thread.turns[0].model_metadata == {"k": [1, 2]}
    assert thread.last_updated_at == thread.turns[-1].timestamp
    assert thread.created_at <= thread.last_updated_at


def test_missing_thread(store: ThreadStore) -> None:
    missing = str(uuid.uuid4())
    assert store.get_thread(missing) is None
    with pytest.raises(ThreadNotFound, match=r"1 hour after their last turn"):
        store.add_turn(missing, "user", "x")
    assert store.delete_thread(missing) is False
    assert store.get_thread_chain(missing) == []


def test_not_found_message_states_the_configured_timeout(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=1.5 * 3600, max_turns=5)
    with pytest.raises(ThreadNotFound, match=r"1\.5 hours"):
        store.add_turn(str(uuid.uuid4()), "user", "x")


def test_expired_thread(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=0.2, max_turns=5)
    tid = store.create_thread("chat")
    store.add_turn(tid, "user", "x")
    time.sleep(0.3)
    assert store.get_thread(tid) is None
    with pytest.raises(ThreadNotFound):
        store.add_turn(tid, "user", "late")


def test_add_turn_refreshes_ttl(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=0.6, max_turns=50)
    tid = store.create_thread("chat")
    for _ in range(4):
        time.sleep(0.25)
        store.add_turn(tid, "user", "still here")
    assert store.get_thread(tid) is not None


def test_thread_full(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=60, max_turns=3)
    tid = store.create_thread("chat")
    for i in range(3):
        store.add_turn(tid, "user", f"t{i}")
    with pytest.raises(ThreadFull, match=f"parent_thread_id={tid}"):
        store.add_turn(tid, "user", "one too many")
    thread = store.get_thread(tid)
    assert thread is not None
    assert len(thread.turns) == 3


BAD_IDS = [
    "",
    "not-a-uuid",
    "{" + str(uuid.uuid4()) + "}",
    "urn:uuid:" + str(uuid.uuid4()),
    str(uuid.uuid4()).upper(),
    str(uuid.uuid1()),
    str(uuid.uuid4()).replace("-", ""),
    "../../etc/passwd",
    "*",
    "thread:*",
    "a?b",
    "[abc]",
    "x" * 10_000,
    str(uuid.uuid4()) + "\x00",
    str(uuid.uuid4()) + " ",
    None,
    42,
    uuid.uuid4(),
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda b: repr(b)[:30])
def test_invalid_thread_ids_never_touch_storage(store: ThreadStore, bad: object) -> None:
    keep = store.create_thread("chat")
    before = sorted(store.storage.scan())
    for call in (
        lambda: store.get_thread(bad),  # type: ignore[arg-type]
        lambda: store.add_turn(bad, "user", "x"),  # type: ignore[arg-type]
        lambda: store.delete_thread(bad),  # type: ignore[arg-type]
        lambda: store.get_thread_chain(bad),  # type: ignore[arg-type]
        lambda: store.build_history(bad, max_tokens=100),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidThreadId):
            call()
    if bad is not None:  # None means "no parent"
        with pytest.raises(InvalidThreadId):
            store.create_thread("chat", parent_thread_id=bad)  # type: ignore[arg-type]
    assert sorted(store.storage.scan()) == before
    assert store.get_thread(keep) is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"role": "system"}, "unknown role 'system'"),
        ({"role": "User"}, "unknown role"),
        ({"role": None}, "unknown role"),
        ({"content": None}, "content must be a str"),
        ({"content": b"bytes"}, "content must be a str"),
        ({"content": "bad \ud800 surrogate"}, "unpaired surrogate"),
        ({"content": "x" * 1_000_001}, "maximum is 1000000"),
        ({"files": "a.py"}, "files must be a list"),
        ({"files": [1]}, r"files\[0\] must be a str"),
        ({"metadata": {"s": {1, 2}}}, "JSON values"),
        ({"metadata": {"n": float("nan")}}, "JSON values"),
        ({"metadata": {1: "int key"}}, "keys must be str"),
        ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
        ({"metadata": {"big": "x" * 70_000}}, "maximum is 65536"),
        ({"tool_name": ""}, "tool_name must not be empty"),
        ({"model_name": "m" * 201}, "maximum is 200"),
    ],
)
def test_bad_turns_are_refused_and_nothing_changes(
    store: ThreadStore, kwargs: dict[str, object], match: str
) -> None:
    tid = store.create_thread("chat")
    store.add_turn(tid, "user", "first")
    args: dict[str, object] = {"role": "assistant", "content": "ok"} | kwargs
    with pytest.raises(InvalidInput, match=match):
        store.add_turn(tid, **args)  # type: ignore[arg-type]
    thread = store.get_thread(tid)
    assert thread is not None
    assert [t.content for t in thread.turns] == ["first"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("",), "tool_name must not be empty"),
        ((None,), "tool_name must be a str"),
        (("chat", ["list"]), "initial_context must be a dict"),
        (("chat", {"x": object()}), "JSON values"),
    ],
)
def test_bad_create_thread(store: ThreadStore, args: tuple[object, ...], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        store.create_thread(*args)  # type: ignore[arg-type]
    assert list(store.storage.scan()) == []


def test_chain_oldest_first_and_depth(store: ThreadStore) -> None:
    ids = [store.create_thread("chat")]
    for _ in range(4):
        ids.append(store.create_thread("chat", parent_thread_id=ids[-1]))
    chain = store.get_thread_chain(ids[-1])
    assert [t.thread_id for t in chain] == ids
    assert [t.thread_id for t in store.get_thread_chain(ids[-1], max_depth=2)] == ids[-2:]
    with pytest.raises(InvalidInput, match="max_depth"):
        store.get_thread_chain(ids[-1], max_depth=0)


def test_chain_stops_at_missing_parent(store: ThreadStore) -> None:
    parent = store.create_thread("chat")
    orphan = store.create_thread("chat", parent_thread_id=parent)
    store.delete_thread(parent)
    assert [t.thread_id for t in store.get_thread_chain(orphan)] == [orphan]


def test_chain_is_cycle_safe(store: ThreadStore) -> None:
    # Build a cycle by importing threads that name each other as parents.
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    now = "2026-01-01T00:00:00Z"
    lines = [
        json.dumps({"thread_id": a, "parent_thread_id": b, "created_at": now,
                    "last_updated_at": now, "tool_name": "t", "turns": []}),
        json.dumps({"thread_id": b, "parent_thread_id": a, "created_at": now,
                    "last_updated_at": now, "tool_name": "t", "turns": []}),
    ]  # fmt: skip
    assert store.import_threads(lines) == 2
    chain = store.get_thread_chain(a)
    assert sorted(t.thread_id for t in chain) == sorted([a, b])


def test_history_walks_chain_and_numbers_turns(store: ThreadStore) -> None:
    parent = store.create_thread("chat")
    store.add_turn(parent, "user", "one", files=["a.py"])
    store.add_turn(parent, "assistant", "two", files=["b.py"])
    child = store.create_thread("chat", parent_thread_id=parent)
    store.add_turn(child, "user", "three", files=["a.py"])
    history = store.build_history(child, max_tokens=10_000)
    assert history.turns_included == 3
    assert history.turns_omitted == 0
    assert history.files == ["a.py", "b.py"]
    assert history.thread_ids == [parent, child]
    text = history.text
    assert text.index("Turn 1 (user)") < text.index("Turn 2 (assistant)") < text.index("Turn 3")
    assert history.tokens <= 10_000


def test_history_of_missing_thread(store: ThreadStore) -> None:
    with pytest.raises(ThreadNotFound):
        store.build_history(str(uuid.uuid4()), max_tokens=100)


def test_list_threads_recent_first_and_paged(storage: Storage) -> None:
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=50)
    ids = []
    for i in range(7):
        ids.append(store.create_thread(f"tool{i}"))
        time.sleep(0.02)
    time.sleep(0.02)
    store.add_turn(ids[2], "user", "bump")  # most recent activity now
    page = store.list_threads(limit=3)
    assert [t.thread_id for t in page.threads] == [ids[2], ids[6], ids[5]]
    assert page.threads[0].turn_count == 1
    assert page.next_cursor is not None
    seen = [t.thread_id for t in page.threads]
    while page.next_cursor:
        page = store.list_threads(limit=3, cursor=page.next_cursor)
        seen += [t.thread_id for t in page.threads]
    assert seen == [ids[2], ids[6], ids[5], ids[4], ids[3], ids[1], ids[0]]
    with pytest.raises(InvalidInput, match="cursor"):
        store.list_threads(cursor="garbage!")
    with pytest.raises(InvalidInput, match="limit"):
        store.list_threads(limit=0)


def test_delete_thread(store: ThreadStore) -> None:
    tid = store.create_thread("chat")
    assert store.delete_thread(tid) is True
    assert store.get_thread(tid) is None
    assert store.delete_thread(tid) is False


def test_export_import_round_trip(store: ThreadStore, tmp_path: Path) -> None:
    a = store.create_thread("chat", {"p": 1})
    store.add_turn(a, "user", "hello ünïcødé", files=["x"])
    b = store.create_thread("review", parent_thread_id=a)
    store.add_turn(b, "assistant", "reply", metadata={"tokens": 3})
    lines = list(store.export_threads())
    assert len(lines) == 2
    target = ThreadStore(open_storage("memory://"), ttl_seconds=60, max_turns=50)
    assert target.import_threads(lines) == 2
    assert target.import_threads(lines) == 0  # existing threads are kept
    assert target.import_threads(lines, replace=True) == 2
    for tid in (a, b):
        assert target.get_thread(tid) == store.get_thread(tid)


def test_import_names_the_bad_line(store: ThreadStore) -> None:
    now = "2026-01-01T00:00:00Z"
    good = json.dumps({"thread_id": str(uuid.uuid4()), "created_at": now,
                       "last_updated_at": now, "tool_name": "t", "turns": []})  # fmt: skip
    with pytest.raises(InvalidInput, match="line 3"):
        store.import_threads([good, "", "{not json"])
    with pytest.raises(InvalidThreadId, match="line 1"):
        store.import_threads([good.replace('"thread_id": "', '"thread_id": "X')])


def test_corrupt_turn_is_reported_for_that_thread_only(store: ThreadStore) -> None:
    good = store.create_thread("chat")
    bad = store.create_thread("chat")
    store.add_turn(bad, "user", "fine")
    store.storage.list_append(f"thread:{bad}", "{garbage", max_items=100, ttl_seconds=60)
    with pytest.raises(CorruptData, match=f"thread {bad}: stored turn 2"):
        store.get_thread(bad)
    assert store.get_thread(good) is not None
    store.add_turn(good, "user", "still works")
    assert [t.thread_id for t in store.list_threads().threads] == [good]  # the bad one skipped


def test_many_threads_append_to_one_thread(store: ThreadStore) -> None:
    tid = store.create_thread("chat")
    store_big = ThreadStore(store.storage, ttl_seconds=60, max_turns=2000)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(200):
                store_big.add_turn(tid, "user", f"{w}:{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    thread = store.get_thread(tid)
    assert thread is not None
    contents = [t.content for t in thread.turns]
    assert len(contents) == 1600
    assert len(set(contents)) == 1600
    for w in range(8):
        assert [int(c.split(":")[1]) for c in contents if c.startswith(f"{w}:")] == list(range(200))


def test_bad_settings_are_refused(storage: Storage) -> None:
    with pytest.raises(InvalidInput, match="ttl"):
        ThreadStore(storage, ttl_seconds=-1, max_turns=5)
    with pytest.raises(InvalidInput, match="max_turns"):
        ThreadStore(storage, ttl_seconds=60, max_turns=0)


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERSATION_TIMEOUT_HOURS", "0.5")
    monkeypatch.setenv("MAX_CONVERSATION_TURNS", "7")
    store = ThreadStore()
    assert store.ttl_seconds == 1800
    assert store.max_turns == 7
    assert store.storage is threadstore.get_storage_backend()


def test_async_facade_matches_the_sync_one() -> None:
    public = [n for n, v in vars(ThreadStore).items() if not n.startswith("_") and callable(v)]
    assert set(public) == {
        n for n, v in vars(AsyncThreadStore).items() if not n.startswith("_") and callable(v)
    }
    for name in public:
        sync_sig = inspect.signature(getattr(ThreadStore, name))
        async_sig = inspect.signature(getattr(AsyncThreadStore, name))
        assert list(sync_sig.parameters.values()) == list(async_sig.parameters.values()), name
        fn = getattr(AsyncThreadStore, name)
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name
