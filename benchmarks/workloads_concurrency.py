"""Concurrency: racing writers (threads and processes) and async fan-out on Redis.

- writers_threads: 4 threads x 500 add_turn on ONE thread, in memory. The original design's
  read-modify-write of a JSON blob loses turns when two writers overlap; threadstore appends.
- writers_processes: the same with 4 processes: on Redis (the original design over GET/SETEX vs
  threadstore redis) and on one SQLite file shared by the 4 processes (threadstore sqlite; the
  original design had no SQLite backend).
- async_redis: 64 coroutines vs 1, each doing its share of a fixed number of operations: get
  (raw redis.asyncio vs threadstore's ``storage.aio``) and add_turn (RPUSHX+PEXPIRE pipeline vs
  ``AsyncThreadStore.add_turn``). Reported as wall time per operation (1e6 / ops per second).

"lost appends" counts turns that were acknowledged but are not in the thread afterwards;
"failed appends" counts calls that raised (for example "database is locked").
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import backends, peers
from .harness import (
    FLOOR,
    OURS,
    PEER,
    Config,
    NotAvailable,
    Results,
    gc_paused,
    text_of,
)

WRITERS = 4
TURN_SIZE = 200
TTL = backends.TTL


def _ops(n: int, per: int, what: str) -> list[str]:
    return [
        f"lost appends, {n} {what} x {per}",
        f"failed appends, {n} {what} x {per}",
        f"wall time per append, {n} {what}",
    ]


# -- one writer (used in threads and in child processes) -----------------------------------------


def _open_conv(kind: str, where: str, max_turns: int) -> tuple[Any, Callable[[], None]]:
    """A conversation layer for one writer: ("original-memory"|"original-redis"|"redis"|...)."""
    if kind == "original-redis":
        raw = peers.RawRedis(where)
        return peers.OriginalConversations(raw, ttl_seconds=TTL, max_turns=max_turns), raw.close
    if kind == "redis":
        store = backends.open_redis(where)
    elif kind == "sqlite":
        store = backends.open_sqlite(Path(where))
    else:
        raise ValueError(kind)
    return backends.thread_store(store, ttl_seconds=TTL, max_turns=max_turns), store.close


def _append_many(conv: Any, thread_id: str, writer: int, n: int) -> tuple[int, int]:
    """``n`` add_turn calls; (acknowledged, raised)."""
    ok = failed = 0
    for i in range(n):
        content = text_of(TURN_SIZE, writer * 1_000_000 + i)
        try:
            result = conv.add_turn(thread_id, "user" if i % 2 else "assistant", content)
        except Exception:
            failed += 1
            continue
        if result is not False:  # the original returns False when it refuses
            ok += 1
    return ok, failed


def _process_writer(
    kind: str,
    where: str,
    thread_id: str,
    writer: int,
    n: int,
    max_turns: int,
    barrier: Any,
    results: Any,
) -> None:
    conv, close = _open_conv(kind, where, max_turns)
    try:
        barrier.wait()
        results.put(_append_many(conv, thread_id, writer, n))
    finally:
        close()


# -- racing writers ------------------------------------------------------------------------------


def _race(
    res: Results,
    subject: str,
    role: str,
    conv: Any,
    n: int,
    processes: tuple[str, str] | None,
) -> None:
    """Race WRITERS writers on one thread per repetition; record lost/failed/time per append."""
    expected = WRITERS * n
    max_turns = expected + 10
    what = "processes" if processes else "threads"
    ops = _ops(WRITERS, n, what)
    lost_s: list[float] = []
    failed_s: list[float] = []
    notes: list[str] = []

    def one() -> float:
        tid = conv.create_thread("bench", {"prompt": "race"})
        if processes is None:
            acks: list[tuple[int, int]] = []
            barrier = threading.Barrier(WRITERS + 1)

            def body(w: int) -> None:
                barrier.wait()
                acks.append(_append_many(conv, tid, w, n))

            workers = [threading.Thread(target=body, args=(w,)) for w in range(WRITERS)]
            for t in workers:
                t.start()
            barrier.wait()
            t0 = time.perf_counter_ns()
            for t in workers:
                t.join()
            elapsed = time.perf_counter_ns() - t0
        else:
            ctx = multiprocessing.get_context("spawn")
            pbarrier = ctx.Barrier(WRITERS + 1)
            queue = ctx.Queue()
            kind, where = processes
            procs = [
                ctx.Process(
                    target=_process_writer,
                    args=(kind, where, tid, w, n, max_turns, pbarrier, queue),
                )
                for w in range(WRITERS)
            ]
            for p in procs:
                p.start()
            pbarrier.wait(timeout=120)
            t0 = time.perf_counter_ns()
            acks = [queue.get(timeout=600) for _ in procs]
            elapsed = time.perf_counter_ns() - t0
            for p in procs:
                p.join(timeout=60)
                if p.exitcode != 0:
                    raise RuntimeError(f"{subject}: writer process exited with {p.exitcode}")
        thread = conv.get_thread(tid)
        stored = len(thread.turns) if thread is not None else 0
        acked = sum(a for a, _ in acks)
        failed = sum(f for _, f in acks)
        lost_s.append(float(max(0, acked - stored)))
        failed_s.append(float(failed))
        notes.append(f"{stored}/{expected}")
        return elapsed / expected / 1000

    with gc_paused():
        times = [one() for _ in range(res.cfg.reps)]
    note = "turns stored / expected per run: " + ", ".join(notes)
    res.add(subject, role, ops[0], "appends", lost_s, note=note)
    res.add(subject, role, ops[1], "appends", failed_s)
    res.add(subject, role, ops[2], "µs/op", times)


def writers_threads(cfg: Config) -> Results:
    res = Results("writers_threads", cfg)
    n = cfg.pick(500, 60)
    ops = _ops(WRITERS, n, "threads")
    expected = WRITERS * n
    with res.subject(peers.OriginalKV.name, PEER, ops, "appends"):
        kv = peers.OriginalKV()
        conv = peers.OriginalConversations(kv, ttl_seconds=TTL, max_turns=expected + 10)
        _race(res, peers.OriginalKV.name, PEER, conv, n, None)
        kv.close()
    with res.subject("threadstore memory", OURS, ops, "appends"):
        store = backends.open_memory()
        conv = backends.thread_store(store, ttl_seconds=TTL, max_turns=expected + 10)
        _race(res, "threadstore memory", OURS, conv, n, None)
        store.close()
    return res


def writers_processes(cfg: Config) -> Results:
    res = Results("writers_processes", cfg)
    n = cfg.pick(500, 40)
    ops = _ops(WRITERS, n, "processes")
    max_turns = WRITERS * n + 10
    redis_subjects = [(peers.OriginalKV.name + " on Redis", PEER), ("threadstore redis", OURS)]
    try:
        with backends.redis_server() as url:
            for name, role in redis_subjects:
                with res.subject(name, role, ops, "appends"):
                    kind = "original-redis" if role == PEER else "redis"
                    conv, close = _open_conv(kind, url, max_turns)
                    _race(res, name, role, conv, n, (kind, url))
                    close()
    except NotAvailable as exc:
        for name, role in redis_subjects:
            res.na(name, role, ops, "appends", str(exc))
    with (
        backends.temp_dir("writers") as tmp,
        res.subject("threadstore sqlite", OURS, ops, "appends"),
    ):
        path = str(tmp / "threads.db")
        conv, close = _open_conv("sqlite", path, max_turns)
        _race(res, "threadstore sqlite", OURS, conv, n, ("sqlite", path))
        close()
    return res


# -- async fan-out on Redis ----------------------------------------------------------------------


async def _arepeat(run: Callable[[], Awaitable[float]], reps: int) -> list[float]:
    await run()  # warm-up
    samples = []
    for _ in range(reps):
        with gc_paused():
            samples.append(await run())
    return samples


async def _fan_out(fn: Callable[[Any], Awaitable[object]], args: list[Any], width: int) -> float:
    """Wall µs per op running ``args`` through ``fn`` on ``width`` coroutines."""
    parts = [args[i::width] for i in range(width)]

    async def worker(part: list[Any]) -> None:
        for a in part:
            await fn(a)

    t0 = time.perf_counter_ns()
    await asyncio.gather(*(worker(p) for p in parts))
    return (time.perf_counter_ns() - t0) / len(args) / 1000


async def _async_redis(res: Results, url: str) -> None:
    import redis.asyncio as aredis

    cfg = res.cfg
    total = cfg.pick(4000, 256)
    keys = [f"key:{i:06d}" for i in range(1000)]
    value = text_of(2048, 7)
    rng = cfg.rng(5)
    gets = [keys[rng.randrange(len(keys))] for _ in range(total)]
    widths = (1, 64)
    get_ops = [f"get, {w} coroutine{'s' if w > 1 else ''}" for w in widths]
    add_ops = [f"add_turn, {w} coroutine{'s' if w > 1 else ''}" for w in widths]
    per_thread = 40

    raw = aredis.Redis.from_url(url, decode_responses=True, max_connections=100)
    pipe = raw.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, value, px=int(TTL * 1000))
    await pipe.execute()

    async def raw_append(key: str) -> object:
        p = raw.pipeline(transaction=False)
        p.rpushx(key, value[:1024])
        p.pexpire(key, int(TTL * 1000))
        return await p.execute()

    made = [0]

    async def raw_threads(count: int) -> list[str]:
        ids = [f"thread:{made[0] + i}" for i in range(count)]
        made[0] += count
        p = raw.pipeline(transaction=False)
        for tid in ids:
            p.rpush(tid, "{}")
        await p.execute()
        return ids

    async def time_subject(
        name: str,
        role: str,
        get: Callable[[str], Awaitable[object]],
        add: Callable[[str], Awaitable[object]],
        new_threads: Callable[[int], Awaitable[list[str]]],
    ) -> None:
        for w, op in zip(widths, get_ops, strict=True):
            samples = await _arepeat(lambda w=w: _fan_out(get, gets, w), cfg.reps)
            res.add(name, role, op, "µs/op", samples, ops_per_s=round(1e6 / min(samples)))
        for w, op in zip(widths, add_ops, strict=True):

            async def run(w: int = w) -> float:
                ids = await new_threads(-(-total // per_thread))
                targets = [ids[i % len(ids)] for i in range(total)]
                return await _fan_out(add, targets, w)

            samples = await _arepeat(run, cfg.reps)
            res.add(name, role, op, "µs/op", samples, ops_per_s=round(1e6 / min(samples)))

    with res.subject(peers.RawRedis.name, FLOOR, get_ops + add_ops, "µs/op"):
        await time_subject(peers.RawRedis.name, FLOOR, raw.get, raw_append, raw_threads)

    with res.subject("threadstore redis", OURS, get_ops + add_ops, "µs/op"):
        store = backends.open_redis(url)
        try:
            for k in keys:
                store.set_with_ttl(k, TTL, value)
            aio = store.aio

            async def ts_get(key: str) -> object:
                return await aio.call("get", key)

            try:
                ats = backends.async_thread_store(store, ttl_seconds=TTL, max_turns=per_thread + 1)
            except NotAvailable as exc:
                for w, op in zip(widths, get_ops, strict=True):
                    samples = await _arepeat(lambda w=w: _fan_out(ts_get, gets, w), cfg.reps)
                    res.add("threadstore redis", OURS, op, "µs/op", samples)
                res.na("threadstore redis", OURS, add_ops, "µs/op", str(exc))
                return

            async def ts_threads(count: int) -> list[str]:
                return list(
                    await asyncio.gather(*(ats.create_thread("bench") for _ in range(count)))
                )

            async def ts_add(tid: str) -> object:
                return await ats.add_turn(tid, "user", value[:1024])

            await time_subject("threadstore redis", OURS, ts_get, ts_add, ts_threads)
            closing = getattr(ats, "close", None)
            if closing is not None:
                await closing()
        finally:
            store.close()
    await raw.aclose()


def async_redis(cfg: Config) -> Results:
    res = Results("async_redis", cfg)
    with backends.redis_server() as url:
        asyncio.run(_async_redis(res, url))
    return res
