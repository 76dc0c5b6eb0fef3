"""Tool errors a model can act on (issue #17), through the official MCP client: every tool with a
misspelt argument, a wrong type and an out-of-range value; a budget too small for one turn; a
missing or gone parent thread; messages that end their sentences."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from threadstore.server import build_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def call(client: Client, tool: str, args: dict[str, Any]) -> CallToolResult:
    return await client.call_tool(tool, args)


def assert_actionable(message: str, *needles: str) -> None:
    assert "pydantic" not in message and "validation error" not in message, message
    assert "_getArguments" not in message and "Arguments" not in message, message
    assert message.rstrip().endswith("Nothing was changed."), message
    for needle in needles:
        assert needle in message, (needle, message)


# (tool, a misspelt argument and its suggestion, a wrong type, an out-of-range value)
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], dict[str, Any]]] = [
    (
        "thread_create",
        {"tool_nmae": "x"},
        "did you mean tool_name?",
        {"initial_context": "a string"},
        {"tool_name": "x" * 201},
    ),
    (
        "thread_append",
        {"thread_id": "{tid}", "role": "user", "contnet": "x"},
        "did you mean content?",
        {"thread_id": "{tid}", "role": "user", "content": 5},
        {"thread_id": "{tid}", "role": "system", "content": "x"},
    ),
    (
        "thread_get",
        {"thread_idd": "{tid}"},
        "did you mean thread_id?",
        {"thread_id": "{tid}", "offset": "zero"},
        {"thread_id": "{tid}", "limit": 0},
    ),
    (
        "thread_history",
        {"thread_id": "{tid}", "max_token": 100},
        "did you mean max_tokens?",
        {"thread_id": "{tid}", "max_tokens": "lots"},
        {"thread_id": "{tid}", "max_tokens": 0},
    ),
    ("thread_list", {"limt": 5}, "did you mean limit?", {"cursor": 5}, {"limit": 201}),
    (
        "thread_delete",
        {"threadid": "{tid}"},
        "did you mean thread_id?",
        {"thread_id": ["{tid}"]},
        {"thread_id": "not-a-uuid"},
    ),
    ("store_info", {"verbose": True}, "unknown argument 'verbose'", {}, {}),
]


def _fill(args: dict[str, Any], tid: str) -> dict[str, Any]:
    def sub(v: Any) -> Any:
        if v == "{tid}":
            return tid
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return {k: sub(v) for k, v in args.items()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_every_tool_explains_bad_arguments(case: tuple[Any, ...]) -> None:
    tool, misspelt, suggestion, wrong_type, out_of_range = case
    async with Client(build_server(url="memory://")) as client:
        created = await call(client, "thread_create", {"tool_name": "t"})
        assert created.structured_content is not None
        tid = created.structured_content["thread_id"]
        result = await call(client, tool, _fill(misspelt, tid))
        assert result.is_error
        assert_actionable(text(result), suggestion, f"{tool} accepts:")
        for args in (wrong_type, out_of_range):
            if not args:
                continue
            result = await call(client, tool, _fill(args, tid))
            assert result.is_error, (tool, args)
            message = text(result)
            assert_actionable(message)
            assert " must be " in message or "expected a lowercase UUID4" in message, message
            named = [k for k in args if k in message]
            assert named, message  # names the argument
        # nothing was changed: the thread is still there with no turns
        view = await call(client, "thread_get", {"thread_id": tid})
        assert view.structured_content is not None
        assert view.structured_content["turn_count"] == 0


async def test_what_is_accepted_is_said() -> None:
    async with Client(build_server(url="memory://")) as client:
        created = await call(client, "thread_create", {})
        assert created.structured_content is not None
        tid = created.structured_content["thread_id"]
        role = text(await call(client, "thread_append", {"thread_id": tid, "role": "system",
                                                         "content": "x"}))  # fmt: skip
        assert "role must be 'user' or 'assistant'; got 'system'" in role
        budget = text(await call(client, "thread_history", {"thread_id": tid, "max_tokens": 0}))
        assert "max_tokens must be an integer from 1 to 1000000; got 0" in budget
        context = text(await call(client, "thread_create", {"initial_context": "abc"}))
        assert "initial_context must be a JSON object or null" in context


async def test_a_budget_too_small_for_one_turn_says_the_smallest_that_fits() -> None:
    async with Client(build_server(url="memory://")) as client:
        created = await call(client, "thread_create", {})
        assert created.structured_content is not None
        tid = created.structured_content["thread_id"]
        await call(client, "thread_append", {"thread_id": tid, "role": "user", "content": "hi"})
        small = await call(client, "thread_history", {"thread_id": tid, "max_tokens": 10})
        assert not small.is_error and small.structured_content is not None
        history = small.structured_content
        assert history["turns_included"] == 0 and history["text"] == ""
        note = history["note"]
        assert note.startswith("No turn fits in max_tokens=10")
        needed = int(note.split("at least ")[1].rstrip("."))
        fits = await call(client, "thread_history", {"thread_id": tid, "max_tokens": needed})
        assert fits.structured_content is not None
        assert fits.structured_content["turns_included"] == 1
        assert fits.structured_content["note"] is None


async def test_a_missing_parent_is_an_error_and_a_gone_parent_is_said() -> None:
    async with Client(build_server(url="memory://")) as client:
        ghost = str(uuid.uuid4())
        refused = await call(client, "thread_create", {"parent_thread_id": ghost})
        assert refused.is_error
        message = text(refused)
        assert f"parent_thread_id {ghost} was not found" in message
        assert "expire 3 hours after their last turn" in message
        assert message.endswith("Nothing was changed.")
        listed = await call(client, "thread_list", {})
        assert listed.structured_content is not None and listed.structured_content["threads"] == []

        parent = await call(client, "thread_create", {})
        assert parent.structured_content is not None
        pid = parent.structured_content["thread_id"]
        await call(client, "thread_append", {"thread_id": pid, "role": "user", "content": "old"})
        child = await call(client, "thread_create", {"parent_thread_id": pid})
        assert child.structured_content is not None
        cid = child.structured_content["thread_id"]
        await call(client, "thread_append", {"thread_id": cid, "role": "user", "content": "new"})
        await call(client, "thread_delete", {"thread_id": pid})
        result = await call(client, "thread_history", {"thread_id": cid, "max_tokens": 2000})
        history = result.structured_content
        assert history is not None
        line = f"Parent thread {pid} is gone (deleted or expired)"
        assert history["text"].count(line) == 1 and "old" not in history["text"]
        assert line in history["note"]


async def test_messages_end_their_sentences() -> None:
    async with Client(build_server(url="memory://")) as client:
        bad_id = text(await call(client, "thread_get", {"thread_id": "nope"}))
        assert "no upper case). Pass thread_id" in bad_id
        created = await call(client, "thread_create", {})
        assert created.structured_content is not None
        tid = created.structured_content["thread_id"]
        big = text(
            await call(
                client,
                "thread_append",
                {"thread_id": tid, "role": "user", "content": "x" * 1_100_000},
            )
        )
        assert "paths). Nothing was changed" in big
