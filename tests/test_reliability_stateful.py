"""Property-based stateful tests: every backend against a small reference model of the contract.

Hypothesis drives random sequences of the Storage operations (strings, lists, TTLs, expiry,
capacity) on a real store and on ``Model``, a plain-Python dict of (kind, value, expires_at),
and compares every answer.

- memory: time is the injectable clock (an ``advance`` rule jumps it), so expiry is exact; a
  tiny ``max_keys`` and big values force eviction, which the model accepts only as the
  documented policy: evicted only when the store was full, never a key that is being written,
  and only keys whose one-second expiry bucket is the earliest among the survivors.
- SQLite and Redis keep their own clocks: TTLs are long enough not to run out during a run and
  a ``let_expire`` rule shortens one key's TTL to 20 ms and sleeps past it.

Every machine opens its store under a fresh namespace, so runs on one SQLite file or one Redis
server also check that namespaces never see each other's keys.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from memory_invariants import assert_filed_once
from reliability_workers.figures import record
from threadstore import (
    APPEND_FULL,
    APPEND_MISSING,
    InvalidInput,
    MemoryStorage,
    Storage,
    WrongType,
    open_storage,
)

KEYS = st.sampled_from(["a", "b", "c", "d", "x:1", "x:2", "x:3", "ünï"])
PREFIXES = st.sampled_from(["", "x:", "a", "ü", "zz", "x:1"])
SMALL_TEXT = st.text(max_size=12)
BIG = 12_000
VALUES = st.one_of(
    SMALL_TEXT,
    st.sampled_from(["", "\x00", "🧵" * 3, '{"json": [1, 2]}']),
    st.integers(0, 9).map(lambda i: chr(ord("A") + i) * BIG),  # pushes max_bytes
)


@dataclass
class Entry:
    kind: str  # "str" or "list"
    value: Any  # str or list[str]
    expires_at: float


class Model:
    """The contract in a dozen lines: answers depend only on writes and the clock."""

    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}

    def live(self, key: str, now: float) -> Entry | None:
        entry = self.data.get(key)
        if entry is not None and entry.expires_at <= now:
            del self.data[key]
            return None
        return entry

    def keys(self, now: float) -> set[str]:
        return {k for k in list(self.data) if self.live(k, now) is not None}


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class StoreMachine(RuleBasedStateMachine):
    """The shared rules. Subclasses say how to open a store and how time behaves."""

    controls_clock: ClassVar[bool] = False
    ttls: ClassVar[st.SearchStrategy[float]] = st.floats(300, 3000)
    ttl_slack: ClassVar[float] = 5.0  # how far a real clock may have moved during one run
    opener: ClassVar[Callable[[str], Storage]]
    totals: ClassVar[dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.namespace = "p" + uuid.uuid4().hex[:12]
        self.clock = FakeClock()
        self.store = self.open_store()
        self.model = Model()
        self.totals["runs"] += 1

    def open_store(self) -> Storage:
        return type(self).opener(self.namespace)

    def now(self) -> float:
        return self.clock.now if self.controls_clock else time.monotonic()

    def teardown(self) -> None:
        self.store.close()

    def count(self, what: str = "operations", n: int = 1) -> None:
        self.totals[what] = self.totals.get(what, 0) + n

    # -- hooks around writes (the memory machine checks eviction there) -----------------------
    def before_write(self) -> Any:
        return None

    def after_write(self, token: Any, written: str, big: bool) -> None:
        return None

    def check_ttl(self, real: float | None, entry: Entry | None) -> None:
        if entry is None:
            assert real is None
            return
        assert real is not None
        left = entry.expires_at - self.now()
        if self.controls_clock:
            assert math.isclose(real, left, abs_tol=1e-6), (real, left)
        else:
            assert left - self.ttl_slack <= real <= left + 0.01, (real, left)

    # -- strings -------------------------------------------------------------------------------
    @rule(key=KEYS, value=VALUES, data=st.data())
    def set(self, key: str, value: str, data: st.DataObject) -> None:
        ttl = data.draw(type(self).ttls, label="ttl")
        token = self.before_write()
        self.store.set_with_ttl(key, ttl, value)
        self.model.data[key] = Entry("str", value, self.now() + ttl)
        self.count()
        self.after_write(token, key, len(value) >= BIG)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        entry = self.model.live(key, self.now())
        self.count()
        if entry is not None and entry.kind == "list":
            with pytest.raises(WrongType):
                self.store.get(key)
            return
        assert self.store.get(key) == (None if entry is None else entry.value)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        entry = self.model.live(key, self.now())
        assert self.store.delete(key) is (entry is not None)
        self.model.data.pop(key, None)
        self.count()

    @rule(key=KEYS)
    def exists(self, key: str) -> None:
        assert self.store.exists(key) is (self.model.live(key, self.now()) is not None)
        self.count()

    @rule(key=KEYS)
    def ttl(self, key: str) -> None:
        real = self.store.ttl(key)
        self.check_ttl(real, self.model.live(key, self.now()))
        self.count()

    @rule(key=KEYS, data=st.data())
    def expire(self, key: str, data: st.DataObject) -> None:
        ttl = data.draw(type(self).ttls, label="ttl")
        entry = self.model.live(key, self.now())
        assert self.store.expire(key, ttl) is (entry is not None)
        if entry is not None:
            entry.expires_at = self.now() + ttl
        self.count()

    @rule(prefix=PREFIXES)
    def scan(self, prefix: str) -> None:
        expected = {k for k in self.model.keys(self.now()) if k.startswith(prefix)}
        found = list(self.store.scan(prefix))
        assert len(found) == len(set(found)), "scan yielded a key twice"
        assert set(found) == expected
        self.count()

    # -- lists ---------------------------------------------------------------------------------
    @rule(key=KEYS, first=VALUES, data=st.data())
    def list_create(self, key: str, first: str, data: st.DataObject) -> None:
        ttl = data.draw(type(self).ttls, label="ttl")
        free = self.model.live(key, self.now()) is None
        token = self.before_write()
        assert self.store.list_create(key, ttl, first) is free
        if free:
            self.model.data[key] = Entry("list", [first], self.now() + ttl)
        self.count()
        self.after_write(token, key, free and len(first) >= BIG)

    @rule(key=KEYS, value=VALUES, max_items=st.integers(1, 6), data=st.data())
    def list_append(self, key: str, value: str, max_items: int, data: st.DataObject) -> None:
        ttl = data.draw(type(self).ttls, label="ttl")
        entry = self.model.live(key, self.now())
        self.count()
        if entry is not None and entry.kind == "str":
            with pytest.raises(WrongType):
                self.store.list_append(key, value, max_items=max_items, ttl_seconds=ttl)
            return
        token = self.before_write()
        try:
            n = self.store.list_append(key, value, max_items=max_items, ttl_seconds=ttl)
        except InvalidInput as exc:
            refused: InvalidInput | None = exc
        else:
            refused = None
        if refused is not None:
            # Only the memory store refuses a list that would outgrow max_bytes by itself.
            assert self.controls_clock, refused
            assert "max_bytes" in str(refused), refused
            return
        if entry is None:
            assert n == APPEND_MISSING
        elif len(entry.value) >= max_items:
            assert n == APPEND_FULL
        else:
            entry.value.append(value)
            entry.expires_at = self.now() + ttl
            assert n == len(entry.value)
        self.after_write(token, key, n > 0 and len(value) >= BIG)

    @rule(
        key=KEYS,
        start=st.integers(0, 7),
        stop=st.one_of(st.none(), st.integers(0, 8)),
    )
    def list_range(self, key: str, start: int, stop: int | None) -> None:
        entry = self.model.live(key, self.now())
        self.count()
        if entry is not None and entry.kind == "str":
            with pytest.raises(WrongType):
                self.store.list_range(key, start, stop)
            return
        expected = [] if entry is None else entry.value[start:stop]
        assert self.store.list_range(key, start, stop) == expected

    @rule(key=KEYS)
    def list_length(self, key: str) -> None:
        entry = self.model.live(key, self.now())
        self.count()
        if entry is not None and entry.kind == "str":
            with pytest.raises(WrongType):
                self.store.list_length(key)
            return
        assert self.store.list_length(key) == (0 if entry is None else len(entry.value))


# -- memory: a controlled clock and tight capacity ---------------------------------------------
MAX_KEYS = 4
MAX_BYTES = 64 * 1024


class MemoryMachine(StoreMachine):
    controls_clock = True
    ttls = st.one_of(
        st.floats(0.001, 5.0), st.integers(1, 30), st.sampled_from([0.5, 1.0, 1.5, 2.0])
    )
    totals: ClassVar[dict[str, int]] = {"runs": 0}

    def open_store(self) -> Storage:
        return MemoryStorage(
            max_keys=MAX_KEYS, max_bytes=MAX_BYTES, sweeper=False, clock=self.clock
        )

    @rule(seconds=st.one_of(st.floats(0.0, 3.0), st.sampled_from([0.5, 1.0, 1e-4])))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.count("clock_advances")

    @rule(budget=st.integers(1, 8))
    def sweep(self, budget: int) -> None:
        assert isinstance(self.store, MemoryStorage)
        self.store.sweep(budget)  # removes only expired keys: every answer stays the same
        self.count("sweeps")

    def before_write(self) -> Any:
        now = self.now()
        expiry = {k: e.expires_at for k, e in self.model.data.items() if e.expires_at > now}
        return expiry, self.store.stats()["keys"]

    def after_write(self, token: Any, written: str, big: bool) -> None:
        expiry_before, keys_before = token
        now = self.now()
        real = set(self.store.scan())
        modelled = self.model.keys(now)
        assert real <= modelled, (
            f"keys that were never written or already deleted: {real - modelled}"
        )
        evicted = modelled - real
        if not evicted:
            return
        self.count("evictions", len(evicted))
        assert written not in evicted, "the key being written was evicted"
        full = keys_before + (written not in expiry_before) > MAX_KEYS
        assert full or big, f"evicted {evicted} though the store was not full"
        survivors = [expiry_before[k] for k in real if k in expiry_before and k != written]
        for key in evicted:
            assert all(expiry_before[key] // 1 <= s // 1 for s in survivors), (
                f"evicted {key} (expiring at {expiry_before[key]}) before a key expiring"
                f" sooner: {sorted(survivors)}"
            )
            del self.model.data[key]

    @invariant()
    def within_capacity(self) -> None:
        stats = self.store.stats()
        assert stats["keys"] <= MAX_KEYS
        assert 0 <= stats["bytes"] <= MAX_BYTES

    @invariant()
    def every_key_is_filed_once_no_later_than_its_expiry(self) -> None:
        assert isinstance(self.store, MemoryStorage)
        assert_filed_once(self.store)


class RealClockMachine(StoreMachine):
    """SQLite and Redis: long TTLs, plus an explicit short-TTL-and-sleep rule."""

    @rule(key=KEYS)
    def let_expire(self, key: str) -> None:
        entry = self.model.live(key, self.now())
        assert self.store.expire(key, 0.02) is (entry is not None)
        if entry is None:
            return
        time.sleep(0.05)
        del self.model.data[key]
        assert self.store.exists(key) is False
        assert self.store.ttl(key) is None
        self.count("expiries")


def _run(machine: type[StoreMachine], examples: int, steps: int) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            derandomize=False,
        ),
    )


def test_memory_matches_the_model() -> None:
    MemoryMachine.totals = {"runs": 0}
    _run(MemoryMachine, examples=250, steps=40)
    record("stateful memory", **MemoryMachine.totals)
    assert MemoryMachine.totals["operations"] > 1000


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_shared_backends_match_the_model(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/stateful.db"
    else:
        url = str(request.getfixturevalue("redis_url"))
    opened: list[Storage] = []

    def opener(namespace: str) -> Storage:
        store = open_storage(url, namespace=namespace, fallback="fail")
        opened.append(store)
        return store

    machine = type(
        f"{kind.title()}Machine",
        (RealClockMachine,),
        {"opener": staticmethod(opener), "totals": {"runs": 0}},
    )
    _run(machine, examples=40, steps=30)
    record(f"stateful {kind}", **machine.totals)
    assert machine.totals["operations"] > 300
    # every run used its own namespace on the same file / server: nothing left in another's
    check = opener("p" + uuid.uuid4().hex[:12])
    assert list(check.scan()) == []
    check.close()


def test_memory_evicts_expired_keys_before_live_ones() -> None:
    """Two slots: an expired key and a live one in the same second; a third key needs a slot."""
    lost = []
    for i in range(24):  # set.pop() order depends on string hashes: try several key pairs
        clock = FakeClock()
        store = MemoryStorage(max_keys=2, sweeper=False, clock=clock)
        store.set_with_ttl(f"expired{i}", 0.2, "old")  # expires at 10000.2
        store.set_with_ttl(f"live{i}", 0.7, "still wanted")  # expires at 10000.7
        clock.now += 0.5
        store.set_with_ttl(f"new{i}", 60, "v")
        if store.get(f"live{i}") is None:
            lost.append(i)
        store.close()
    assert lost == [], f"a live key was evicted instead of an expired one in {len(lost)}/24 runs"


def test_memory_ttl_boundaries_are_exact() -> None:
    """A key is live until just before expires_at and gone at it (Redis never answers PTTL 0)."""
    clock = FakeClock()
    store = MemoryStorage(sweeper=False, clock=clock)
    checked = 0
    for ttl in (0.002, 0.5, 1.0, 1.5, 2.999, 3600):
        for kind in ("str", "list"):
            key = f"{kind}{ttl}"
            start = clock.now
            if kind == "str":
                store.set_with_ttl(key, ttl, "v")
            else:
                store.list_create(key, ttl, "m")
            clock.now = start + ttl - 0.001
            assert store.exists(key), key
            clock.now = start + ttl
            assert not store.exists(key), key
            assert store.ttl(key) is None
            checked += 1
    record("ttl boundaries memory", keys=checked)
    store.close()
