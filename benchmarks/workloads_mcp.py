"""MCP tool-call latency through the SDK's in-process client: p50 and p99 of thread_append and
thread_get (a thread of 10 turns), per backend.

The floor is a bare ``MCPServer`` whose ``thread_append`` / ``thread_get`` tools return at once:
the cost of the protocol itself (JSON-RPC, validation, in-memory transport). threadstore's
server is found in ``threadstore.server`` (``build_server``); until it lands its rows are n/a.
Each repetition is ``calls`` sequential calls of each tool; the row keeps the median, min and max
of the repetitions' p50 (or p99).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import backends
from .harness import FLOOR, OURS, Config, NotAvailable, Results, gc_paused, text_of

TOOLS = ("thread_append", "thread_get")
OPS = [f"{tool} {q}" for tool in TOOLS for q in ("p50", "p99")]
TURNS_IN_THREAD = 10
APPENDS_PER_THREAD = 30  # fresh threads keep every append under the 50-turn default


def floor_server() -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("floor", log_level="WARNING")

    @server.tool(name="thread_create")
    async def thread_create(tool_name: str) -> dict[str, Any]:
        return {"thread_id": "00000000-0000-4000-8000-000000000000", "tool_name": tool_name}

    @server.tool(name="thread_append")
    async def thread_append(thread_id: str, role: str, content: str) -> dict[str, Any]:
        return {"thread_id": thread_id, "role": role}

    @server.tool(name="thread_get")
    async def thread_get(thread_id: str) -> dict[str, Any]:
        return {"thread_id": thread_id, "turns": []}

    return server


def threadstore_server(url: str) -> Any:
    try:
        module = importlib.import_module("threadstore.server")
    except ModuleNotFoundError as exc:
        raise NotAvailable(f"threadstore.server has not landed yet ({exc})") from None
    build = next(
        (
            getattr(module, n)
            for n in ("build_server", "create_server", "make_server")
            if hasattr(module, n)
        ),
        None,
    )
    if build is None:
        raise NotAvailable("threadstore.server has no build_server()")
    params = inspect.signature(build).parameters
    quiet = {"log_level": "WARNING"} if "log_level" in params else {}  # no INFO lines in progress
    if "url" in params:
        return build(url=url, **quiet)
    if "store" in params:
        storage = threadstore_open(url)
        return build(store=backends.async_thread_store(storage))
    raise NotAvailable("build_server() takes neither url= nor store=")


def threadstore_open(url: str) -> Any:
    if url.startswith("memory:"):
        return backends.open_memory()
    return backends.open_sqlite(Path(url.removeprefix("sqlite:///")))


def _structured(result: Any) -> dict[str, Any]:
    if getattr(result, "is_error", False):
        texts = [getattr(c, "text", "") for c in getattr(result, "content", [])]
        raise RuntimeError(f"tool call failed: {' '.join(texts)}")
    data = getattr(result, "structured_content", None) or {}
    return dict(data)


async def _latencies(
    call: Callable[[str, dict[str, Any]], Awaitable[Any]], cfg: Config
) -> dict[str, list[float]]:
    """Per repetition p50 and p99 (µs) of each tool."""
    calls = cfg.pick(1000, 60)
    content = text_of(1024, 1)

    async def new_thread(turns: int) -> str:
        created = _structured(await call("thread_create", {"tool_name": "bench"}))
        tid = str(created["thread_id"])
        for i in range(turns):
            role = "user" if i % 2 == 0 else "assistant"
            await call("thread_append", {"thread_id": tid, "role": role, "content": content})
        return tid

    async def timed(tool: str, args_for: Callable[[int], Awaitable[dict[str, Any]]]) -> list[float]:
        out = []
        for i in range(calls):
            args = await args_for(i)
            t0 = time.perf_counter_ns()
            _structured(await call(tool, args))
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    appending: dict[str, Any] = {"tid": None}

    async def append_args(i: int) -> dict[str, Any]:
        if i % APPENDS_PER_THREAD == 0:
            appending["tid"] = await new_thread(0)
        role = "user" if i % 2 == 0 else "assistant"
        return {"thread_id": appending["tid"], "role": role, "content": content}

    readable = await new_thread(TURNS_IN_THREAD)

    async def get_args(i: int) -> dict[str, Any]:
        return {"thread_id": readable}

    samples: dict[str, list[float]] = {op: [] for op in OPS}
    await timed("thread_append", append_args)  # warm-up
    await timed("thread_get", get_args)
    for _ in range(cfg.reps):
        with gc_paused():
            for tool, args_for in (("thread_append", append_args), ("thread_get", get_args)):
                lat = sorted(await timed(tool, args_for))
                samples[f"{tool} p50"].append(statistics.median(lat))
                samples[f"{tool} p99"].append(lat[min(len(lat) - 1, int(len(lat) * 0.99))])
    return samples


async def _measure(res: Results, subject: str, role: str, server: Any) -> None:
    from mcp import Client

    async with Client(server) as client:

        async def call(tool: str, args: dict[str, Any]) -> Any:
            return await client.call_tool(tool, args)

        names = {t.name for t in (await client.list_tools()).tools}
        missing = {"thread_create", *TOOLS} - names
        if missing:
            raise NotAvailable(f"the server has no {', '.join(sorted(missing))} tool")
        samples = await _latencies(call, res.cfg)
    for op in OPS:
        res.add(subject, role, op, "µs", samples[op], calls_per_rep=res.cfg.pick(1000, 60))


def mcp_latency(cfg: Config) -> Results:
    res = Results("mcp_latency", cfg)
    try:
        import mcp  # noqa: F401
    except ModuleNotFoundError:
        raise NotAvailable("the mcp package is not installed") from None
    with res.subject("floor MCPServer, no-op tools", FLOOR, OPS, "µs"):
        asyncio.run(_measure(res, "floor MCPServer, no-op tools", FLOOR, floor_server()))
    with backends.temp_dir("mcp") as tmp:
        for subject, url in (
            ("threadstore server, memory", "memory://"),
            ("threadstore server, sqlite", f"sqlite:///{tmp / 'threads.db'}"),
        ):
            with res.subject(subject, OURS, OPS, "µs"):
                server = threadstore_server(url)
                asyncio.run(_measure(res, subject, OURS, server))
    return res
