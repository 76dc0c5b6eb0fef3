"""examples/fastmcp_server.py through FastMCP's own clients: the in-process client across a
server restart, and two stdio server processes sharing one store."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastmcp", reason="fastmcp not installed (pip install fastmcp)")
pytest.importorskip("key_value.aio", reason="py-key-value-aio not installed ('.[keyvalue]')")
from fastmcp import Client
from fastmcp.client.transports import PythonStdioTransport

pytestmark = pytest.mark.anyio
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastmcp_server.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastmcp_server_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _call(client: Client[Any], tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error
    return result.structured_content


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    example = _example()
    server, store = example.build_server(url)
    async with Client(server) as client:
        await _call(client, "remember", key="plan", text="ship it")
        await _call(client, "remember", key="brief", text="gone soon", ttl_seconds=0.001)
    await store.close()

    server, store = example.build_server(url)  # a new server on the same file: a restart
    async with Client(server) as client:
        got = await _call(client, "recall", key="plan")
        assert got["found"] is True
        assert got["note"]["text"] == "ship it"
        assert got["expires_in_seconds"] is None
        assert (await _call(client, "recall", key="brief"))["found"] is False
    await store.close()


async def test_two_server_processes_share_state(shared_url: str, tmp_path: Path) -> None:
    def spawn() -> Client[Any]:
        transport = PythonStdioTransport(
            EXAMPLE, args=["--url", shared_url], python_cmd=sys.executable, cwd=str(tmp_path)
        )
        return Client(transport)

    async with spawn() as a, spawn() as b:
        wrote = await _call(a, "remember", key="from-a", text="hello from A")
        got = await _call(b, "recall", key="from-a")
        assert got["note"] == wrote
        await _call(b, "remember", key="from-b", text="hello from B")
        back = await _call(a, "recall", key="from-b")
        assert back["note"]["text"] == "hello from B"
        assert back["note"]["written_by_pid"] != wrote["written_by_pid"]  # two processes
