"""The memory backend: the shared contract plus what only an in-process store can show."""

from __future__ import annotations

import contextlib
import gc
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from contract import StorageContract
from memory_invariants import assert_filed_once
from threadstore import InvalidInput, MemoryStorage, Storage, WrongType
from threadstore._storage import MAX_KEY_LENGTH


class FakeClock:
    """A controllable monotonic clock (the store takes any callable)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryContract(StorageContract):
    @pytest.fixture
    def store(self) -> Iterator[Storage]:
        s = MemoryStorage()
        yield s
        s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_expiry_follows_the_clock_not_the_wall(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False)
    s.set_with_ttl("k", 1.5, "v")
    clock.now += 1.499
    assert s.get("k") == "v"
    clock.now += 0.002
    assert s.get("k") is None
    assert s.stats()["expired"] == 1


def test_sweep_removes_expired_keys_in_bounded_batches(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False)
    for i in range(1000):
        s.set_with_ttl(f"short:{i}", 1, "v")
    for i in range(10):
        s.set_with_ttl(f"long:{i}", 100, "v")
    clock.now += 3
    assert s.sweep(64) is True  # 64 dropped, more waiting
    assert s.stats()["keys"] == 1010 - 64
    while s.sweep(64):
        pass
    stats = s.stats()
    assert stats["keys"] == 10 and stats["expired"] == 1000
    assert stats["bytes"] == sum(len(f"long:{i}") for i in range(10)) + 10 * (2 * 49 + 1)


def test_writes_sweep_a_little_on_the_side(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False)
    for i in range(100):
        s.set_with_ttl(f"old:{i}", 1, "v")
    clock.now += 5
    for i in range(30):
        s.set_with_ttl(f"new:{i}", 100, "v")
    assert s.stats()["keys"] < 130


def test_background_sweeper_runs_and_stops_on_close() -> None:
    s = MemoryStorage(sweep_interval=0.02)
    for i in range(200):
        s.set_with_ttl(f"k{i}", 0.01, "v")
    deadline = time.monotonic() + 5
    while s.stats()["keys"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.stats()["keys"] == 0
    assert s.stats()["sweeper"] is True
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 1
    assert s._sweeper is not None and not s._sweeper.is_alive()


def test_no_thread_is_started_at_import() -> None:
    code = "import threading, threadstore; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_max_keys_evicts_soonest_to_expire(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False, max_keys=100)
    for i in range(100):
        s.set_with_ttl(f"k{i}", 10 + i, "v")  # k0 expires first
    s.set_with_ttl("new", 1000, "v")
    assert s.get("k0") is None
    assert s.get("k1") == "v"
    assert s.get("new") == "v"
    stats = s.stats()
    assert stats["keys"] == 100 and stats["evicted"] == 1


def test_expired_keys_go_before_live_ones(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False, max_keys=10)
    for i in range(5):
        s.set_with_ttl(f"dead{i}", 1, "v")
    for i in range(5):
        s.set_with_ttl(f"live{i}", 100, "v")
    clock.now += 2
    for i in range(5):
        s.set_with_ttl(f"new{i}", 100, "v")
    assert all(s.get(f"live{i}") == "v" for i in range(5))
    assert s.stats()["evicted"] == 0


def test_a_retired_hot_bucket_takes_no_new_keys(clock: FakeClock) -> None:
    """New keys of the current second are filed inline in the "hot" bucket. An eviction that
    retires that bucket (emptied, at the head of the heap) must stop that, or later keys would
    land in a bucket no sweep or eviction ever visits."""
    s = MemoryStorage(clock=clock, sweeper=False, max_keys=2)
    s.set_with_ttl("a", 1, "v")  # the slow path heats the bucket of second 1001
    s.delete("a")  # ... and leaves it empty
    assert s.list_create("l1", 5, "x") and s.list_create("l2", 6, "x")
    assert s.list_create("l3", 7, "x")  # full: the eviction retires the empty bucket first
    assert s.list_length("l1") == 0  # evicted: it expires soonest
    assert s.delete("l2")
    s.set_with_ttl("b", 1, "v")  # due in second 1001 again
    assert_filed_once(s)
    clock.now += 2
    assert s.sweep(64) is False
    assert s.stats()["keys"] == 1 and s.stats()["expired"] == 1  # b was found and dropped


def test_every_write_path_keeps_keys_filed(clock: FakeClock) -> None:
    """Fast and slow writes, deletes, TTLs moved earlier, list growth, sweeps and evictions, in
    a fixed random order: every key stays filed once, and nothing filed is ever lost."""
    rng = random.Random(7)
    s = MemoryStorage(clock=clock, sweeper=False, max_keys=60, max_bytes=96 * 1024)
    keys = [f"k{i}" for i in range(80)]
    for step in range(4000):
        key, op = rng.choice(keys), rng.random()
        if op < 0.45:
            s.set_with_ttl(key, rng.choice([1, 2, 3, 30, 0.4]), "v" * rng.choice([1, 900, 3000]))
        elif op < 0.55:
            s.delete(key)
        elif op < 0.65:
            s.expire(key, rng.choice([0.2, 1, 50]))
        elif op < 0.75:
            with contextlib.suppress(WrongType):  # a string stored under that key
                s.list_append(key, "t", max_items=50, ttl_seconds=rng.choice([2, 40]))
        elif op < 0.82:
            s.list_create(key, rng.choice([2, 40]), "first")
        elif op < 0.9:
            s.sweep(rng.choice([1, 4, 64]))
        else:
            clock.now += rng.choice([0.1, 0.5, 1.0, 2.5])
        if step % 10 == 0:
            assert_filed_once(s)
    assert_filed_once(s)
    clock.now += 100
    while s.sweep(64):
        pass
    assert s.stats()["keys"] == 0 and s.stats()["bytes"] == 0


def test_string_entries_leave_the_garbage_collectors_watch(clock: FakeClock) -> None:
    """An entry of a string holds no container (its bucket by number, not the list), so the
    collector untracks it at its first young collection: a store of a million strings adds no
    work, and no pause, to the full collections of the application around it. Entries written
    by every path qualify: fast and slow inserts, overwrites, TTLs moved earlier, re-filing."""
    s = MemoryStorage(clock=clock, sweeper=False)
    for i in range(2000):
        s.set_with_ttl(f"k{i}", 5, "v")  # the first heats a bucket; the rest are fast inserts
    s.set_with_ttl("k1", 60, "w")  # fast overwrite
    s.set_with_ttl("k2", 1, "w")  # an earlier TTL: filed again
    s.expire("k3", 90)
    s.list_create("list", 60, "first")  # a list is a container: its entry stays tracked
    clock.now += 6
    s.set_with_ttl("late", 30, "v")  # slow path, with a sweep on the side
    while s.sweep(64):  # expired keys dropped, refreshed ones filed again
        pass
    assert_filed_once(s)
    gc.collect()
    tracked = [k for k, e in s._data.items() if gc.is_tracked(e) and type(e[0]) is str]
    assert tracked == []
    assert gc.is_tracked(s._data["list"])


class SlowPathCounter(MemoryStorage):
    """Counts the writes that left the inline path."""

    slow = 0

    def _set_slowly(self, *args: Any) -> None:
        self.slow += 1
        super()._set_slowly(*args)


def test_the_inline_path_takes_keys_of_every_allowed_length_and_refuses_the_rest(
    clock: FakeClock,
) -> None:
    """New keys after the first go inline (filed in the hot bucket without the slow path's
    checks): the key's length is checked there by a table lookup, which must agree with
    check_key at both ends, for ASCII and other values alike."""
    s = SlowPathCounter(clock=clock, sweeper=False)
    s.set_with_ttl("warm", 60, "v")  # heats a bucket: the keys below take the inline path
    assert s.slow == 1
    good = {"k": "v", "k" * MAX_KEY_LENGTH: "v", "kv": "välue", "kw": "\U0001f600"}
    for key, value in good.items():
        s.set_with_ttl(key, 60, value)
    assert s.slow == 1, "a good key left the inline path"
    for key, words in (("", "empty"), ("k" * (MAX_KEY_LENGTH + 1), "1025 characters")):
        for value in ("v", "välue"):
            with pytest.raises(InvalidInput, match=words):
                s.set_with_ttl(key, 60, value)
    assert {k: s.get(k) for k in good} == good
    assert sorted(s.scan()) == sorted(["warm", *good])
    assert_filed_once(s)  # sizes included: the inline sums equal _entry_size


def test_new_keys_never_pass_max_keys_while_other_writes_file_keys_elsewhere(
    clock: FakeClock,
) -> None:
    """The inline path counts new keys by the hot bucket's length, not len(store): lists and
    other TTLs filed in other buckets must lower its cap, or a full store would grow past
    max_keys (the invariant check says so after every step too)."""
    s = MemoryStorage(max_keys=5, clock=clock, sweeper=False)
    for i in range(60):
        if i % 3 == 0:
            s.list_create(f"list{i}", 30 + i % 7, "m")  # another bucket
        if i % 5 == 0:
            s.set_with_ttl(f"short{i}", 10, "v")  # another bucket
        s.set_with_ttl(f"k{i}", 60, "v")  # the hot bucket, inline while there is room
        assert len(s._data) <= 5
        assert_filed_once(s)
        clock.now += 0.05
    assert s.stats()["evicted"] > 0


class InterruptingClock(FakeClock):
    """A clock that raises KeyboardInterrupt once when armed, as a signal landing at that call."""

    armed = False

    def __call__(self) -> float:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return self.now


def test_an_interrupted_update_is_mended_by_the_next_call() -> None:
    """An interrupt that stops an update half-way (here: the index lost an entry and the byte
    count moved, as a cut-short refile leaves them) marks the store torn. The fast paths stop,
    and the next call that takes the lock derives buckets, sizes and the index again."""
    clock = InterruptingClock()
    s = MemoryStorage(clock=clock, sweeper=False)
    for i in range(5):
        s.list_create(f"l{i}", 60, "first", scopes=("all",), score=i)
    s.set_with_ttl("k", 60, "v")
    s._ix["all"].remove((3, "l3"))  # half of a refile
    s._bytes += 123
    clock.armed = True
    with pytest.raises(KeyboardInterrupt):
        s.list_append("l0", "t", max_items=10, ttl_seconds=60, score=9)
    assert s._torn and s._fast_until == float("-inf")  # no fast path on torn structures
    assert s.get("k") == "v"  # whole entries: still readable
    page = s.index_page("all", 10)  # takes the lock: mends first
    assert sorted(key for _, key in page) == [f"l{i}" for i in range(5)]
    assert s.stats()["mended"] == 1
    assert_filed_once(s)
    s.set_with_ttl("k2", 60, "v")  # and the fast paths are back
    assert s._fast_until > clock.now


def test_max_bytes_is_respected(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False, max_bytes=256 * 1024)
    for i in range(200):
        s.set_with_ttl(f"k{i}", 100 + i, "x" * 4096)
        assert s.stats()["bytes"] <= 256 * 1024
    assert s.stats()["evicted"] > 0
    assert s.get("k199") == "x" * 4096


def test_list_growth_counts_against_max_bytes(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False, max_bytes=128 * 1024)
    s.set_with_ttl("victim", 5, "y" * 30_000)
    s.list_create("l", 100, "meta")
    for _ in range(30):
        s.list_append("l", "x" * 4000, max_items=1000, ttl_seconds=100)
        assert s.stats()["bytes"] <= 128 * 1024
    assert s.get("victim") is None
    assert s.list_length("l") == 31


def test_value_larger_than_the_store_is_refused() -> None:
    s = MemoryStorage(sweeper=False, max_bytes=64 * 1024)
    s.set_with_ttl("k", 60, "old")
    with pytest.raises(InvalidInput, match="larger than the store allows"):
        s.set_with_ttl("k", 60, "x" * 70_000)
    assert s.get("k") == "old"


def test_non_ascii_values_are_counted_in_bytes() -> None:
    s = MemoryStorage(sweeper=False)
    s.set_with_ttl("a", 60, "x" * 1000)
    ascii_bytes = s.stats()["bytes"]
    s.set_with_ttl("a", 60, "🧵" * 1000)
    assert s.stats()["bytes"] > ascii_bytes + 2900


def test_bytes_account_returns_to_zero(clock: FakeClock) -> None:
    s = MemoryStorage(clock=clock, sweeper=False)
    s.set_with_ttl("a", 10, "x" * 100)
    s.set_with_ttl("a", 20, "y" * 300)
    s.list_create("l", 10, "m")
    s.list_append("l", "t", max_items=5, ttl_seconds=30)
    s.set_with_ttl("l", 10, "replaced")
    s.delete("a")
    s.expire("l", 1)
    clock.now += 2
    assert s.get("l") is None
    assert s.stats()["bytes"] == 0 and s.stats()["keys"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_keys": 0}, "max_keys"),
        ({"max_bytes": 10}, "max_bytes"),
        ({"max_keys": 1.5}, "max_keys"),
    ],
)
def test_bad_limits(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        MemoryStorage(**kwargs)  # type: ignore[arg-type]
