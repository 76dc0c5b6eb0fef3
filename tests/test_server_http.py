"""`threadstore serve --transport http` in a subprocess: the bearer token is required when set,
wrong or missing tokens get 401, the MCP client with the token works, Host checks hold, and
unsafe bind options are refused before anything listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSTORE_")}
    env.update(HOME=str(tmp), XDG_STATE_HOME=str(tmp / "state"), **extra)
    return env


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("http")
    port = free_port()
    env = cli_env(tmp, THREADSTORE_AUTH_TOKEN=TOKEN, THREADSTORE_URL=f"sqlite:///{tmp}/t.db")
    args = ["serve", "--transport", "http", "--port", str(port), "--log-level", "WARNING"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadstore.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"server did not start: {err.decode()}")
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert out == b"", "nothing may be written to stdout"
    assert TOKEN.encode() not in err, "the token must never be logged"


def post(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json, text/event-stream")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "basic", "bare"],
)
def test_requests_without_the_right_token_get_401(
    http_server: str, headers: dict[str, str]
) -> None:
    status, response_headers = post(http_server, headers)
    assert status == 401
    assert response_headers.get("www-authenticate", "").startswith("Bearer")


def test_the_right_token_passes_the_auth_check(http_server: str) -> None:
    status, _ = post(http_server, {"Authorization": f"Bearer {TOKEN}"})
    assert status != 401


def test_a_foreign_host_header_is_refused_even_with_the_token(http_server: str) -> None:
    status, _ = post(http_server, {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example:80"})
    assert status == 421


async def test_the_mcp_client_with_the_token_works(http_server: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        Client(streamable_http_client(http_server, http_client=http)) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "thread_create" in names
        created = await client.call_tool("thread_create", {"tool_name": "http"})
        assert not created.is_error and created.structured_content is not None
        tid = created.structured_content["thread_id"]
        added = await client.call_tool(
            "thread_append", {"thread_id": tid, "role": "user", "content": "over http"}
        )
        assert not added.is_error
        got = await client.call_tool("thread_get", {"thread_id": tid})
        assert got.structured_content is not None
        assert got.structured_content["turns"][0]["content"] == "over http"


def run_cli(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadstore.cli", *args],
        env=cli_env(tmp, THREADSTORE_URL="memory://", **env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_non_loopback_host_needs_allow_remote(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", "--transport", "http", "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and "--allow-remote" in done.stderr
    assert "Traceback" not in done.stderr


def test_allow_remote_needs_a_token(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "serve", "--transport", "http", "--host", "0.0.0.0", "--allow-remote")
    assert done.returncode == 2
    assert "THREADSTORE_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr
