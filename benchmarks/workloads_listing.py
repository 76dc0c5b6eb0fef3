"""Listing and counting against the number of threads stored (issue #13), and what the activity
index costs add_turn.

listing_<backend>: the store grows to 1k, 10k and 100k threads (1M in memory); at each size,
``list_threads(limit=20)``, the next page (with its cursor) and ``count_threads``. Subjects:

- threadstore (the activity index): O(log n + page), so the lines are flat.
- full-scan ranking: what ``list_threads`` and ``count_threads`` did before the index (every
  thread key scanned, each thread's length and last item read, all ranked, the page summarised;
  the count a full SCAN), run on the same store. Skipped where one call would take minutes.

index_add_turn: ``ThreadStore.add_turn`` on threads filed in the index (every thread since the
index) against the same call on threads created without it, which is the work ``add_turn`` did
before the index (plus one failed membership lookup), interleaved in one process per backend,
in a store already holding 10k filed threads.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from threadstore import Storage, ThreadStore
from threadstore._ids import ALL_THREADS, KEY_PREFIX
from threadstore._logic import Logic, Op, ThreadPage

from . import backends
from .harness import OURS, PEER, Config, NotAvailable, Results, interleaved, repeat

TTL = backends.TTL
PAGE = 20
UNIT = "ms"
SERIES = ("list_threads(limit=20)", "next page", "count_threads")
FULL_SCAN = "full-scan ranking (before the index)"
BEFORE = "add_turn before the index (thread not filed)"
WITH = "threadstore add_turn (thread filed in the index)"
SCAN_BUDGET_S = 12.0
"""The full scan is measured only while one call is expected to take less than this."""


# -- building a store fast (untimed) -----------------------------------------------------------
def _meta(thread_id: str, created: datetime) -> str:
    return json.dumps(
        {"v": 1, "thread_id": thread_id, "created_at": created.isoformat(), "tool_name": "bench"}
    )


def _micros(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def _batch(start: int, count: int) -> list[tuple[str, str, int]]:
    """(key, meta JSON, score) of threads number start .. start + count - 1, one µs apart."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(start, start + count):
        created = base + timedelta(microseconds=7 * i)
        thread_id = str(uuid.UUID(int=i * 2654435761 + 1, version=4))
        out.append((KEY_PREFIX + thread_id, _meta(thread_id, created), _micros(created)))
    return out


def grow(storage: Storage, start: int, count: int) -> None:
    """Add ``count`` threads (no turns) filed in the index, the way create_thread files them."""
    rows = _batch(start, count)
    if storage.kind == "redis":
        client = storage._redis  # type: ignore[attr-defined]
        commands = storage._commands  # type: ignore[attr-defined]
        for i in range(0, len(rows), 1000):
            pipe = client.pipeline(transaction=False)
            for key, meta, score in rows[i : i + 1000]:
                cmd = commands.list_create(key, TTL, meta, scopes=(ALL_THREADS,), score=score)
                args = ("EVAL", _script_source(cmd.args[1]), *cmd.args[2:])
                pipe.execute_command(*args)
            pipe.execute()
        return
    for key, meta, score in rows:
        storage.list_create(key, TTL, meta, scopes=(ALL_THREADS,), score=score)


def _script_source(sha: str) -> str:
    from threadstore._redis import _SCRIPTS

    return _SCRIPTS[sha]


# -- the comparison subject: ranking by a full scan, as list_threads did before ----------------
def run_op(storage: Storage, op: Op[Any]) -> Any:
    try:
        call = next(op)
        while True:
            call = op.send(getattr(storage, call.method)(*call.args, **call.kwargs))
    except StopIteration as done:
        return done.value


def full_scan_page(storage: Storage, logic: Logic, cursor: tuple[int, str] | None) -> Any:
    ranked = []
    for key in storage.scan(KEY_PREFIX):
        entry = run_op(storage, logic._rank(key[len(KEY_PREFIX) :]))
        if entry is not None:
            ranked.append(entry)
    ranked.sort(reverse=True)
    if cursor is not None:
        ranked = [r for r in ranked if (r[0], r[1]) < cursor]
    page = [
        logic._summary(thread_id, storage.list_ends(KEY_PREFIX + thread_id))
        for _, thread_id, _ in ranked[:PAGE]
    ]
    last = ranked[PAGE - 1] if len(ranked) > PAGE else None
    return page, None if last is None else (last[0], last[1])


def full_scan_count(storage: Storage) -> int:
    return sum(1 for _ in storage.scan(KEY_PREFIX))


# -- the listing benchmark -----------------------------------------------------------------------
def _ms(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    return run


def measure_listing(res: Results, kind: str, storage: Storage, sizes: list[int]) -> None:
    store = ThreadStore(storage, ttl_seconds=TTL, max_turns=50)
    logic = Logic(ttl_seconds=TTL, max_turns=50)
    ours = f"threadstore {kind}"
    have = 0
    scan_ms_per_thread: float | None = None
    for n in sizes:
        grow(storage, have, n - have)
        have = n
        label = f"{n:,} threads"
        first: ThreadPage = store.list_threads(limit=PAGE)
        assert len(first.threads) == PAGE and first.next_cursor is not None
        assert store.count_threads() == n
        cursor = first.next_cursor
        reps = res.cfg.reps
        runs = {
            SERIES[0]: _ms(lambda: store.list_threads(limit=PAGE)),
            SERIES[1]: _ms(lambda cursor=cursor: store.list_threads(limit=PAGE, cursor=cursor)),
            SERIES[2]: _ms(store.count_threads),
        }
        for series, run in runs.items():
            samples = repeat(run, max(reps, 5))
            res.add(ours, OURS, f"{series}, {label}", UNIT, samples, threads=n, series=series)
        # The full scan, while one call stays under the budget (estimated from the last size).
        ops = [f"{s}, {label}" for s in SERIES]
        estimate = None if scan_ms_per_thread is None else scan_ms_per_thread * n / 1000
        if estimate is not None and estimate > SCAN_BUDGET_S:
            res.na(FULL_SCAN, PEER, ops, UNIT, f"skipped: one call would take ~{estimate:.0f} s")
            continue
        page, after = full_scan_page(storage, logic, None)
        expected = [t.thread_id for t in first.threads]
        assert [t.thread_id for t in page] == expected, "the index and the full scan disagree"
        scan_runs = {
            SERIES[0]: _ms(lambda: full_scan_page(storage, logic, None)),
            SERIES[1]: _ms(lambda after=after: full_scan_page(storage, logic, after)),
            SERIES[2]: _ms(lambda: full_scan_count(storage)),
        }
        scan_reps = 2 if n >= 10_000 else max(reps, 3)
        for series, run in scan_runs.items():
            samples = repeat(run, scan_reps, warmup=n < 10_000)
            row = res.add(
                FULL_SCAN, PEER, f"{series}, {label}", UNIT, samples, threads=n, series=series
            )
            if series == SERIES[0]:
                scan_ms_per_thread = row["median"] / n
    storage.close()


def _sizes(cfg: Config, big: bool = False) -> list[int]:
    if cfg.quick:
        return [100, 400]
    return [1_000, 10_000, 100_000, *([1_000_000] if big else [])]


def listing_memory(cfg: Config) -> Results:
    res = Results("listing_memory", cfg)
    ops = [f"{s}, {n:,} threads" for n in _sizes(cfg, True) for s in SERIES]
    with res.subject("threadstore memory", OURS, ops, UNIT):
        storage = backends.open_memory(max_keys=2_000_000, max_bytes=4 << 30)
        measure_listing(res, "memory", storage, _sizes(cfg, big=True))
    return res


def listing_sqlite(cfg: Config) -> Results:
    res = Results("listing_sqlite", cfg)
    ops = [f"{s}, {n:,} threads" for n in _sizes(cfg) for s in SERIES]
    with (
        backends.temp_dir("listing-sqlite") as tmp,
        res.subject("threadstore sqlite", OURS, ops, UNIT),
    ):
        measure_listing(res, "sqlite", backends.open_sqlite(tmp / "t.db"), _sizes(cfg))
    return res


def listing_redis(cfg: Config) -> Results:
    res = Results("listing_redis", cfg)
    ops = [f"{s}, {n:,} threads" for n in _sizes(cfg) for s in SERIES]
    try:
        with backends.redis_server() as url, res.subject("threadstore redis", OURS, ops, UNIT):
            measure_listing(res, "redis", backends.open_redis(url), _sizes(cfg))
    except NotAvailable as exc:
        res.na("threadstore redis", OURS, ops, UNIT, str(exc))
    return res


# -- add_turn with and without the index ---------------------------------------------------------
@contextmanager
def _each_backend(cfg: Config) -> Iterator[list[tuple[str, Callable[[], Storage]]]]:
    with backends.temp_dir("index-add-turn") as tmp:
        openers: list[tuple[str, Callable[[], Storage]]] = [
            ("memory", backends.open_memory),
            ("sqlite", lambda: backends.open_sqlite(Path(tmp) / "t.db")),
        ]
        try:
            with backends.redis_server() as url:
                openers.append(("redis", lambda: backends.open_redis(url)))
                yield openers
        except NotAvailable:
            yield openers


def index_add_turn(cfg: Config) -> Results:
    res = Results("index_add_turn", cfg)
    per_rep = {"memory": cfg.pick(3000, 100), "sqlite": cfg.pick(600, 40),
               "redis": cfg.pick(400, 40)}  # fmt: skip
    background = cfg.pick(10_000, 500)
    with _each_backend(cfg) as openers:
        for kind, open_store in openers:
            storage = open_store()
            grow(storage, 0, background)
            store = ThreadStore(storage, ttl_seconds=TTL, max_turns=10_000)
            n = per_rep[kind]
            filed = [store.create_thread("bench") for _ in range(n)]
            plain = []
            for key, meta, _ in _batch(background + 1, n):
                storage.list_create(key, TTL, meta)  # not filed: add_turn's work before the index
                plain.append(key[len(KEY_PREFIX) :])
            content = "x" * 1024

            def adds(
                ids: list[str], store: ThreadStore = store, content: str = content
            ) -> Callable[[], float]:
                def run() -> float:
                    t0 = time.perf_counter_ns()
                    for thread_id in ids:
                        store.add_turn(thread_id, "user", content)
                    return (time.perf_counter_ns() - t0) / len(ids) / 1000

                return run

            reps = max(cfg.reps, 9) if not cfg.quick else 2
            samples = interleaved({"filed": adds(filed), "plain": adds(plain)}, reps)
            op = f"add_turn 1 KB, {kind}"
            res.add(BEFORE, PEER, op, "µs/op", samples["plain"], threads_in_store=background)
            res.add(WITH, OURS, op, "µs/op", samples["filed"], threads_in_store=background)
            storage.close()
    return res
