"""Load: concurrent MCP clients against ``threadstore serve --transport http`` for a bounded time.

Each client is the official MCP client over streamable HTTP, with its own session, running a
mixed workload (create 10 %, append 50 %, get 20 %, history 10 %, list 10 %) on a SQLite file
until the time is up. Afterwards: zero unexpected errors, every acknowledged append is in its
thread (turn counts match exactly), and the server's resident memory grew by less than a loose
bound between the end of a warm-up and the end of the run.

Short form (the normal run, CI): 4 clients x 5 s. Longer: THREADSTORE_LOAD_SECONDS=300
THREADSTORE_LOAD_CLIENTS=8 pytest -m load.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from reliability_workers.figures import record
from reliability_workers.http_server import http_server

pytestmark = pytest.mark.load

SECONDS = float(os.environ.get("THREADSTORE_LOAD_SECONDS", "5"))
CLIENTS = int(os.environ.get("THREADSTORE_LOAD_CLIENTS", "4"))
RSS_GROWTH_LIMIT_KIB = 64 * 1024 if SECONDS <= 60 else 128 * 1024
MAX_TURNS = 50


def test_concurrent_mcp_clients_over_http(tmp_path: Path) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    counts: dict[str, int] = {}
    errors: list[str] = []
    acked: dict[str, int] = {}  # thread id -> appends acknowledged

    async def call(client: Any, tool: str, args: dict[str, Any]) -> Any:
        result = await client.call_tool(tool, args)
        counts[tool] = counts.get(tool, 0) + 1
        if result.is_error:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            errors.append(f"{tool}: {text[:200]}")
            return None
        return result.structured_content

    async def worker(endpoint: str, n: int, until: float) -> None:
        rng = random.Random(n)
        async with (
            httpx2.AsyncClient(timeout=30) as http,
            Client(streamable_http_client(endpoint, http_client=http)) as client,
        ):
            mine: list[str] = []
            while time.monotonic() < until:
                roll = rng.random()
                if not mine or roll < 0.1:
                    out = await call(client, "thread_create", {"tool_name": f"load{n}"})
                    if out:
                        mine.append(out["thread_id"])
                        acked[out["thread_id"]] = 0
                    continue
                tid = rng.choice(mine)
                if roll < 0.6:
                    if acked[tid] >= MAX_TURNS:
                        mine.remove(tid)  # full: the next round creates a new one
                        continue
                    args = {
                        "thread_id": tid,
                        "role": rng.choice(["user", "assistant"]),
                        "content": f"turn {acked[tid]} " + "lorem ipsum " * rng.randint(1, 300),
                        "files": [f"src/f{rng.randint(0, 9)}.py"],
                    }
                    if await call(client, "thread_append", args):
                        acked[tid] += 1
                elif roll < 0.8:
                    await call(client, "thread_get", {"thread_id": tid, "limit": 20})
                elif roll < 0.9:
                    await call(client, "thread_history", {"thread_id": tid, "max_tokens": 2000})
                else:
                    await call(client, "thread_list", {"limit": 20})

    async def verify(endpoint: str) -> int:
        checked = 0
        async with (
            httpx2.AsyncClient(timeout=30) as http,
            Client(streamable_http_client(endpoint, http_client=http)) as client,
        ):
            for tid, n in acked.items():
                out = await client.call_tool("thread_get", {"thread_id": tid, "limit": 1})
                assert not out.is_error
                assert out.structured_content["turn_count"] == n, tid  # type: ignore[index]
                checked += 1
        return checked

    url = f"sqlite:///{tmp_path}/load.db"
    with http_server(url) as server:
        warmup = min(2.0, SECONDS / 4)

        async def run(seconds: float) -> None:
            until = time.monotonic() + seconds
            async with anyio.create_task_group() as tg:
                for n in range(CLIENTS):
                    tg.start_soon(worker, server.endpoint, n, until)

        anyio.run(run, warmup)
        rss_before = server.rss_kib()
        started = time.monotonic()
        anyio.run(run, SECONDS)
        elapsed = time.monotonic() - started
        rss_after = server.rss_kib()
        threads_checked = anyio.run(verify, server.endpoint)
        assert server.proc.poll() is None, server.output()
    total = sum(counts.values())
    assert errors == [], errors[:5]
    assert total > CLIENTS * 10, counts
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT_KIB, f"server RSS grew {growth} KiB"
    record(
        "load mcp http",
        clients=CLIENTS,
        seconds=round(SECONDS + warmup, 1),
        calls=total,
        calls_per_second=round(total / (elapsed + warmup), 1),
        by_tool=dict(sorted(counts.items())),
        unexpected_errors=0,
        appends_acknowledged=sum(acked.values()),
        threads_verified=threads_checked,
        lost=0,
        rss_kib_before=rss_before,
        rss_kib_after=rss_after,
        rss_growth_kib=growth,
    )
