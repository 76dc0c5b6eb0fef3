"""Bad input, through the Python API (hypothesis) and through the official MCP client.

Every bad thread id, role, content, name, file list, metadata or initial context must raise an
InvalidInput (InvalidThreadId for ids) with a message naming what is wrong, store nothing, and
leave every other thread as it was: after each attempt the whole store (every key, every list
item) is compared with a snapshot taken before.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_workers.figures import record
from threadstore import (
    AsyncThreadStore,
    InvalidInput,
    InvalidThreadId,
    MemoryStorage,
    Storage,
    ThreadStore,
    open_storage,
)

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
U = "6f1c6a3e-8d4b-4c1a-9e57-3b2a1c0d9e8f"


def _not_canonical(value: object) -> bool:
    return not (type(value) is str and CANONICAL.fullmatch(value))


UUID_VARIANTS = st.uuids(
    version=4
).flatmap(
    lambda u: st.sampled_from(
        [
            str(u).upper(),
            "{" + str(u) + "}",
            "urn:uuid:" + str(u),
            u.hex,
            str(u) + "\x00",
            "\x00" + str(u),
            " " + str(u),
            str(u) + "\n",
            str(u)[:-1],
            str(u) + "0",
            str(u).replace("-", "_"),
            str(u)[:14] + "1" + str(u)[15:],  # version nibble 1
            str(u)[:19] + "c" + str(u)[20:],  # variant nibble out of range
            str(u).replace("a", "\u0430"),  # Cyrillic a
            str(u).replace("-", "\u2010"),  # Unicode hyphen
            "\uff10" * 8 + str(u)[8:],  # fullwidth digits
        ]
    )
)
BAD_IDS = st.one_of(
    UUID_VARIANTS,
    st.uuids(version=1).map(str),
    st.sampled_from(
        [
            "",
            "../../etc/passwd",
            "..\\..\\windows",
            "/" + U,
            U + "/..",
            "thread:" + U,
            "*",
            "?",
            "[a-z]",
            "thread:*",
            U[:-1] + "*",
            U[:-1] + "?",
            "[" + U + "]",
            "x" * 10_240,
            U * 300,
            "%2e%2e%2f",
            "\ud800",
            U[:-1] + "\udfff",
            "NaN",
            "null",
        ]
    ),
    st.text(max_size=60),
    st.one_of(st.none(), st.integers(), st.binary(max_size=40), st.uuids(), st.lists(st.text())),
).filter(_not_canonical)

SURROGATE_TEXT = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=20),
    st.characters(categories=["Cs"]),
    st.text(max_size=20),
)
NON_STR = st.one_of(
    st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.lists(st.text(), max_size=3)
)
NON_JSON = st.one_of(
    st.sets(st.integers(), min_size=1, max_size=3),
    st.just(object()),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.binary(min_size=1, max_size=10),
    st.just(1j),
    st.just(uuid.uuid4()),
)
BAD_DICTS = st.one_of(
    st.dictionaries(st.text(max_size=5), NON_JSON, min_size=1, max_size=3),
    st.dictionaries(st.integers() | st.tuples(st.integers()) | st.none(), st.text(), min_size=1),
    st.builds(lambda n: {"nested": [{"deep": {"x": n}}]}, NON_JSON),
    st.builds(lambda s: {"big": "x" * (64 * 1024 + s)}, st.integers(0, 100)),
    st.lists(st.text(), max_size=3),
    st.text(max_size=10),
    st.integers(),
)
BAD_NAMES = st.one_of(
    st.sampled_from(["", " ", "\t\n", "n" * 201]), SURROGATE_TEXT, st.integers(), st.binary()
)
BAD_FILE_LISTS = st.one_of(
    st.text(min_size=1, max_size=10),  # a str, not a list
    st.lists(st.one_of(st.integers(), st.none(), st.just(""), st.just("f" * 4097)), min_size=1),
    st.lists(SURROGATE_TEXT, min_size=1, max_size=2),
    st.dictionaries(st.text(), st.text(), min_size=1),
)
BAD_TURN = st.one_of(
    st.tuples(
        st.just("role"), st.text(max_size=20).filter(lambda r: r not in ("user", "assistant"))
    ),
    st.tuples(st.just("role"), st.sampled_from(["User", "ASSISTANT", "system", "tool", " user"])),
    st.tuples(st.just("role"), NON_STR),
    st.tuples(st.just("content"), SURROGATE_TEXT),
    st.tuples(st.just("content"), NON_STR.filter(lambda v: not isinstance(v, str))),
    st.tuples(st.just("content"), st.integers(1_000_001, 1_000_100).map(lambda n: "c" * n)),
    st.tuples(st.just("metadata"), BAD_DICTS),
    st.tuples(st.just("files"), BAD_FILE_LISTS),
    st.tuples(st.just("images"), BAD_FILE_LISTS),
    st.tuples(st.sampled_from(["tool_name", "model_provider", "model_name"]), BAD_NAMES),
)
TALLY: dict[str, int] = {}


def _tally(what: str) -> None:
    TALLY[what] = TALLY.get(what, 0) + 1


def snapshot(storage: Storage) -> dict[str, Any]:
    """Every live key and its whole content."""
    out: dict[str, Any] = {}
    for key in storage.scan():
        out[key] = storage.list_range(key) if key.startswith("thread:") else storage.get(key)
    return out


@pytest.fixture
def world(any_url: str) -> Iterator[tuple[ThreadStore, list[str], dict[str, Any]]]:
    storage = open_storage(any_url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=20)
    tids = [store.create_thread("chat", {"n": i}) for i in range(3)]
    store.add_turn(tids[0], "user", "hello", files=["a.py"], metadata={"k": [1, 2]})
    store.add_turn(tids[1], "assistant", "ünïcødé 🧵")
    yield store, tids, snapshot(storage)
    storage.close()


def _examples(store: ThreadStore, memory: int, other: int) -> int:
    return memory if store.storage.kind == "memory" else other


FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
    ],
)


def test_bad_thread_ids(world: tuple[ThreadStore, list[str], dict[str, Any]]) -> None:
    store, _, before = world
    n = _examples(store, 600, 100)

    @settings(FUZZ, max_examples=n)
    @given(bad=BAD_IDS, op=st.integers(0, 6))
    def attempt(bad: Any, op: int) -> None:
        calls = [
            lambda: store.get_thread(bad),
            lambda: store.add_turn(bad, "user", "x"),
            lambda: store.delete_thread(bad),
            lambda: store.get_thread_chain(bad),
            lambda: store.build_history(bad, max_tokens=100),
            lambda: store.create_thread("chat", parent_thread_id=bad),
            lambda: store.add_turn(bad, "assistant", "y", files=["f"], metadata={"k": 1}),
        ]
        if bad is None and op == 5:
            return  # None means "no parent"
        with pytest.raises(InvalidThreadId) as info:
            calls[op]()
        assert "thread id" in str(info.value) or "parent_thread_id" in str(info.value)
        _tally(f"bad thread ids ({store.storage.kind})")

    attempt()
    assert snapshot(store.storage) == before


def test_bad_turns(world: tuple[ThreadStore, list[str], dict[str, Any]]) -> None:
    store, tids, before = world
    n = _examples(store, 600, 100)

    @settings(FUZZ, max_examples=n)
    @given(bad=BAD_TURN, which=st.integers(0, 2))
    def attempt(bad: tuple[str, Any], which: int) -> None:
        field, value = bad
        args: dict[str, Any] = {"role": "user", "content": "fine"}
        args[field] = value
        role, content = args.pop("role"), args.pop("content")
        with pytest.raises(InvalidInput) as info:
            store.add_turn(tids[which], role, content, **args)
        message = str(info.value)
        assert message
        assert field in message or "turn is" in message, message
        _tally(f"bad turns ({store.storage.kind})")

    attempt()
    assert snapshot(store.storage) == before


def test_bad_thread_creation(world: tuple[ThreadStore, list[str], dict[str, Any]]) -> None:
    store, _, before = world
    n = _examples(store, 300, 60)

    @settings(FUZZ, max_examples=n)
    @given(
        bad=st.one_of(
            st.tuples(st.just("tool_name"), BAD_NAMES),
            st.tuples(st.just("initial_context"), BAD_DICTS),
        )
    )
    def attempt(bad: tuple[str, Any]) -> None:
        field, value = bad
        args: dict[str, Any] = {"tool_name": "chat", field: value}
        with pytest.raises(InvalidInput, match=field):
            store.create_thread(**args)
        _tally(f"bad thread creation ({store.storage.kind})")

    attempt()
    assert snapshot(store.storage) == before


def test_fuzz_figures() -> None:
    if not TALLY:
        pytest.skip("nothing ran")
    record("fuzz api", inputs_tried=dict(sorted(TALLY.items())), stored=0, other_threads_changed=0)


@pytest.mark.parametrize("where", ["metadata", "initial_context"])
def test_deeply_nested_json_is_invalid_input(where: str) -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(5000):
        cursor.append([])
        cursor = cursor[0]
    store = ThreadStore(MemoryStorage(sweeper=False), ttl_seconds=60, max_turns=5)
    tid = store.create_thread("chat")
    if where == "metadata":
        with pytest.raises(InvalidInput):
            store.add_turn(tid, "user", "x", metadata={"d": deep})
    else:
        with pytest.raises(InvalidInput):
            store.create_thread("chat", {"d": deep})


# -- through the MCP client -----------------------------------------------------------------------
def _mcp_cases(tid: str) -> list[tuple[str, dict[str, Any], str]]:
    """(tool, arguments, a word the error must contain)."""
    ids = [
        tid.upper(), "{" + tid + "}", "urn:uuid:" + tid, tid.replace("-", ""),
        str(uuid.uuid1()), "../../etc/passwd", "*", "thread:*", "[a-f]*", "?" * 36,
        "x" * 10_240, tid + "\x00", "", " " + tid, tid[:-1] + "\u0430",
    ]  # fmt: skip
    cases: list[tuple[str, dict[str, Any], str]] = []
    for bad in ids:
        cases += [
            ("thread_append", {"thread_id": bad, "role": "user", "content": "x"}, "thread"),
            ("thread_get", {"thread_id": bad}, "thread"),
            ("thread_history", {"thread_id": bad, "max_tokens": 100}, "thread"),
            ("thread_delete", {"thread_id": bad}, "thread"),
            ("thread_create", {"tool_name": "t", "parent_thread_id": bad}, "parent"),
        ]
    for bad_id in (None, 42, ["list"], {"d": 1}, True):
        cases.append(("thread_get", {"thread_id": bad_id}, "thread_id"))
    base = {"thread_id": tid, "role": "user", "content": "fine"}
    turn_changes: list[tuple[dict[str, Any], str]] = [
        ({"role": "system"}, "role"),
        ({"role": "User"}, "role"),
        ({"role": ""}, "role"),
        ({"role": None}, "role"),
        ({"content": None}, "content"),
        ({"content": 12}, "content"),
        ({"content": ["a"]}, "content"),
        ({"content": "a\ud800b"}, "content"),
        ({"content": "c" * 1_000_100}, "maximum"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": "text"}, "metadata"),
        ({"metadata": {"big": "x" * 70_000}}, "metadata"),
        ({"files": "a.py"}, "files"),
        ({"files": [1, 2]}, "files"),
        ({"files": [""]}, "files"),
        ({"images": {"a": 1}}, "images"),
        ({"tool_name": ""}, "tool_name"),
        ({"model_name": "m" * 201}, "model_name"),
        ({"model_provider": 5}, "model_provider"),
    ]
    for change, word in turn_changes:
        cases.append(("thread_append", {**base, **change}, word))
    cases += [
        ("thread_create", {"tool_name": ""}, "tool_name"),
        ("thread_create", {"tool_name": "t" * 201}, "tool_name"),
        ("thread_create", {"tool_name": "t", "initial_context": [1]}, "initial_context"),
        ("thread_create", {"tool_name": "t", "initial_context": {"x": "y" * 70_000}}, "initial"),
        ("thread_get", {"thread_id": tid, "offset": -1}, "offset"),
        ("thread_history", {"thread_id": tid, "max_tokens": -5}, "max_tokens"),
        ("thread_list", {"limit": 0}, "limit"),
        ("thread_list", {"cursor": "not-a-cursor"}, "cursor"),
    ]
    return cases


def test_bad_input_through_the_mcp_client() -> None:
    from mcp import Client

    from threadstore.server import build_server

    storage = MemoryStorage(sweeper=False)
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=20)
    tried: list[str] = []

    async def main() -> None:
        async with Client(build_server(store), mode="legacy") as client:
            created = await client.call_tool("thread_create", {"tool_name": "fuzz"})
            assert not created.is_error
            tid = created.structured_content["thread_id"]  # type: ignore[index]
            ok = await client.call_tool(
                "thread_append", {"thread_id": tid, "role": "user", "content": "kept"}
            )
            assert not ok.is_error
            before = snapshot(storage)
            for tool, args, word in _mcp_cases(tid):
                result = await client.call_tool(tool, args)
                text = " ".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error, (tool, str(args)[:120], text[:200])
                assert word.lower() in text.lower(), (tool, str(args)[:120], text[:300])
                assert "Traceback" not in text
                tried.append(tool)
            assert snapshot(storage) == before
            got = await client.call_tool("thread_get", {"thread_id": tid})
            assert not got.is_error
            assert got.structured_content["turn_count"] == 1  # type: ignore[index]

    anyio.run(main)
    record("fuzz mcp client", inputs_tried=len(tried), is_error_every_time=True, stored=0)


def test_unknown_tool_argument_is_an_error() -> None:
    from mcp import Client

    from threadstore.server import build_server

    storage = MemoryStorage(sweeper=False)
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=20)

    async def main() -> None:
        async with Client(build_server(store), mode="legacy") as client:
            created = await client.call_tool("thread_create", {"tool_name": "t"})
            tid = created.structured_content["thread_id"]  # type: ignore[index]
            result = await client.call_tool(
                "thread_append",
                {"thread_id": tid, "role": "user", "content": "x", "metadta": {"k": 1}},
            )
            assert result.is_error
            got = await client.call_tool("thread_get", {"thread_id": tid})
            assert got.structured_content["turn_count"] == 0  # type: ignore[index]

    anyio.run(main)


def test_bad_input_over_stdio_json() -> None:
    """A few cases over the real JSON wire: the server as a subprocess (threadstore serve).
    (A lone surrogate cannot be sent this way: the official client refuses to encode it.)"""
    import sys

    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "threadstore.cli", "--url", "memory://", "serve", "--log-level", "ERROR"],
        env={"THREADSTORE_FALLBACK": "fail"},
    )
    count = 0

    async def main() -> None:
        nonlocal count
        with anyio.fail_after(60):
            await run()

    async def run() -> None:
        nonlocal count
        async with Client(params) as client:
            created = await client.call_tool("thread_create", {"tool_name": "t"})
            tid = created.structured_content["thread_id"]  # type: ignore[index]
            for args in (
                {"thread_id": tid + "\x00", "role": "user", "content": "x"},
                {"thread_id": "x" * 10_240, "role": "user", "content": "x"},
                {"thread_id": tid, "role": "robot", "content": "x"},
                {"thread_id": "../" + tid, "role": "user", "content": "x"},
                {"thread_id": tid, "role": "user", "content": "x", "metadata": [json.dumps({})]},
            ):
                result = await client.call_tool("thread_append", args)
                assert result.is_error, args
                count += 1
            got = await client.call_tool("thread_get", {"thread_id": tid})
            assert got.structured_content["turn_count"] == 0  # type: ignore[index]

    anyio.run(main)
    record("fuzz mcp stdio (JSON wire)", inputs_tried=count, stored=0)
