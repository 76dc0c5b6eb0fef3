"""Timing and bookkeeping shared by every workload.

Method: one untimed warm-up run, then ``reps`` timed runs (at least 5; 2 with ``--quick``), each
with the garbage collector collected beforehand and disabled during the timed loop, timed with
``perf_counter_ns``. A result row keeps the median, the minimum and the maximum of the runs. Random
choices come from ``random.Random(SEED)`` so every run touches the same keys in the same order.

Subjects measured by ``interleaved`` take turns round by round, and their rows say so (their
``round_group``): the report compares two such rows of one group round by round (the median of the
per-round ratios), so a slow phase of a shared machine that lasts a few rounds weighs on both sides
of every ratio instead of on whichever subject's median it happened to fall into.

Every metric the suite reports is lower-is-better (time per operation, pause length, bytes per
key, lost appends), so a ratio below 1 always means "better than the reference".
"""

from __future__ import annotations

import gc
import itertools
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SEED = 20_250_607
"""Seed of every random choice in the suite."""

FLOOR = "floor"
"""Role of the minimal implementation a group is measured against."""
PEER = "peer"
"""Role of another library (or the original design) measured on the same data."""
OURS = "threadstore"
"""Role of threadstore itself."""

Row = dict[str, Any]


class NotAvailable(Exception):
    """A subject that cannot run here (yet): a backend not landed, a binary not installed.

    Reported as "n/a: <reason>" instead of a number; never a failure of the run.
    """


@dataclass(frozen=True)
class Config:
    """What one benchmark process was asked to do."""

    quick: bool = False

    @property
    def reps(self) -> int:
        return 2 if self.quick else 5

    def pick(self, full: int, quick: int) -> int:
        """A size: ``full`` normally, ``quick`` in --quick mode."""
        return quick if self.quick else full

    def rng(self, salt: int = 0) -> random.Random:
        return random.Random(SEED + salt)


class Rounds(list[float]):
    """The samples of one subject from one ``interleaved`` call: sample i was taken in round i,
    next to sample i of every other subject of the call (which shares ``group``)."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group


_groups = itertools.count(1)


def summarize(samples: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of a non-empty list of samples."""
    return statistics.median(samples), min(samples), max(samples)


@contextmanager
def gc_paused(*, collector: bool = False) -> Iterator[None]:
    """Collect now, then keep the collector off (for every thread) until the block ends; with
    ``collector``, keep it on, as in an application (its pauses are then part of the figure)."""
    gc.collect()
    was_enabled = gc.isenabled()
    if collector:
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def repeat(run: Callable[[], float], reps: int, *, warmup: bool = True) -> list[float]:
    """Call ``run`` (which times itself and returns one sample) ``reps`` times after a warm-up."""
    if warmup:
        with gc_paused():
            run()
    samples = []
    for _ in range(reps):
        with gc_paused():
            samples.append(run())
    return samples


def interleaved(
    runs: dict[str, Callable[[], float]], reps: int, *, collector: bool = False
) -> dict[str, Rounds]:
    """Like ``repeat`` for several subjects at once, taking turns: one warm-up each, then every
    repetition runs each subject once (the order rotating), so that a change in the machine's
    background load during the benchmark hits every subject alike instead of one block of them.
    The garbage collector is off unless ``collector`` (see ``gc_paused``). The samples are
    ``Rounds`` of one new group, which the report compares round by round.
    """
    names = list(runs)
    for name in names:
        with gc_paused(collector=collector):
            runs[name]()
    group = next(_groups)
    samples = {name: Rounds(group) for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            with gc_paused(collector=collector):
                samples[name].append(runs[name]())
    return samples


def per_op_us(fn: Callable[[Any], object], args: Sequence[Any]) -> float:
    """Microseconds per call of ``fn(arg)`` over ``args``, loop overhead included (as for all)."""
    t0 = time.perf_counter_ns()
    for a in args:
        fn(a)
    return (time.perf_counter_ns() - t0) / len(args) / 1000


def threaded_per_op_us(workers: Sequence[Callable[[], object]], total_ops: int) -> float:
    """Run ``workers`` in one thread each, released together; wall-clock microseconds per op."""
    barrier = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def body(work: Callable[[], object]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    elapsed = time.perf_counter_ns() - t0
    if errors:
        raise errors[0]
    return elapsed / total_ops / 1000


def chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    """``items`` cut into ``n`` interleaved slices (one per worker thread)."""
    return [items[i::n] for i in range(n)]


class Results:
    """The rows one benchmark produces, with n/a bookkeeping per subject."""

    def __init__(self, benchmark: str, cfg: Config) -> None:
        self.benchmark = benchmark
        self.cfg = cfg
        self.rows: list[Row] = []

    def add(
        self,
        subject: str,
        role: str,
        op: str,
        unit: str,
        samples: Sequence[float],
        **extra: Any,
    ) -> Row:
        median, lo, hi = summarize(samples)
        row: Row = {
            "benchmark": self.benchmark,
            "subject": subject,
            "role": role,
            "op": op,
            "unit": unit,
            "median": median,
            "min": lo,
            "max": hi,
            "reps": len(samples),
            "samples": list(samples),
            "round_group": samples.group if isinstance(samples, Rounds) else None,
            "extra": extra,
        }
        self.rows.append(row)
        return row

    def na(self, subject: str, role: str, ops: Iterable[str], unit: str, reason: str) -> None:
        done = {r["op"] for r in self.rows if r["subject"] == subject}
        for op in ops:
            if op in done:
                continue
            self.rows.append(
                {
                    "benchmark": self.benchmark,
                    "subject": subject,
                    "role": role,
                    "op": op,
                    "unit": unit,
                    "median": None,
                    "min": None,
                    "max": None,
                    "reps": 0,
                    "samples": [],
                    "round_group": None,
                    "extra": {"na": reason},
                }
            )

    @contextmanager
    def subject(self, subject: str, role: str, ops: Sequence[str], unit: str) -> Iterator[None]:
        """Measure one subject; a NotAvailable raised inside becomes n/a rows for its ops."""
        try:
            yield
        except NotAvailable as exc:
            self.na(subject, role, ops, unit, str(exc))


def text_of(size: int, i: int, rng: random.Random | None = None) -> str:
    """A distinct printable ASCII string of exactly ``size`` characters (``i`` makes it unique)."""
    head = f"{i:012d}:"
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
    if rng is None:
        body = (alphabet * (size // len(alphabet) + 1))[i % len(alphabet) :]
    else:
        body = "".join(rng.choices(alphabet, k=64)) * (size // 64 + 1)
    return (head + body)[:size]
