"""The adapters' cost against each ecosystem's own stores, side by side.

``kv_adapter``: py-key-value's API (``put`` of a 1 KB value, ``get`` hit, ``get`` miss, ``ttl``)
on its in-memory ``MemoryStore`` (floor), its ``DiskStore`` (diskcache on SQLite: the peer, the
ecosystem's own disk store), and ``ThreadstoreStore`` on memory, SQLite and Redis.

``agents_session``: the OpenAI Agents SDK's session API (``add_items`` of one user/assistant
exchange, ``get_items`` of a 20-item history, ``get_items(limit=4)``, ``add_items`` + ``pop_item``)
on the SDK's ``SQLiteSession`` with a file (peer) and ``ThreadstoreSession`` on memory, SQLite
and Redis. Every subject runs in one asyncio event loop, one operation at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import threadstore

from . import backends
from .harness import FLOOR, OURS, PEER, Config, NotAvailable, Results, interleaved, text_of

UNIT = "µs/op"
SESSIONS = 20
KV_OPS = ["put 1 KB", "get hit", "get miss", "ttl"]
SESSION_OPS = [
    "add_items, 2 items",
    "get_items, 20 items",
    "get_items(limit=4)",
    "add_items + pop_item",
]


def _async_per_op_us(
    loop: asyncio.AbstractEventLoop, fn: Callable[[Any], Awaitable[object]], args: Sequence[Any]
) -> float:
    async def body() -> float:
        t0 = time.perf_counter_ns()
        for a in args:
            await fn(a)
        return (time.perf_counter_ns() - t0) / len(args) / 1000

    return loop.run_until_complete(body())


@contextmanager
def _url(kind: str, tmp: Path, stack: ExitStack) -> Iterator[str]:
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp}/{kind}-{time.monotonic_ns()}.db"
    else:
        yield stack.enter_context(backends.redis_server())


# -- py-key-value ---------------------------------------------------------------------------------
def kv_adapter(cfg: Config) -> Results:
    res = Results("kv_adapter", cfg)
    try:
        from key_value.aio.stores.disk import DiskStore
        from key_value.aio.stores.memory import MemoryStore

        from threadstore.integrations.keyvalue import ThreadstoreStore
    except ImportError as exc:
        raise NotAvailable(f"py-key-value-aio not installed ({exc})") from None
    n = cfg.pick(2000, 200)
    value = {"text": text_of(1000, 1), "n": 1}
    keys = [f"key-{i:06d}" for i in range(n)]
    missing = [f"none-{i:06d}" for i in range(n)]
    loop = asyncio.new_event_loop()
    subjects: dict[str, tuple[str, Any]] = {}
    with ExitStack() as stack:
        tmp = stack.enter_context(backends.temp_dir("bench-kv-adapter-"))
        subjects["py-key-value MemoryStore"] = (FLOOR, MemoryStore())
        subjects["py-key-value DiskStore"] = (PEER, DiskStore(directory=tmp / "disk"))
        for kind in ("memory", "sqlite", "redis"):
            name = f"ThreadstoreStore {kind}"
            try:
                url = stack.enter_context(_url(kind, tmp, stack))
                subjects[name] = (OURS, ThreadstoreStore(url))
            except NotAvailable as exc:
                res.na(name, OURS, KV_OPS, UNIT, str(exc))
        for _, store in subjects.values():
            loop.run_until_complete(store.setup())
        runs: dict[str, Callable[[], float]] = {}
        for name, (_, store) in subjects.items():

            def put(k: str, s: Any = store) -> Awaitable[None]:
                return s.put(k, value, collection="bench", ttl=3600)

            def get(k: str, s: Any = store) -> Awaitable[Any]:
                return s.get(k, collection="bench")

            def ttl(k: str, s: Any = store) -> Awaitable[Any]:
                return s.ttl(k, collection="bench")

            runs[f"{name}|0"] = lambda f=put: _async_per_op_us(loop, f, keys)
            runs[f"{name}|1"] = lambda f=get: _async_per_op_us(loop, f, keys)
            runs[f"{name}|2"] = lambda f=get: _async_per_op_us(loop, f, missing)
            runs[f"{name}|3"] = lambda f=ttl: _async_per_op_us(loop, f, keys)
        samples = interleaved(runs, cfg.reps)
        for name, (role, store) in subjects.items():
            for i, op in enumerate(KV_OPS):
                res.add(name, role, op, UNIT, samples[f"{name}|{i}"], ops_per_rep=n)
            close = getattr(store, "close", None)  # MemoryStore has none
            if close is not None:
                loop.run_until_complete(close())
    loop.close()
    return res


# -- Agents SDK sessions ---------------------------------------------------------------------------
def agents_session(cfg: Config) -> Results:
    res = Results("agents_session", cfg)
    try:
        from agents import SQLiteSession

        from threadstore.integrations.agents import ThreadstoreSession
    except ImportError as exc:
        raise NotAvailable(f"openai-agents not installed ({exc})") from None
    n = cfg.pick(300, 40)
    exchange = [
        {"role": "user", "content": text_of(300, 1)},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": text_of(500, 2), "annotations": []}],
        },
    ]
    history = [dict(exchange[i % 2]) for i in range(20)]
    loop = asyncio.new_event_loop()
    subjects: dict[str, tuple[str, Callable[[str], Any]]] = {}
    with ExitStack() as stack:
        tmp = stack.enter_context(backends.temp_dir("bench-agents-session-"))
        db = tmp / "sdk.db"
        subjects["SDK SQLiteSession (file)"] = (PEER, lambda sid: SQLiteSession(sid, db))
        for kind in ("memory", "sqlite", "redis"):
            name = f"ThreadstoreSession {kind}"
            try:
                url = stack.enter_context(_url(kind, tmp, stack))
            except NotAvailable as exc:
                res.na(name, OURS, SESSION_OPS, UNIT, str(exc))
                continue
            storage = threadstore.open_storage(url, fallback="fail")
            stack.callback(storage.close)
            subjects[name] = (
                OURS,
                lambda sid, s=storage: ThreadstoreSession(sid, store=s, ttl_seconds=3600),
            )
        runs: dict[str, Callable[[], float]] = {}
        for name, (_, make) in subjects.items():
            writer_sessions = [make(f"w{i}") for i in range(SESSIONS)]
            reader_sessions = [make(f"r{i}") for i in range(SESSIONS)]
            for r in reader_sessions:
                loop.run_until_complete(r.add_items(history))
            writers = [writer_sessions[i % SESSIONS] for i in range(n)]
            readers = [reader_sessions[i % SESSIONS] for i in range(n)]

            def add(s: Any) -> Awaitable[None]:
                return s.add_items(exchange)  # type: ignore[no-any-return]

            def read(s: Any) -> Awaitable[Any]:
                return s.get_items()

            def read4(s: Any) -> Awaitable[Any]:
                return s.get_items(limit=4)

            async def add_pop(s: Any) -> None:
                await s.add_items(exchange[:1])
                await s.pop_item()

            runs[f"{name}|0"] = lambda w=writers: _async_per_op_us(loop, add, w)
            runs[f"{name}|1"] = lambda r=readers: _async_per_op_us(loop, read, r)
            runs[f"{name}|2"] = lambda r=readers: _async_per_op_us(loop, read4, r)
            runs[f"{name}|3"] = lambda r=readers: _async_per_op_us(loop, add_pop, r)
        samples = interleaved(runs, cfg.reps)
        for name, (role, _) in subjects.items():
            for i, op in enumerate(SESSION_OPS):
                res.add(name, role, op, UNIT, samples[f"{name}|{i}"], ops_per_rep=n)
    loop.close()
    return res
