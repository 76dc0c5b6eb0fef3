"""Many principals on one server, through the official MCP client over real HTTP: two ordinary
principals and one admin from a tokens file (one token stored as its hash), every tool, the
same-error rule, listing and parent-chain isolation, admin powers, refusals and the audit log;
and `threadstore serve` refusing unsafe or malformed tokens files before it listens."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth_support import error, ok, serving, session
from threadstore import AsyncThreadStore, MemoryStorage, ThreadStore
from threadstore._auth import hash_token, parse_tokens
from threadstore._config import load_settings
from threadstore.server import ServerAuth, check_http_options, load_auth

pytestmark = pytest.mark.anyio

ALICE = "alice-0123456789abcdef0123456789abcdef"
BOB = "bob-0123456789abcdef0123456789abcdef012"
ROOT = "root-0123456789abcdef0123456789abcdef01"
TOKENS = f"alice {ALICE}\nbob {hash_token(BOB)}\nroot {ROOT} admin\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Team:
    def __init__(self, url: str, storage: MemoryStorage) -> None:
        self.url = url
        self.store = ThreadStore(storage, ttl_seconds=3600, max_turns=5)


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    storage = MemoryStorage()
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=5)
    auth = load_auth_from(TOKENS)
    with serving(store, auth) as url:
        yield Team(url, storage)
    storage.close()


def load_auth_from(tokens: str) -> ServerAuth:
    from threadstore._auth import ThreadstoreVerifier

    return ServerAuth(ThreadstoreVerifier(parse_tokens(tokens.splitlines()), None))


def unify(message: str, *ids: str) -> str:
    for thread_id in ids:
        message = message.replace(thread_id, "<id>")
    return message


async def test_every_tool_as_owner_and_as_stranger(team: Team) -> None:
    async with session(team.url, ALICE) as alice, session(team.url, BOB) as bob:
        created = await ok(alice, "thread_create", {"tool_name": "a", "initial_context": {"k": 1}})
        tid = created["thread_id"]
        await ok(alice, "thread_append", {"thread_id": tid, "role": "user", "content": "secret"})
        got = await ok(alice, "thread_get", {"thread_id": tid})
        assert got["turns"][0]["content"] == "secret"
        history = await ok(alice, "thread_history", {"thread_id": tid, "max_tokens": 1000})
        assert "secret" in history["text"]
        child = await ok(alice, "thread_create", {"parent_thread_id": tid})
        assert child["parent_thread_id"] == tid

        missing = str(uuid.uuid4())
        calls = [
            ("thread_get", {"thread_id": "{id}"}),
            ("thread_append", {"thread_id": "{id}", "role": "user", "content": "x"}),
            ("thread_history", {"thread_id": "{id}", "max_tokens": 100}),
            ("thread_create", {"tool_name": "b", "parent_thread_id": "{id}"}),
        ]
        for tool, template in calls:
            as_foreign = {k: (tid if v == "{id}" else v) for k, v in template.items()}
            as_missing = {k: (missing if v == "{id}" else v) for k, v in template.items()}
            foreign_text = await error(bob, tool, as_foreign)
            missing_text = await error(bob, tool, as_missing)
            assert unify(foreign_text, tid) == unify(missing_text, missing), tool
            assert "forbidden" not in foreign_text.lower() and "owner" not in foreign_text.lower()
        gone = await ok(bob, "thread_delete", {"thread_id": tid})
        assert gone == {"thread_id": tid, "deleted": False}
        assert (await ok(bob, "thread_delete", {"thread_id": missing}))["deleted"] is False
        still = await ok(alice, "thread_get", {"thread_id": tid})
        assert [t["content"] for t in still["turns"]] == ["secret"], "bob changed nothing"
        assert (await ok(alice, "thread_delete", {"thread_id": tid}))["deleted"] is True


async def test_listing_and_counts_hold_only_the_callers_threads(team: Team) -> None:
    async with session(team.url, ALICE) as alice, session(team.url, BOB) as bob:
        before_a = (await ok(alice, "store_info", {}))["threads"]
        before_b = (await ok(bob, "store_info", {}))["threads"]
        mine = {(await ok(alice, "thread_create", {}))["thread_id"] for _ in range(3)}
        theirs = {(await ok(bob, "thread_create", {}))["thread_id"] for _ in range(2)}
        listed_a = await ok(alice, "thread_list", {"limit": 200})
        listed_b = await ok(bob, "thread_list", {"limit": 200})
        ids_a = {row["thread_id"] for row in listed_a["threads"]}
        ids_b = {row["thread_id"] for row in listed_b["threads"]}
        assert mine <= ids_a and not ids_a & ids_b and theirs <= ids_b
        assert {row["owner"] for row in listed_a["threads"]} == {"alice"}
        info_a = await ok(alice, "store_info", {})
        info_b = await ok(bob, "store_info", {})
        assert info_a["threads"] == before_a + 3 and info_b["threads"] == before_b + 2
        assert info_a["principal"] == "alice" and info_a["admin"] is False
        assert info_a["stats"] == {}, "backend-wide counters are for admins"


async def test_history_never_crosses_into_another_principals_thread(team: Team) -> None:
    async with session(team.url, ALICE) as alice, session(team.url, BOB) as bob:
        parent = (await ok(alice, "thread_create", {}))["thread_id"]
        await ok(alice, "thread_append", {"thread_id": parent, "role": "user", "content": "A1"})
        # A thread of bob's whose parent is alice's (as an import or an admin could arrange).
        child = str(uuid.uuid4())
        line = (
            team.store.for_owner("alice")
            .require_thread(parent)
            .model_copy(
                update={"thread_id": child, "parent_thread_id": parent, "owner": "bob", "turns": []}
            )
            .model_dump_json()
        )
        assert team.store.import_threads([line]) == 1
        await ok(bob, "thread_append", {"thread_id": child, "role": "user", "content": "B1"})
        history = await ok(bob, "thread_history", {"thread_id": child, "max_tokens": 10_000})
        assert history["thread_ids"] == [child]
        assert "B1" in history["text"] and "A1" not in history["text"]


async def test_an_admin_sees_and_manages_every_thread(team: Team) -> None:
    async with session(team.url, ALICE) as alice, session(team.url, ROOT) as root:
        tid = (await ok(alice, "thread_create", {"tool_name": "a"}))["thread_id"]
        listed = await ok(root, "thread_list", {"limit": 200})
        owners = {row["thread_id"]: row["owner"] for row in listed["threads"]}
        assert owners[tid] == "alice"
        await ok(root, "thread_append", {"thread_id": tid, "role": "assistant", "content": "hi"})
        assert (await ok(root, "thread_get", {"thread_id": tid}))["turns"][0]["content"] == "hi"
        await ok(root, "thread_history", {"thread_id": tid, "max_tokens": 100})
        own = await ok(root, "thread_create", {"parent_thread_id": tid})
        info = await ok(root, "store_info", {})
        assert info["admin"] is True and info["principal"] == "root" and info["stats"]
        assert info["threads"] >= len(listed["threads"])
        assert (await ok(root, "thread_delete", {"thread_id": tid}))["deleted"] is True
        await error(alice, "thread_get", {"thread_id": tid})
        await error(alice, "thread_get", {"thread_id": own["thread_id"]})


async def test_thread_create_states_the_lifetime(team: Team) -> None:
    async with session(team.url, BOB) as bob:
        tools = {tool.name: tool for tool in (await bob.list_tools()).tools}
    description = tools["thread_create"].description or ""
    assert "1 hour after its last turn" in description and "refreshes" in description


def post(url: str, token: str | None) -> tuple[int, dict[str, str]]:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json, text/event-stream")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.parametrize(
    "token",
    [None, "wrong", hash_token(BOB), BOB + "x", ALICE[:-1]],
    ids=["none", "wrong", "the-hash-itself", "longer", "shorter"],
)
def test_bad_tokens_get_401_and_one_audit_line(
    team: Team, token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="threadstore.audit"):
        status, headers = post(team.url, token)
    assert status == 401
    assert headers.get("www-authenticate", "").startswith("Bearer")
    lines = [r.getMessage() for r in caplog.records if r.name == "threadstore.audit"]
    assert len(lines) == 1 and "status=401" in lines[0]
    if token is not None:
        assert token not in caplog.text


async def test_refusals_and_deletes_are_audited_without_tokens(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    async with session(team.url, ALICE) as alice, session(team.url, BOB) as bob:
        tid = (await ok(alice, "thread_create", {}))["thread_id"]
        with caplog.at_level(logging.INFO, logger="threadstore.audit"):
            await error(bob, "thread_get", {"thread_id": tid})
            await ok(bob, "thread_delete", {"thread_id": tid})
            await ok(alice, "thread_delete", {"thread_id": tid})
    lines = [r.getMessage() for r in caplog.records if r.name == "threadstore.audit"]
    assert any("refused" in x and "'bob'" in x and "thread_get" in x and tid in x for x in lines)
    deletes = [x for x in lines if x.startswith("delete:")]
    assert len(deletes) == 2
    assert "'bob'" in deletes[0] and "deleted=false" in deletes[0]
    assert "'alice'" in deletes[1] and "deleted=true" in deletes[1]
    for secret in (ALICE, BOB, ROOT):
        assert secret not in caplog.text


# -- settings and startup -------------------------------------------------------------------------
def write_tokens(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_load_auth_combines_the_file_and_the_shared_token(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens", TOKENS)
    env = {"THREADSTORE_AUTH_TOKENS_FILE": str(path), "THREADSTORE_AUTH_TOKEN": "s" * 40}
    auth = load_auth(load_settings(env))
    assert auth is not None and auth.verifier.table is not None
    assert [p.name for p in auth.verifier.table.principals] == ["alice", "bob", "root", "admin"]
    clash = {"THREADSTORE_AUTH_TOKENS_FILE": str(path), "THREADSTORE_AUTH_TOKEN": ALICE}
    with pytest.raises(Exception, match="line 1"):
        load_auth(load_settings(clash))
    assert load_auth(load_settings({})) is None


def test_a_tokens_file_authenticates_remote_serving() -> None:
    check_http_options("0.0.0.0", allow_remote=True, token=None, principals=True)


def cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("THREADSTORE_")}
    base.update(HOME=str(tmp), XDG_STATE_HOME=str(tmp / "state"), THREADSTORE_URL="memory://")
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "threadstore.cli", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (TOKENS, 0o644, "mode 0644"),
        (f"alice {ALICE}\n\nbob\n", 0o600, "line 3:"),
        (f"alice {ALICE}\nalice {BOB}\n", 0o600, "line 2: principal 'alice' is already defined"),
        (f"alice {ALICE}\nbob {hash_token(ALICE)}\n", 0o600, "line 2: the same token"),
    ],
    ids=["open-permissions", "malformed-line", "duplicate-principal", "duplicate-token"],
)
def test_serve_refuses_a_bad_tokens_file_before_listening(
    tmp_path: Path, text: str, mode: int, words: str
) -> None:
    path = write_tokens(tmp_path / "tokens", text, mode)
    done = cli(
        tmp_path,
        "serve",
        "--transport",
        "http",
        "--port",
        "1",  # never reached: the file is checked first
        THREADSTORE_AUTH_TOKENS_FILE=str(path),
    )
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert ALICE not in done.stderr and BOB not in done.stderr


async def test_stdio_and_open_loopback_serve_the_local_admin() -> None:
    from mcp import Client

    from threadstore.server import build_server

    async with Client(build_server(url="memory://")) as client:
        info = await ok(client, "store_info", {})
    assert info["principal"] == "local" and info["admin"] is True and info["stats"]
