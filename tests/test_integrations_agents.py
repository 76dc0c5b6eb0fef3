"""ThreadstoreSession against the OpenAI Agents SDK's own session test behaviours, on every
backend (tests/memory/test_session.py, test_session_limit.py and the extension sessions' tests
of the SDK repository, re-expressed), plus the Runner with the SDK's ScriptedModel (no network)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents", reason="openai-agents not installed (pip install '.[agents]')")
from agents import (
    Agent,
    RunConfig,
    Runner,
    SessionSettings,
    set_tracing_disabled,
)
from agents.memory import Session, SessionABC
from agents.testing import ScriptedModel, assistant_message

from threadstore import (
    InvalidInput,
    Storage,
    ThreadFull,
    ThreadStore,
    open_storage,
)
from threadstore._ids import check_thread_id, thread_key
from threadstore.integrations.agents import ThreadstoreSession, session_thread_id

pytestmark = pytest.mark.anyio
set_tracing_disabled(True)  # no trace export: these tests never touch the network

Factory = Callable[..., ThreadstoreSession]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def storage(any_url: str) -> Iterator[Storage]:
    store = open_storage(any_url, fallback="fail")
    yield store
    store.close()


@pytest.fixture
def make(storage: Storage) -> Factory:
    """Sessions sharing one store of the backend under test."""

    def factory(session_id: str = "s1", **kwargs: Any) -> ThreadstoreSession:
        kwargs.setdefault("ttl_seconds", 600)
        return ThreadstoreSession(session_id, store=storage, **kwargs)

    return factory


@pytest.fixture
async def session(make: Factory) -> AsyncIterator[ThreadstoreSession]:
    s = make()
    yield s
    s.close()


def msgs(*contents: str) -> list[Any]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": c}
        for i, c in enumerate(contents)
    ]


# -- the protocol --------------------------------------------------------------------------------
def test_is_an_sdk_session(make: Factory) -> None:
    s = make()
    assert isinstance(s, SessionABC)
    assert isinstance(s, Session)
    assert s.session_id == "s1"
    assert check_thread_id(s.thread_id) == session_thread_id("s1")


async def test_direct_ops(session: ThreadstoreSession) -> None:
    await session.add_items(msgs("Hello", "Hi there!"))
    got = await session.get_items()
    assert [i.get("content") for i in got] == ["Hello", "Hi there!"]
    popped = await session.pop_item()
    assert popped == {"role": "assistant", "content": "Hi there!"}
    assert await session.get_items() == msgs("Hello")
    await session.clear_session()
    assert await session.get_items() == []
    await session.add_items(msgs("again"))  # a cleared session is usable
    assert await session.get_items() == msgs("again")


async def test_pop_item_order_and_empty(session: ThreadstoreSession) -> None:
    assert await session.pop_item() is None
    await session.add_items(msgs("Hello", "Hi there!", "How are you?"))
    assert (await session.pop_item()) == {"role": "user", "content": "How are you?"}
    assert [i.get("content") for i in await session.get_items()] == ["Hello", "Hi there!"]
    assert (await session.pop_item()) == {"role": "assistant", "content": "Hi there!"}
    assert (await session.pop_item()) == {"role": "user", "content": "Hello"}
    assert await session.pop_item() is None
    assert await session.get_items() == []


async def test_sessions_are_isolated(make: Factory) -> None:
    one, two = make("session_1"), make("session_2")
    await one.add_items(msgs("Session 1 message"))
    await two.add_items(msgs("Session 2 message 1", "Session 2 message 2"))
    assert (await two.pop_item()) == {"role": "assistant", "content": "Session 2 message 2"}
    assert await one.get_items() == msgs("Session 1 message")
    assert await two.get_items() == msgs("Session 2 message 1")
    await one.clear_session()
    assert await two.get_items() == msgs("Session 2 message 1")


async def test_get_items_with_limit(session: ThreadstoreSession) -> None:
    await session.add_items(msgs("1", "2", "3", "4"))
    assert [i["content"] for i in await session.get_items(limit=2)] == ["3", "4"]  # type: ignore[typeddict-item]
    assert len(await session.get_items()) == 4
    assert len(await session.get_items(limit=10)) == 4
    assert await session.get_items(limit=0) == []
    assert len(await session.get_items(limit=-1)) == 4  # as SQLiteSession: negative means all
    await session.clear_session()
    assert await session.get_items(limit=3) == []


async def test_session_settings(make: Factory) -> None:
    assert make().session_settings == SessionSettings()
    assert make(session_settings={"limit": 5}).session_settings == SessionSettings(limit=5)
    s = make("limited", session_settings=SessionSettings(limit=3))
    await s.add_items([{"role": "user", "content": f"Message {i}"} for i in range(10)])
    assert [i["content"] for i in await s.get_items()] == ["Message 7", "Message 8", "Message 9"]  # type: ignore[typeddict-item]
    assert [i["content"] for i in await s.get_items(limit=2)] == ["Message 8", "Message 9"]  # type: ignore[typeddict-item]
    s.session_settings = SessionSettings(limit=1)  # assigned later: read at each call
    assert [i["content"] for i in await s.get_items()] == ["Message 9"]  # type: ignore[typeddict-item]
    s.session_settings = None
    assert len(await s.get_items()) == 10


async def test_add_empty_items_list(session: ThreadstoreSession) -> None:
    await session.add_items([])
    assert await session.get_items() == []
    assert not session.storage.exists(thread_key(session.thread_id))


ITEMS: list[Any] = [
    {"role": "user", "content": "こんにちは"},
    {"role": "assistant", "content": "😊👍"},
    {"role": "user", "content": "Привет"},
    {"role": "user", "content": "O'Reilly"},
    {"role": "assistant", "content": '{"nested": "json"}'},
    {"role": "user", "content": 'Quote: "Hello world"'},
    {"role": "assistant", "content": "Line1\nLine2\tTabbed"},
    {"role": "assistant", "content": "Robert'); DROP TABLE students;--"},
    {"role": "user", "content": "\\n\\t\\r Special escapes"},
    {"role": "user", "content": "null"},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"P"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {
        "zeta": 1,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "x", "annotations": [], "n": 1.5e300}],
        "alpha": None,
        "big": 10**30,
        "f": 1.0,
    },
]


async def test_items_come_back_exactly(session: ThreadstoreSession) -> None:
    await session.add_items(ITEMS)
    got = await session.get_items()
    assert got == ITEMS
    # nothing added, removed or normalised: same keys in the same order, same number types
    assert [json.dumps(i) for i in got] == [json.dumps(i) for i in ITEMS]
    assert json.dumps(await session.pop_item()) == json.dumps(ITEMS[-1])


@pytest.mark.parametrize(
    "bad", [{"d": {1, 2}}, {"t": (1, 2)}, {"n": float("nan")}, {1: "x"}, "text", None]
)
async def test_add_items_is_all_or_nothing(session: ThreadstoreSession, bad: Any) -> None:
    await session.add_items(msgs("before"))
    with pytest.raises(InvalidInput, match=r"items\[1\]"):
        await session.add_items([{"role": "user", "content": "ok"}, bad, {"role": "user"}])
    assert await session.get_items() == msgs("before")


async def test_each_memory_session_starts_empty() -> None:
    one = ThreadstoreSession("same", url="memory://")
    await one.add_items(msgs("hello"))
    two = ThreadstoreSession("same", url="memory://")
    assert await two.get_items() == []
    default = ThreadstoreSession("same")  # no url, no store: a new store from the environment
    assert await default.get_items() == []
    for s in (one, two, default):
        s.close()


async def test_closed_session_refuses(tmp_path: Path) -> None:
    s = ThreadstoreSession("c", url=f"sqlite:///{tmp_path}/s.db")
    await s.add_items(msgs("x"))
    await s.aclose()
    s.close()  # idempotent
    for call in (
        s.get_items,
        lambda: s.get_items(limit=0),
        lambda: s.add_items([]),
        lambda: s.add_items(msgs("y")),
        s.pop_item,
        s.clear_session,
    ):
        with pytest.raises(RuntimeError, match="ThreadstoreSession is closed"):
            await call()


def test_bad_arguments(storage: Storage) -> None:
    with pytest.raises(InvalidInput, match="session_id"):
        ThreadstoreSession("", store=storage)
    with pytest.raises(InvalidInput, match="not both"):
        ThreadstoreSession("s", url="memory://", store=storage)
    with pytest.raises(InvalidInput, match="max_items"):
        ThreadstoreSession("s", store=storage, max_items=0)
    with pytest.raises(InvalidInput, match="ttl"):
        ThreadstoreSession("s", store=storage, ttl_seconds=-1)
    with pytest.raises(InvalidInput, match="store"):
        ThreadstoreSession("s", store="memory://")  # type: ignore[arg-type]


# -- expiry, length, visibility ----------------------------------------------------------------
async def test_expiry_is_refreshed_on_every_write(make: Factory) -> None:
    s = make(ttl_seconds=300)
    key = thread_key(s.thread_id)
    await s.add_items(msgs("a", "b"))
    left = s.storage.ttl(key)
    assert left is not None and 290 < left <= 300
    for write in (lambda: s.add_items(msgs("c")), s.pop_item):
        s.storage.expire(key, 5)
        await write()
        left = s.storage.ttl(key)
        assert left is not None and 290 < left <= 300


async def test_sessions_are_not_bounded_by_the_turn_limit(make: Factory) -> None:
    s = make("long")
    items = [{"role": "user", "content": str(i)} for i in range(180)]
    for n in range(0, 180, 60):
        await s.add_items(items[n : n + 60])
    assert await s.get_items() == items
    assert await s.get_items(limit=3) == items[-3:]
    bounded = make("bounded", max_items=5)
    await bounded.add_items(items[:4])
    with pytest.raises(ThreadFull, match="max_items"):
        await bounded.add_items(items[4:6])
    assert await bounded.get_items() == items[:4]


async def test_visible_as_a_thread(make: Factory) -> None:
    s = make("visible")
    await s.add_items(ITEMS[:3] + ITEMS[10:12])
    store = ThreadStore(s.storage, ttl_seconds=600, max_turns=1000)
    thread = store.get_thread(s.thread_id)
    assert thread is not None
    assert thread.tool_name == "openai-agents"
    assert thread.initial_context == {"session_id": "visible"}
    assert [t.role for t in thread.turns] == ["user", "assistant", "user", "assistant", "user"]
    assert [json.loads(t.content) for t in thread.turns] == ITEMS[:3] + ITEMS[10:12]
    assert s.thread_id in [t.thread_id for t in store.list_threads().threads]
    # a turn added by another client (an MCP tool, the library) reads as a message item
    store.add_turn(s.thread_id, "user", "a note from the MCP side")
    got = await s.get_items(limit=1)
    assert got == [{"role": "user", "content": "a note from the MCP side"}]
    assert "\n" not in "".join(store.export_threads())


def test_cli_shows_a_session(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    s = ThreadstoreSession("cli-visible", url=url)
    asyncio.run(s.add_items(msgs("hello from the agent")))
    s.close()
    cli = [sys.executable, "-m", "threadstore.cli", "--url", url]
    shown = subprocess.run([*cli, "show", s.thread_id], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "hello from the agent" in shown.stdout
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, timeout=60)
    assert s.thread_id in listed.stdout


# -- concurrency --------------------------------------------------------------------------------
async def test_concurrent_add_items_in_one_loop(session: ThreadstoreSession) -> None:
    async def add(start: int) -> None:
        await session.add_items(
            [{"role": "user", "content": f"Message {start + i}"} for i in range(5)]
        )

    await asyncio.gather(add(0), add(5), add(10))
    contents = [i["content"] for i in await session.get_items()]  # type: ignore[typeddict-item]
    assert sorted(contents) == sorted(f"Message {i}" for i in range(15))
    for start in (0, 5, 10):  # each call's items contiguous and in order
        at = contents.index(f"Message {start}")
        assert contents[at : at + 5] == [f"Message {start + i}" for i in range(5)]


def test_one_session_from_several_threads_and_loops(make: Factory) -> None:
    s = make("threads")
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(10):
                asyncio.run(s.add_items([{"role": "user", "content": f"{w}:{i}"}]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = asyncio.run(s.get_items())
    assert sorted(i["content"] for i in got) == sorted(
        f"{w}:{i}" for w in range(4) for i in range(10)
    )  # type: ignore[typeddict-item]


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from threadstore.integrations.agents import ThreadstoreSession

    async def main(url, worker):
        session = ThreadstoreSession("shared", url=url, ttl_seconds=600)
        for b in range(15):
            await session.add_items(
                [{"role": "user", "content": f"{worker}:{b}:{j}"} for j in range(4)]
            )
        await session.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_processes_add_items_concurrently(shared_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, shared_url, str(w)]) for w in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    s = ThreadstoreSession("shared", url=shared_url)
    contents = [i["content"] for i in asyncio.run(s.get_items())]  # type: ignore[typeddict-item]
    s.close()
    expected = [f"{w}:{b}:{j}" for w in range(3) for b in range(15) for j in range(4)]
    assert sorted(contents) == sorted(expected)  # nothing lost, nothing doubled
    for w in range(3):
        for b in range(15):  # no call's items interleaved with another's
            at = contents.index(f"{w}:{b}:0")
            assert contents[at : at + 4] == [f"{w}:{b}:{j}" for j in range(4)]


# -- the Runner with a scripted model (no network) ---------------------------------------------
def _run_sync(agent: Agent[Any], text: str, **kwargs: Any) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, text, **kwargs)
    finally:
        loop.close()


async def _run(method: str, agent: Agent[Any], text: str, **kwargs: Any) -> Any:
    if method == "run":
        return await Runner.run(agent, text, **kwargs)
    if method == "run_sync":  # its own event loop in another thread, as the SDK's tests do
        return await asyncio.to_thread(_run_sync, agent, text, **kwargs)
    result = Runner.run_streamed(agent, text, **kwargs)
    async for _ in result.stream_events():
        pass
    return result


@pytest.mark.parametrize("method", ["run", "run_sync", "run_streamed"])
async def test_runner_second_run_sees_the_first(make: Factory, method: str) -> None:
    session = make(f"runner-{method}")
    model = ScriptedModel()
    agent = Agent(name="test", model=model)
    model.enqueue([assistant_message("San Francisco")])
    first = await _run(method, agent, "What city is the Golden Gate Bridge in?", session=session)
    assert first.final_output == "San Francisco"
    model.enqueue([assistant_message("California")])
    second = await _run(method, agent, "What state is it in?", session=session)
    assert second.final_output == "California"
    seen = model.calls[-1].input
    assert isinstance(seen, list) and len(seen) == 3
    assert seen[0] == {"role": "user", "content": "What city is the Golden Gate Bridge in?"}
    assert seen[-1] == {"role": "user", "content": "What state is it in?"}
    assert len(await session.get_items()) == 4


async def test_runner_sessions_are_isolated_and_limit_overrides(make: Factory) -> None:
    cats, dogs = make("cats"), make("dogs")
    model = ScriptedModel()
    agent = Agent(name="test", model=model)
    for reply, s in (
        ("Reply 1", cats),
        ("I like dogs", dogs),
        ("Reply 2", cats),
        ("Reply 3", cats),
    ):
        model.enqueue([assistant_message(reply)])
        await Runner.run(agent, f"to {s.session_id}: {reply}", session=s)
    assert len(await cats.get_items()) == 6
    model.enqueue([assistant_message("Reply 4")])
    await Runner.run(
        agent,
        "Message 4",
        session=cats,
        run_config=RunConfig(session_settings=SessionSettings(limit=2)),
    )
    seen = model.calls[-1].input
    assert isinstance(seen, list) and len(seen) == 3
    assert seen[0] == {"role": "user", "content": "to cats: Reply 3"}
    assert "dogs" not in json.dumps(seen)


async def test_damaged_item_is_corrupt_data(session: ThreadstoreSession) -> None:
    from threadstore import CorruptData

    await session.add_items(msgs("fine"))
    key = thread_key(session.thread_id)
    turn = '{"role":"user","content":"{not json","tool_name":"openai-agents"}'
    session.storage.list_append(key, turn, max_items=100, ttl_seconds=60)
    with pytest.raises(CorruptData, match="session 's1'"):
        await session.get_items()
    with pytest.raises(CorruptData):
        await session.pop_item()  # the damaged item is gone; the rest reads again
    assert await session.get_items() == msgs("fine")
