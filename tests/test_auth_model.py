"""Hypothesis-generated sequences of tool calls by random principals (two ordinary, one admin)
over real HTTP, checked after every call against a model of who owns what: zero violations.

Checked for every call: success exactly when the model says the caller may see the thread; a
refusal reads exactly like the answer for an id that never existed; lists, counts and history
chains hold only threads the caller may see."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from auth_support import serving, session, text
from threadstore import AsyncThreadStore, MemoryStorage
from threadstore._auth import ThreadstoreVerifier, parse_tokens
from threadstore.server import ServerAuth

TOKENS = {
    "alice": "alice-model-0123456789abcdef0123456789",
    "bob": "bob-model-0123456789abcdef0123456789ab",
    "root": "root-model-0123456789abcdef0123456789a",
}
ADMINS = {"root"}
PRINCIPALS = sorted(TOKENS)


@dataclass
class Server:
    url: str
    storage: MemoryStorage


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    lines = [f"{name} {token} {'admin' * (name in ADMINS)}" for name, token in TOKENS.items()]
    auth = ServerAuth(ThreadstoreVerifier(parse_tokens(lines), None))
    storage = MemoryStorage()
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=1000)
    with serving(store, auth) as url:
        yield Server(url, storage)
    storage.close()


@dataclass
class ModelThread:
    thread_id: str
    owner: str
    parent: str | None
    alive: bool = True
    turns: int = 0


@dataclass
class Model:
    threads: list[ModelThread] = field(default_factory=list)

    def by_id(self, thread_id: str) -> ModelThread | None:
        return next((t for t in self.threads if t.thread_id == thread_id), None)

    def visible(self, who: str, thread: ModelThread | None) -> bool:
        return thread is not None and thread.alive and (who in ADMINS or thread.owner == who)

    def visible_ids(self, who: str) -> set[str]:
        return {t.thread_id for t in self.threads if self.visible(who, t)}

    def chain(self, who: str, thread_id: str) -> list[str]:
        ids: list[str] = []
        current: str | None = thread_id
        while current is not None and current not in ids:
            thread = self.by_id(current)
            if not self.visible(who, thread):
                break
            assert thread is not None
            ids.append(current)
            current = thread.parent
        return ids[::-1]


Step = tuple[str, str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(PRINCIPALS),
        st.sampled_from(["create", "child", "append", "get", "history", "delete", "list", "info"]),
        st.integers(min_value=0, max_value=7),
    ),
    min_size=1,
    max_size=25,
)


def target(model: Model, index: int) -> str:
    """A known thread (any owner, maybe deleted) or, past the end, an id that never existed."""
    if index < len(model.threads):
        return model.threads[index].thread_id
    return str(uuid.uuid4())


async def call(client: Client, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        return False, text(result)
    return True, result.structured_content


async def refusal_matches_missing(
    client: Client, tool: str, args: dict[str, Any], key: str, message: str
) -> None:
    """The refusal for args[key] reads exactly as the answer for an id that never existed."""
    refused_id = args[key]
    missing = str(uuid.uuid4())
    ok, missing_message = await call(client, tool, {**args, key: missing})
    assert not ok
    assert message.replace(refused_id, "<id>") == missing_message.replace(missing, "<id>")


async def run(url: str, plan: list[Step]) -> None:
    model = Model()
    async with (
        session(url, TOKENS["alice"]) as alice,
        session(url, TOKENS["bob"]) as bob,
        session(url, TOKENS["root"]) as root,
    ):
        clients = {"alice": alice, "bob": bob, "root": root}
        for who, op, index in plan:
            client = clients[who]
            if op == "create":
                ok, out = await call(client, "thread_create", {})
                assert ok, out
                model.threads.append(ModelThread(out["thread_id"], who, None))
            elif op == "child":
                parent = target(model, index)
                args = {"parent_thread_id": parent}
                ok, out = await call(client, "thread_create", args)
                expected = model.visible(who, model.by_id(parent))
                if who in ADMINS and ok and not expected:
                    expected = True  # an admin's store may not check that a parent exists
                assert ok == expected, (who, op, out)
                if ok:
                    model.threads.append(ModelThread(out["thread_id"], who, parent))
                else:
                    await refusal_matches_missing(
                        client, "thread_create", args, "parent_thread_id", out
                    )
            elif op in ("append", "get", "history"):
                tid = target(model, index)
                thread = model.by_id(tid)
                tool, args = {
                    "append": ("thread_append", {"thread_id": tid, "role": "user", "content": "x"}),
                    "get": ("thread_get", {"thread_id": tid}),
                    "history": ("thread_history", {"thread_id": tid, "max_tokens": 100_000}),
                }[op]
                ok, out = await call(client, tool, args)
                assert ok == model.visible(who, thread), (who, op, out)
                if not ok:
                    await refusal_matches_missing(client, tool, args, "thread_id", out)
                    continue
                assert thread is not None
                if op == "append":
                    thread.turns += 1
                elif op == "get":
                    assert out["turn_count"] == thread.turns
                else:
                    assert set(out["thread_ids"]) <= model.visible_ids(who)
                    assert set(out["thread_ids"]) <= set(model.chain(who, tid))
            elif op == "delete":
                tid = target(model, index)
                thread = model.by_id(tid)
                ok, out = await call(client, "thread_delete", {"thread_id": tid})
                assert ok and out["deleted"] == model.visible(who, thread), (who, op, out)
                if out["deleted"]:
                    assert thread is not None
                    thread.alive = False
            elif op == "list":
                ok, out = await call(client, "thread_list", {"limit": 200})
                assert ok
                assert {row["thread_id"] for row in out["threads"]} == model.visible_ids(who)
            else:
                ok, out = await call(client, "store_info", {})
                assert ok and out["threads"] == len(model.visible_ids(who))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
def test_random_principals_never_see_each_others_threads(server: Server, plan: list[Step]) -> None:
    for key in list(server.storage.scan()):  # each example starts from an empty store
        server.storage.delete(key)
    anyio.run(run, server.url, plan)
