"""The library as a principal (``store.for_owner``) on every backend: another principal's thread
is exactly a missing one, lists/counts/chains hold only the caller's threads, admins see all,
and export/import keep the owner."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from threadstore import (
    AsyncThreadStore,
    InvalidInput,
    Storage,
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


def same_as_missing(store: ThreadStore, foreign: str, call: str) -> None:
    """The error for ``foreign`` is the error for a fresh id, with the id swapped."""
    missing = str(uuid.uuid4())
    calls: dict[str, Callable[[str], object]] = {
        "require": store.require_thread,
        "append": lambda tid: store.add_turn(tid, "user", "hello"),
        "history": lambda tid: store.build_history(tid, max_tokens=1000),
        "parent": lambda tid: store.create_thread("t", parent_thread_id=tid),
    }
    texts = []
    for thread_id in (foreign, missing):
        with pytest.raises(ThreadNotFound) as caught:
            calls[call](thread_id)
        texts.append(str(caught.value).replace(thread_id, "<id>"))
        assert type(caught.value) is ThreadNotFound
    assert texts[0] == texts[1]


def test_a_principal_owns_what_it_creates(store: ThreadStore) -> None:
    alice = store.for_owner("alice")
    tid = alice.create_thread("chat", {"k": 1})
    alice.add_turn(tid, "user", "hi")
    thread = alice.require_thread(tid)
    assert thread.owner == "alice" and len(thread.turns) == 1
    assert store.require_thread(tid).owner == "alice", "the unscoped store sees every thread"
    assert alice.owner == "alice" and not alice.sees_all
    assert store.owner is None and store.sees_all
    assert "owner='alice'" in repr(alice)


@pytest.mark.parametrize("call", ["require", "append", "history", "parent"])
def test_another_principals_thread_is_a_missing_one(store: ThreadStore, call: str) -> None:
    tid = store.for_owner("alice").create_thread("chat")
    same_as_missing(store.for_owner("bob"), tid, call)
    assert store.for_owner("bob").get_thread(tid) is None


def test_a_refused_append_or_delete_changes_nothing(
    store: ThreadStore, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = store.for_owner("alice"), store.for_owner("bob")
    tid = alice.create_thread("chat")
    alice.add_turn(tid, "user", "mine")
    with caplog.at_level(logging.INFO, logger="threadstore.audit"):
        with pytest.raises(ThreadNotFound):
            bob.add_turn(tid, "user", "not yours")
        assert bob.delete_thread(tid) is False
    assert [t.content for t in alice.require_thread(tid).turns] == ["mine"]
    refusals = [r.getMessage() for r in caplog.records if r.name == "threadstore.audit"]
    assert len(refusals) == 2
    assert all("'bob'" in line and tid in line and "refused" in line for line in refusals)
    assert alice.delete_thread(tid) is True
    assert alice.get_thread(tid) is None


def test_threads_without_owner_are_for_admins_only(store: ThreadStore) -> None:
    tid = store.create_thread("legacy")  # the unscoped store creates ownerless threads
    assert store.require_thread(tid).owner is None
    assert store.for_owner("alice").get_thread(tid) is None
    assert store.for_owner("root", admin=True).require_thread(tid).owner is None


def test_listing_and_counting_hold_only_the_callers_threads(store: ThreadStore) -> None:
    alice, bob = store.for_owner("alice"), store.for_owner("bob")
    mine = {alice.create_thread("a") for _ in range(5)}
    theirs = {bob.create_thread("b") for _ in range(3)}
    store.create_thread("nobody")
    seen: set[str] = set()
    cursor = None
    while True:
        page = alice.list_threads(limit=2, cursor=cursor)
        assert all(row.owner == "alice" for row in page.threads)
        seen |= {row.thread_id for row in page.threads}
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == mine
    assert {row.thread_id for row in bob.list_threads().threads} == theirs
    assert alice.count_threads() == 5 and bob.count_threads() == 3
    assert store.count_threads() == 9
    admin = store.for_owner("root", admin=True)
    owners = [row.owner for row in admin.list_threads(limit=100).threads]
    assert sorted(owners, key=str) == sorted(["alice"] * 5 + ["bob"] * 3 + [None], key=str)


def test_chains_stop_at_a_parent_the_caller_may_not_see(store: ThreadStore) -> None:
    alice, bob = store.for_owner("alice"), store.for_owner("bob")
    admin = store.for_owner("root", admin=True)
    parent = alice.create_thread("a")
    alice.add_turn(parent, "user", "alice's secret")
    child = admin.create_thread("adopted", parent_thread_id=parent)
    # bob receives a thread whose parent is alice's (as an admin might arrange)
    line = admin.require_thread(child).model_copy(update={"owner": "bob"}).model_dump_json()
    store.import_threads([line], replace=True)
    bob.add_turn(child, "user", "bob's turn")
    chain = bob.get_thread_chain(child)
    assert [t.thread_id for t in chain] == [child]
    history = bob.build_history(child, max_tokens=10_000)
    assert "alice's secret" not in history.text and history.thread_ids == [child]
    assert [t.thread_id for t in admin.get_thread_chain(child)] == [parent, child]


def test_an_admin_manages_every_thread(store: ThreadStore) -> None:
    alice = store.for_owner("alice")
    admin = store.for_owner("root", admin=True)
    tid = alice.create_thread("a")
    admin.add_turn(tid, "assistant", "from the admin")
    child = admin.create_thread("c", parent_thread_id=tid)
    assert admin.require_thread(child).owner == "root", "an admin's own threads are its own"
    assert alice.get_thread(child) is None
    assert admin.delete_thread(tid) is True
    assert alice.get_thread(tid) is None


def test_export_and_import_keep_the_owner(storage: Storage, any_url: str) -> None:
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=50)
    alice = store.for_owner("alice")
    tid = alice.create_thread("a")
    alice.add_turn(tid, "user", "x")
    store.create_thread("nobody")
    lines = list(store.export_threads())
    assert len(lines) == 2
    assert list(alice.export_threads()) == [line for line in lines if tid in line]
    other = ThreadStore(open_storage("memory://"), ttl_seconds=3600, max_turns=50)
    assert other.import_threads(lines) == 2
    assert other.for_owner("alice").require_thread(tid).turns[0].content == "x"
    assert other.for_owner("bob").get_thread(tid) is None
    other.close()


def test_a_scoped_import_owns_what_it_imports_and_never_replaces_others(
    store: ThreadStore,
) -> None:
    alice, bob = store.for_owner("alice"), store.for_owner("bob")
    tid = alice.create_thread("a")
    line = alice.require_thread(tid).model_dump_json()
    assert bob.import_threads([line], replace=True) == 0, "alice's thread is kept"
    assert alice.require_thread(tid).owner == "alice"
    fresh = line.replace(tid, str(uuid.uuid4()))
    assert bob.import_threads([fresh]) == 1
    assert [t.owner for t in bob.list_threads().threads] == ["bob"]


def test_owner_names_are_checked(store: ThreadStore) -> None:
    for bad in ("", "line\nbreak", "x" * 500):
        with pytest.raises(InvalidInput):
            store.for_owner(bad)
    bad_line = (
        store.for_owner("a")
        .require_thread(store.for_owner("a").create_thread("t"))
        .model_copy(update={"owner": "bad\nname", "thread_id": str(uuid.uuid4())})
        .model_dump_json()
    )
    with pytest.raises(InvalidInput, match="line 1"):
        store.import_threads([bad_line])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_facade_scopes_the_same_way(storage: Storage, anyio_backend: str) -> None:
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=50)
    alice, bob = store.for_owner("alice"), store.for_owner("bob")
    tid = await alice.create_thread("a")
    await alice.add_turn(tid, "user", "hi")
    assert await bob.get_thread(tid) is None
    with pytest.raises(ThreadNotFound):
        await bob.add_turn(tid, "user", "no")
    assert await bob.delete_thread(tid) is False
    assert await bob.count_threads() == 0 and await alice.count_threads() == 1
    assert [t.owner for t in (await alice.list_threads()).threads] == ["alice"]


class Counting:
    """A real storage, with every call counted by method name."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._storage, name)
        if callable(attr):

            def counted(*args: object, **kwargs: object) -> object:
                self.calls.append(name)
                return attr(*args, **kwargs)

            return counted
        return attr


def test_listing_and_counting_by_owner_cost_one_page(storage: Storage) -> None:
    base = ThreadStore(storage, ttl_seconds=3600, max_turns=50)
    for _ in range(40):
        base.for_owner("bob").create_thread("b")
    mine = [base.for_owner("alice").create_thread("a") for _ in range(6)]
    counting = Counting(storage)
    alice = ThreadStore(counting, ttl_seconds=3600, max_turns=50).for_owner("alice")  # type: ignore[arg-type]
    page = alice.list_threads(limit=3)
    assert [row.thread_id for row in page.threads] == mine[::-1][:3]
    assert counting.calls.count("index_page") == 1 and "scan" not in counting.calls
    assert len(counting.calls) <= 1 + 3 * 4, counting.calls
    counting.calls.clear()
    assert alice.count_threads() == 6
    assert counting.calls == ["index_count"]


def test_reindex_files_threads_under_their_owner(storage: Storage) -> None:
    """Threads written without index entries (an older release on Redis) are listed per owner
    once reindex() has run."""
    from threadstore._ids import thread_key
    from threadstore._models import ThreadMeta, utcnow

    store = ThreadStore(storage, ttl_seconds=3600, max_turns=50)
    tid = str(uuid.uuid4())
    meta = ThreadMeta(thread_id=tid, created_at=utcnow(), tool_name="old", owner="alice")
    storage.list_create(thread_key(tid), 3600, meta.model_dump_json(exclude_none=True))
    alice = store.for_owner("alice")
    assert alice.require_thread(tid).owner == "alice"
    assert alice.count_threads() == 0, "not filed yet"
    assert store.reindex() == 1
    assert [row.thread_id for row in alice.list_threads().threads] == [tid]
    assert alice.count_threads() == 1 and store.for_owner("bob").count_threads() == 0


def test_a_scoped_store_never_takes_a_given_thread_id(store: ThreadStore) -> None:
    """compat may create a thread under an id it chose (replacing what is there); a scoped store
    never does, so it can never overwrite another principal's thread."""
    victim = store.for_owner("alice").create_thread("a")
    bob = store.for_owner("bob")
    with pytest.raises(InvalidInput, match="draws its own thread ids"):
        bob._run(bob._logic.create_thread("b", thread_id=victim))
    assert store.require_thread(victim).owner == "alice"
