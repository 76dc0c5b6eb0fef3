"""Expiry pause: how long do readers stall while half of N keys (100k, 1M) expire?

Per repetition, a store is filled with N keys (100-byte values), half of them with a TTL that has
passed once the injected clock is moved forward. Then, while a reader thread does gets on random
keys as fast as it can and records its slowest single get, the store gets rid of the expired half
its own way:

- original design: its cleanup pass (what its cleanup thread ran every 5 minutes), which walks
  every key under the store's one lock; we time the pass under the lock.
- cachetools TTLCache+Lock: the next write expires everything due at once, under the lock.
- threadstore memory: its own background sweeper thread (started with a 50 ms interval instead
  of 1 s so the benchmark does not wait), which drops at most 64 keys per lock hold; we time
  the part of every sweep step that runs under the lock.

The garbage collector is off during the measurement (a full collection of a million objects is
a pause of its own, the same for every store, and not what this measures). "longest reader op"
also includes the interpreter's thread switching (a thread waiting for the GIL can wait one
switch interval, 5 ms) and whatever else the machine is doing: the "as long again without expiry"
row is the same reader, for the same length of time, right after, with nothing expiring.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from . import backends, peers
from .harness import OURS, PEER, Config, Results, gc_paused
from .peers import OriginalKV

VALUE = "v" * 100
LONG_TTL = 3600.0
SHORT_TTL = 10.0
ADVANCE = 60.0  # seconds the clock jumps: short-TTL keys are then 50 s past due
OPS = [
    "longest reader op",
    "longest lock hold",
    "time until expired keys are gone",
    "longest reader op, as long again without expiry",
]


class Clock:
    """A clock the benchmark moves by hand (injected into every store)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class TimedMemoryStorage(backends.MemoryStorage):
    """The memory backend, recording how long each sweep holds the lock.

    ``sweep()`` is the public step the sweeper thread calls (take the lock, drop up to 64 due
    keys, release). Its duration also counts waiting for the lock and for the GIL, so when the
    backend has the private ``_sweep`` (the body run under the lock) that is what is timed; the
    whole ``sweep()`` call is recorded too.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.sweep_ns: list[int] = []  # whole sweep() calls
        self.hold_ns: list[int] = []  # the part under the lock
        super().__init__(**kwargs)

    def sweep(self, budget: int = 64) -> bool:
        t0 = time.perf_counter_ns()
        more = super().sweep(budget)
        self.sweep_ns.append(time.perf_counter_ns() - t0)
        return more

    if hasattr(backends.MemoryStorage, "_sweep"):

        def _sweep(self, now: float, budget: int) -> bool:
            t0 = time.perf_counter_ns()
            more: bool = super()._sweep(now, budget)  # type: ignore[misc]
            self.hold_ns.append(time.perf_counter_ns() - t0)
            return more


class Reader(threading.Thread):
    """Gets random keys until stopped; keeps the slowest single get (ns)."""

    def __init__(self, get: Callable[[str], object], keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.get, self.keys = get, keys
        self.stop = threading.Event()
        self.worst = 0
        self.reads = 0

    def reset(self) -> None:
        self.worst = 0

    def run(self) -> None:
        get, keys, stop, clock = self.get, self.keys, self.stop, time.perf_counter_ns
        n, i = len(keys), 0
        while not stop.is_set():
            key = keys[i % n]
            i += 7919  # a prime stride: every key, in a scattered order
            t0 = clock()
            get(key)
            dt = clock() - t0
            if dt > self.worst:
                self.worst = dt
        self.reads = i // 7919


def _one_run(kind: str, keys: list[str]) -> dict[str, float]:
    """Fill, age, expire while reading; figures in milliseconds."""
    clock = Clock()
    n = len(keys)
    store: Any
    if kind == "original":
        store = OriginalKV(clock=clock)
    elif kind == "ttlcache":
        store = peers.TTLCacheLock(maxsize=2 * n, ttl=SHORT_TTL * 1.5, timer=clock)
    else:
        store = TimedMemoryStorage(
            namespace=backends.NAMESPACE, clock=clock, sweep_interval=0.05, max_keys=2 * n
        )
    half = n // 2
    if kind == "ttlcache":
        # One TTL per cache: the first half is written earlier, so it is due first.
        for k in keys[:half]:
            store.set_with_ttl(k, SHORT_TTL, VALUE)
        clock.now += SHORT_TTL * 2
        for k in keys[half:]:
            store.set_with_ttl(k, SHORT_TTL, VALUE)
    else:
        for i, k in enumerate(keys):
            store.set_with_ttl(k, SHORT_TTL if i < half else LONG_TTL, VALUE)
    live = n - half  # keys left once the expired ones are gone

    reader = Reader(store.get, keys)
    with gc_paused():
        reader.start()
        time.sleep(0.05)
        reader.reset()
        hold_ns = sweep_call_ns = 0
        t0 = time.perf_counter_ns()
        clock.now += ADVANCE
        if kind == "original":
            cleaner = threading.Thread(target=store.cleanup_expired)
            cleaner.start()
            cleaner.join()
            hold_ns = max(store.lock_holds_ns)
            gone_ns = time.perf_counter_ns() - t0
        elif kind == "ttlcache":

            def first_write() -> None:
                nonlocal hold_ns
                h0 = time.perf_counter_ns()
                store.set_with_ttl("trigger", SHORT_TTL, VALUE)
                hold_ns = time.perf_counter_ns() - h0

            writer = threading.Thread(target=first_write)
            writer.start()
            writer.join()
            gone_ns = time.perf_counter_ns() - t0
            if len(store) > live + 1:
                raise RuntimeError("TTLCache did not expire its due keys")
        else:
            store.sweep_ns.clear()
            store.hold_ns.clear()
            deadline = time.monotonic() + 120
            while store.stats()["keys"] > live:
                if time.monotonic() > deadline:
                    raise RuntimeError("the memory sweeper did not expire the due keys")
                time.sleep(0.002)
            gone_ns = time.perf_counter_ns() - t0
            hold_ns = max(store.hold_ns or store.sweep_ns, default=0)
            sweep_call_ns = max(store.sweep_ns, default=0)
        time.sleep(0.05)
        during = reader.worst
        # The same reader for as long again with nothing expiring: the machine's own noise
        # (thread switching, other processes) that any "longest op" figure includes.
        reader.reset()
        time.sleep(max(0.1, gone_ns / 1e9 + 0.05))
        baseline = reader.worst
        reader.stop.set()
        reader.join()
    store.close()
    return {
        "reader": during / 1e6,
        "hold": hold_ns / 1e6,
        "gone": gone_ns / 1e6,
        "baseline": baseline / 1e6,
        "sweep_call": sweep_call_ns / 1e6,
    }


def expiry(cfg: Config, name: str, n_keys: int) -> Results:
    res = Results(name, cfg)
    keys = [f"k:{i:08d}" for i in range(n_keys)]
    subjects = [
        ("original", peers.OriginalKV.name, PEER),
        ("ttlcache", peers.TTLCacheLock.name, PEER),
        ("memory", "threadstore memory", OURS),
    ]
    for kind, subject, role in subjects:
        with res.subject(subject, role, OPS, "ms"):
            runs = [_one_run(kind, keys) for _ in range(cfg.reps)]
            for op, field in zip(OPS, ("reader", "hold", "gone", "baseline"), strict=True):
                extra: dict[str, Any] = {"keys": n_keys}
                if kind == "memory" and field == "hold":
                    calls = [r["sweep_call"] for r in runs]
                    extra["note"] = (
                        "longest whole sweep() call, lock and GIL waits included:"
                        f" {statistics.median(calls):.3g} ms median"
                        f" ({min(calls):.3g}-{max(calls):.3g})"
                    )
                res.add(subject, role, op, "ms", [r[field] for r in runs], **extra)
    return res


def expiry_100k(cfg: Config) -> Results:
    return expiry(cfg, "expiry_100k", cfg.pick(100_000, 10_000))


def expiry_1m(cfg: Config) -> Results:
    return expiry(cfg, "expiry_1m", cfg.pick(1_000_000, 10_000))
