"""Strings: get hit, get miss and set (overwrite) of 2 KB values, 1 and 4 threads.

Three groups, one per kind of store, each measured against its own floor:

- kv_memory: floor dict+Lock, cachetools TTLCache+Lock, the original design, threadstore memory
  (100k keys; issue #2's first benchmark).
- kv_sqlite: raw sqlite3 (WAL, NORMAL, autocommit INSERT OR REPLACE / indexed SELECT), diskcache,
  threadstore sqlite.
- kv_redis: raw redis-py, threadstore redis; plus round trips per call.

Every subject gets the same keys, values and operation sequence (fixed seed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import backends, peers
from .harness import (
    FLOOR,
    OURS,
    PEER,
    Config,
    NotAvailable,
    Results,
    chunks,
    interleaved,
    per_op_us,
    text_of,
    threaded_per_op_us,
)

VALUE_SIZE = 2048
TTL = int(backends.TTL)  # whole seconds, as the original module's callers passed it
THREADS = (1, 4)
UNIT = "µs/op"


class Data:
    """Keys, values and the three operation sequences, the same for every subject."""

    def __init__(self, cfg: Config, n_keys: int, n_ops: int) -> None:
        rng = cfg.rng(1)
        self.keys = [f"thread:{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(n_keys)]
        self.values = [text_of(VALUE_SIZE, i) for i in range(n_keys)]
        self.pairs = list(zip(self.keys, self.values, strict=True))
        self.hits = [self.keys[rng.randrange(n_keys)] for _ in range(n_ops)]
        self.misses = [f"thread:{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(n_ops)]
        self.sets = [
            (self.keys[rng.randrange(n_keys)], self.values[rng.randrange(n_keys)])
            for _ in range(n_ops)
        ]


def op_names(threads: Sequence[int] = THREADS) -> list[str]:
    names = []
    for n in threads:
        suffix = "1 thread" if n == 1 else f"{n} threads"
        names += [f"get hit, {suffix}", f"get miss, {suffix}", f"set 2 KB, {suffix}"]
    return names


def fill(store: Any, data: Data, workers: int = 1) -> None:
    """Load every key through the store's own set (bulk paths are used by the callers)."""
    if workers == 1:
        for k, v in data.pairs:
            store.set_with_ttl(k, TTL, v)
        return

    def load(part: Sequence[tuple[str, str]]) -> None:
        for k, v in part:
            store.set_with_ttl(k, TTL, v)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(load, part) for part in chunks(data.pairs, workers)]:
            future.result()
    for k, v in data.pairs[:: max(1, len(data.pairs) // 100)]:
        if store.get(k) != v:
            raise RuntimeError(f"{type(store).__name__}: fill lost {k!r}")


Subject = tuple[str, str, Any]
"""(name, role, a filled store)."""


def check(name: str, store: Any, data: Data) -> None:
    probe = data.pairs[len(data.pairs) // 2]
    if store.get(probe[0]) != probe[1] or store.get(data.misses[0]) is not None:
        raise RuntimeError(f"{name}: wrong answers before timing")


def measure(
    res: Results, subjects: Sequence[Subject], data: Data, threads: Sequence[int] = THREADS
) -> None:
    """Time get hit / get miss / set on filled stores, for each thread count; the subjects take
    turns repetition by repetition (see ``harness.interleaved``)."""
    for name, _, store in subjects:
        check(name, store, data)
    for n in threads:
        suffix = "1 thread" if n == 1 else f"{n} threads"
        for case, ops in (
            ("get hit", data.hits),
            ("get miss", data.misses),
            ("set 2 KB", data.sets),
        ):
            runs = {name: _runner(store, case, ops, n) for name, _, store in subjects}
            samples = interleaved(runs, res.cfg.reps)
            for name, role, _ in subjects:
                res.add(name, role, f"{case}, {suffix}", UNIT, samples[name], ops_per_rep=len(ops))


def _runner(store: Any, case: str, ops: Sequence[Any], n: int) -> Callable[[], float]:
    fn: Callable[[Any], object]
    if case == "set 2 KB":
        set_with_ttl = store.set_with_ttl

        def fn(kv: tuple[str, str]) -> None:
            set_with_ttl(kv[0], TTL, kv[1])

    else:
        fn = store.get
    if n == 1:
        return lambda: per_op_us(fn, ops)
    parts = chunks(ops, n)

    def run() -> float:
        return threaded_per_op_us(
            [lambda p=p: per_op_us(fn, p) for p in parts], sum(len(p) for p in parts)
        )

    return run


def kv_memory(cfg: Config) -> Results:
    res = Results("kv_memory", cfg)
    data = Data(cfg, cfg.pick(100_000, 2_000), cfg.pick(100_000, 5_000))
    makers: list[tuple[str, str, Callable[[], Any]]] = [
        (peers.FloorDictLock.name, FLOOR, peers.FloorDictLock),
        (peers.TTLCacheLock.name, PEER, peers.TTLCacheLock),
        (peers.OriginalKV.name, PEER, peers.OriginalKV),
        ("threadstore memory", OURS, backends.open_memory),
    ]
    subjects: list[Subject] = []
    for name, role, make in makers:
        with res.subject(name, role, op_names(), UNIT):
            store = make()
            fill(store, data)
            subjects.append((name, role, store))
    measure(res, subjects, data)
    for _, _, store in subjects:
        store.close()
    measure_inserts(res, [(n, r, m) for n, r, m in makers if n in {s[0] for s in subjects}], data)
    return res


INSERT = "insert new key 2 KB, 1 thread"
INSERT_GC = "insert new key 2 KB, 1 thread, collector on"


def measure_inserts(
    res: Results, makers: Sequence[tuple[str, str, Callable[[], Any]]], data: Data
) -> None:
    """set_with_ttl of keys not stored yet: every repetition fills a fresh, empty store with all
    the keys (dict growth included, as in real use); subjects take turns. Measured twice: with
    the garbage collector off (the method of every other row), and on, as applications run, where
    an entry the collector keeps tracking costs its share of every full collection."""

    def runner(make: Callable[[], Any]) -> Callable[[], float]:
        def run() -> float:
            store = make()
            set_with_ttl = store.set_with_ttl

            def fn(kv: tuple[str, str]) -> None:
                set_with_ttl(kv[0], TTL, kv[1])

            try:
                return per_op_us(fn, data.pairs)
            finally:
                store.close()

        return run

    runs = {name: runner(make) for name, _, make in makers}
    for op, collector in ((INSERT, False), (INSERT_GC, True)):
        # A repetition takes a fraction of a second: five times the usual number steadies the
        # median on a shared machine.
        samples = interleaved(runs, 5 * res.cfg.reps, collector=collector)
        for name, role, _ in makers:
            res.add(name, role, op, UNIT, samples[name], ops_per_rep=len(data.pairs))


def kv_sqlite(cfg: Config) -> Results:
    res = Results("kv_sqlite", cfg)
    data = Data(cfg, cfg.pick(100_000, 2_000), cfg.pick(5_000, 500))
    subjects: list[Subject] = []
    with backends.temp_dir("kv-sqlite") as tmp:
        with res.subject(peers.RawSQLite.name, FLOOR, op_names(), UNIT):
            raw = peers.RawSQLite(tmp / "raw.db")
            raw.load(data.pairs, TTL)
            subjects.append((peers.RawSQLite.name, FLOOR, raw))
        with res.subject(peers.DiskCacheKV.name, PEER, op_names(), UNIT):
            dc = peers.DiskCacheKV(tmp / "diskcache")
            with dc.bulk():
                fill(dc, data)
            subjects.append((peers.DiskCacheKV.name, PEER, dc))
        with res.subject("threadstore sqlite", OURS, op_names(), UNIT):
            store = backends.open_sqlite(tmp / "threadstore.db")
            fill(store, data)
            subjects.append(("threadstore sqlite", OURS, store))
        measure(res, subjects, data)
        for _, _, s in subjects:
            s.close()
    return res


def kv_redis(cfg: Config) -> Results:
    res = Results("kv_redis", cfg)
    data = Data(cfg, cfg.pick(100_000, 2_000), cfg.pick(2_000, 200))
    trips = ["round trips per get", "round trips per set"]
    names = [(peers.RawRedis.name, FLOOR), ("threadstore redis", OURS)]
    try:
        with backends.redis_server() as url:
            subjects: list[Subject] = []
            for name, role in names:
                with res.subject(name, role, [*op_names(), *trips], UNIT):
                    if role == FLOOR:
                        store: Any = peers.RawRedis(url)
                        store.load(data.pairs, TTL)
                    else:
                        # Its own keys (namespaced), the same values: both live in one server.
                        store = backends.open_redis(url)
                        fill(store, data, workers=4)
                    subjects.append((name, role, store))
            measure(res, subjects, data)
            for name, role, store in subjects:
                count_round_trips(res, name, role, store, data, url)
                store.close()
    except NotAvailable as exc:
        for name, role in names:
            res.na(name, role, [*op_names(), *trips], UNIT, str(exc))
    return res


def count_round_trips(res: Results, name: str, role: str, store: Any, data: Data, url: str) -> None:
    calls = min(200, len(data.hits))
    it = iter(data.hits)
    trips, commands = backends.per_call(url, lambda: store.get(next(it)), calls)
    res.add(name, role, "round trips per get", "round trips", [trips], server_commands=commands)
    it2 = iter(data.sets)

    def one_set() -> None:
        k, v = next(it2)
        store.set_with_ttl(k, TTL, v)

    trips, commands = backends.per_call(url, one_set, calls)
    res.add(name, role, "round trips per set", "round trips", [trips], server_commands=commands)
