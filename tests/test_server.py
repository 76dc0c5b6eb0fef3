"""The MCP server, driven through the official MCP client: in-process for every tool's success
and error paths, and `threadstore serve` over stdio as two processes sharing one SQLite file."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from threadstore import AsyncThreadStore, MemoryStorage
from threadstore.server import TOOLS, build_server

pytestmark = pytest.mark.anyio

TOOL_NAMES = {
    "thread_create",
    "thread_append",
    "thread_get",
    "thread_history",
    "thread_list",
    "thread_delete",
    "store_info",
}
READ_ONLY = {"thread_get", "thread_history", "thread_list", "store_info"}
BAD_IDS = ["../etc/passwd", "*", str(uuid.uuid4()).upper(), ""]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def ok(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return text(result)


async def new_thread(client: Client, **args: Any) -> str:
    created = await ok(client, "thread_create", {"tool_name": "test", **args})
    thread_id: str = created["thread_id"]
    return thread_id


# -- the tool list ------------------------------------------------------------------------------
async def test_tools_are_listed_with_schemas_and_annotations() -> None:
    async with Client(build_server(url="memory://")) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOL_NAMES == {spec.name for spec in TOOLS}
    for name, tool in tools.items():
        assert tool.description
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        schema = tool.input_schema
        assert schema["type"] == "object"
        for prop, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{prop} has no description"
        hints = tool.annotations
        assert hints is not None
        assert hints.read_only_hint is (name in READ_ONLY)
        assert hints.destructive_hint is (name == "thread_delete")
        assert hints.open_world_hint is False
    assert tools["thread_delete"].annotations.idempotent_hint is True  # type: ignore[union-attr]
    append = tools["thread_append"].input_schema
    assert set(append["required"]) == {"thread_id", "role", "content"}
    assert append["properties"]["role"]["enum"] == ["user", "assistant"]
    history = tools["thread_history"].input_schema["properties"]["max_tokens"]
    assert (history["minimum"], history["maximum"]) == (1, 1_000_000)
    get = tools["thread_get"].input_schema["properties"]
    assert get["offset"]["default"] == 0 and get["limit"]["default"] == 50


# -- success paths ------------------------------------------------------------------------------
async def test_a_conversation_through_every_tool() -> None:
    async with Client(build_server(url="memory://", ttl_seconds=600, max_turns=10)) as client:
        created = await ok(
            client, "thread_create", {"tool_name": "review", "initial_context": {"pr": 6}}
        )
        tid = created["thread_id"]
        assert created["tool_name"] == "review"
        assert created["expires_in_seconds"] == 600 and created["max_turns"] == 10

        added = await ok(
            client,
            "thread_append",
            {
                "thread_id": tid,
                "role": "user",
                "content": "Please review cli.py",
                "files": ["cli.py"],
            },
        )
        assert added["thread_id"] == tid and added["role"] == "user" and added["tokens"] == 5
        await ok(
            client,
            "thread_append",
            {
                "thread_id": tid,
                "role": "assistant",
                "content": "Looks good.",
                "model_provider": "anthropic",
                "model_name": "claude",
                "metadata": {"score": 9},
            },
        )

        got = await ok(client, "thread_get", {"thread_id": tid})
        assert got["turn_count"] == 2 and got["next_offset"] is None
        assert got["initial_context"] == {"pr": 6}
        assert [t["role"] for t in got["turns"]] == ["user", "assistant"]
        assert got["turns"][0]["files"] == ["cli.py"]
        assert got["turns"][1]["metadata"] == {"score": 9}

        history = await ok(client, "thread_history", {"thread_id": tid, "max_tokens": 1000})
        assert history["turns_included"] == 2 and history["turns_omitted"] == 0
        assert "Please review cli.py" in history["text"] and history["files"] == ["cli.py"]
        assert history["tokens"] <= 1000

        listed = await ok(client, "thread_list", {})
        assert [t["thread_id"] for t in listed["threads"]] == [tid]
        assert listed["threads"][0]["turn_count"] == 2 and listed["next_cursor"] is None

        info = await ok(client, "store_info", {})
        assert info["backend"] == "memory" and info["url"] == "memory://"
        assert info["threads"] == 1 and info["max_turns"] == 10
        assert info["ttl_hours"] == pytest.approx(600 / 3600)
        assert info["namespace"] == "threadstore" and "keys" in info["stats"]

        assert await ok(client, "thread_delete", {"thread_id": tid}) == {
            "thread_id": tid,
            "deleted": True,
        }
        again = await ok(client, "thread_delete", {"thread_id": tid})
        assert again["deleted"] is False
        assert (await ok(client, "store_info", {}))["threads"] == 0


async def test_thread_get_pages_turns() -> None:
    async with Client(build_server(url="memory://")) as client:
        tid = await new_thread(client)
        for n in range(5):
            await ok(
                client, "thread_append", {"thread_id": tid, "role": "user", "content": f"m{n}"}
            )
        page = await ok(client, "thread_get", {"thread_id": tid, "offset": 0, "limit": 2})
        assert [t["content"] for t in page["turns"]] == ["m0", "m1"]
        assert page["turn_count"] == 5 and page["next_offset"] == 2
        page = await ok(client, "thread_get", {"thread_id": tid, "offset": 4, "limit": 2})
        assert [t["content"] for t in page["turns"]] == ["m4"] and page["next_offset"] is None
        page = await ok(client, "thread_get", {"thread_id": tid, "offset": 9})
        assert page["turns"] == [] and page["turn_count"] == 5


async def test_thread_list_pages_with_a_cursor() -> None:
    async with Client(build_server(url="memory://")) as client:
        ids = {await new_thread(client) for _ in range(3)}
        seen: list[str] = []
        cursor = None
        for _ in range(3):
            args = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
            page = await ok(client, "thread_list", args)
            seen += [t["thread_id"] for t in page["threads"]]
            cursor = page["next_cursor"]
        assert cursor is None and set(seen) == ids and len(seen) == 3


async def test_a_full_thread_continues_in_a_child() -> None:
    async with Client(build_server(url="memory://", max_turns=2)) as client:
        parent = await new_thread(client)
        for role in ("user", "assistant"):
            await ok(client, "thread_append", {"thread_id": parent, "role": role, "content": role})
        message = await error(
            client, "thread_append", {"thread_id": parent, "role": "user", "content": "more"}
        )
        assert "maximum of 2 turns" in message
        assert message.count(f"parent_thread_id={parent}") == 1  # the advice, once
        assert "thread_history includes this one's turns" in message
        child = await new_thread(client, parent_thread_id=parent)
        await ok(client, "thread_append", {"thread_id": child, "role": "user", "content": "more"})
        history = await ok(client, "thread_history", {"thread_id": child, "max_tokens": 5000})
        assert history["thread_ids"] == [parent, child] and history["turns_included"] == 3


# -- error paths --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_IDS)
async def test_invalid_ids_are_refused_with_the_remedy(bad: str) -> None:
    calls = [
        ("thread_get", {"thread_id": bad}),
        ("thread_append", {"thread_id": bad, "role": "user", "content": "x"}),
        ("thread_history", {"thread_id": bad, "max_tokens": 100}),
        ("thread_delete", {"thread_id": bad}),
        ("thread_create", {"parent_thread_id": bad}),
    ]
    async with Client(build_server(url="memory://")) as client:
        for tool, args in calls:
            message = await error(client, tool, args)
            assert "invalid" in message and "lowercase UUID4" in message, (tool, message)
            assert "exactly as thread_create returned it" in message, (tool, message)


async def test_unknown_thread_says_not_found_with_the_timeout_and_what_to_do() -> None:
    missing = str(uuid.uuid4())
    async with Client(build_server(url="memory://", ttl_seconds=7200)) as client:
        for tool, args in [
            ("thread_get", {"thread_id": missing}),
            ("thread_append", {"thread_id": missing, "role": "user", "content": "x"}),
            ("thread_history", {"thread_id": missing, "max_tokens": 100}),
        ]:
            message = await error(client, tool, args)
            assert f"thread {missing} was not found" in message
            assert "expire 2 hours after their last turn" in message
            assert "thread_create" in message


async def test_an_expired_thread_is_not_found() -> None:
    async with Client(build_server(url="memory://", ttl_seconds=0.3)) as client:
        tid = await new_thread(client)
        await ok(client, "thread_append", {"thread_id": tid, "role": "user", "content": "hi"})
        await anyio.sleep(0.5)
        message = await error(
            client, "thread_append", {"thread_id": tid, "role": "user", "content": "x"}
        )
        assert "was not found: it never existed or it expired" in message
        assert "thread_create" in message
        assert "not found" in await error(client, "thread_get", {"thread_id": tid})


async def test_oversized_content_is_refused() -> None:
    async with Client(build_server(url="memory://")) as client:
        tid = await new_thread(client)
        message = await error(
            client, "thread_append", {"thread_id": tid, "role": "user", "content": "x" * 1_000_001}
        )
        assert "the maximum is 1000000" in message and "Nothing was changed" in message
        too_big = {"blob": "y" * 70_000}
        message = await error(client, "thread_create", {"initial_context": too_big})
        assert "initial_context" in message and "maximum" in message
        assert (await ok(client, "thread_get", {"thread_id": tid}))["turn_count"] == 0


async def test_argument_errors_name_the_argument() -> None:
    async with Client(build_server(url="memory://")) as client:
        tid = await new_thread(client)
        message = await error(
            client, "thread_append", {"thread_id": tid, "role": "system", "content": "x"}
        )
        assert "role" in message and "'user' or 'assistant'" in message
        message = await error(client, "thread_append", {"thread_id": tid, "role": "user"})
        assert "content is required" in message and "Nothing was changed." in message
        for budget in (0, 1_000_001):
            message = await error(
                client, "thread_history", {"thread_id": tid, "max_tokens": budget}
            )
            assert "max_tokens" in message
        message = await error(client, "thread_get", {"thread_id": tid, "limit": 501})
        assert "limit" in message
        message = await error(client, "thread_list", {"cursor": "not-a-cursor"})
        assert "invalid cursor" in message and "next_cursor" in message


async def test_an_unreachable_store_says_retry_later() -> None:
    storage = MemoryStorage()
    store = AsyncThreadStore(storage, ttl_seconds=60, max_turns=5)
    storage.close()  # every later operation raises StorageUnavailable
    async with Client(build_server(store)) as client:
        message = await error(client, "thread_create", {})
        assert "closed" in message and "retry later" in message and "threadstore doctor" in message


async def test_damaged_data_is_reported_per_thread() -> None:
    storage = MemoryStorage()
    tid = str(uuid.uuid4())
    storage.list_create(f"thread:{tid}", 60, "{not json")
    try:
        async with Client(
            build_server(AsyncThreadStore(storage, ttl_seconds=60, max_turns=5))
        ) as c:
            message = await error(c, "thread_get", {"thread_id": tid})
            assert f"thread {tid}" in message and "cannot be decoded" in message
            assert "damaged" in message and "thread_delete" in message
            assert (await ok(c, "thread_delete", {"thread_id": tid}))["deleted"] is True
    finally:
        storage.close()


async def test_a_store_passed_in_is_left_open() -> None:
    storage = MemoryStorage()
    store = AsyncThreadStore(storage, ttl_seconds=60, max_turns=5)
    async with Client(build_server(store)) as client:
        tid = await new_thread(client)
    assert await store.get_thread(tid) is not None
    storage.close()


async def test_the_lifespan_opens_and_closes_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/life.db"
    async with Client(build_server(url=url)) as client:
        tid = await new_thread(client)
        assert (await ok(client, "store_info", {}))["backend"] == "sqlite"
    async with Client(build_server(url=url)) as client:  # a fresh store on the same file
        assert (await ok(client, "thread_get", {"thread_id": tid}))["turn_count"] == 0


async def test_the_default_backend_is_the_state_directory_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    async with Client(build_server()) as client:
        info = await ok(client, "store_info", {})
    assert info["backend"] == "sqlite"
    assert info["url"] == f"sqlite:///{tmp_path}/threadstore/threads.db"


# -- stdio: `threadstore serve` as separate processes on one SQLite file ------------------------
def serve_params(db: Path, home: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "threadstore.cli", "serve", "--log-level", "WARNING"],
        env={
            "THREADSTORE_URL": f"sqlite:///{db}",
            "HOME": str(home),
            "THREADSTORE_FALLBACK": "fail",
        },
    )


async def test_a_thread_continues_in_a_second_server_process(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    params = serve_params(db, tmp_path)
    started = time.monotonic()
    async with Client(params) as first:
        tid = await new_thread(first, tool_name="stdio-test")
        await ok(first, "thread_append", {"thread_id": tid, "role": "user", "content": "first"})
        info = await ok(first, "store_info", {})
        assert info["backend"] == "sqlite" and info["url"] == f"sqlite:///{db}"
    assert db.exists()

    async with Client(params) as second:  # a new process: only the file is shared
        await ok(
            second, "thread_append", {"thread_id": tid, "role": "assistant", "content": "second"}
        )
        got = await ok(second, "thread_get", {"thread_id": tid})
        assert [t["content"] for t in got["turns"]] == ["first", "second"]
        assert got["tool_name"] == "stdio-test"
        history = await ok(second, "thread_history", {"thread_id": tid, "max_tokens": 500})
        assert history["turns_included"] == 2
        listed = await ok(second, "thread_list", {})
        assert [t["thread_id"] for t in listed["threads"]] == [tid]
    assert time.monotonic() - started < 30
