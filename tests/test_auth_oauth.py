"""threadstore as an OAuth 2.1 resource server: RSA keys and a JWKS generated here, the JWKS
served over HTTP on loopback by the test (and read from a file), access tokens signed here.
Valid tokens act as their ``sub`` (admin with the admin scope); expired, not-yet-valid,
wrong-audience, wrong-issuer, unsigned, wrong-key and HMAC-confused tokens are refused; the
server publishes its protected-resource metadata and points to it from WWW-Authenticate."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth_support import error, free_port, ok, serving, session
from threadstore import AsyncThreadStore, ConfigError, MemoryStorage
from threadstore._auth import JwtVerifier, OAuthSettings, Principal, hash_token
from threadstore._config import load_settings
from threadstore.server import load_auth

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.example.test"
AUDIENCE = "https://threads.example.test/mcp"
KID = "key-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Keys:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=KID, alg="RS256", use="sig")
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
        self.jwks = {"keys": [jwk, ec_jwk]}

    def token(
        self,
        sub: str = "alice",
        *,
        key: Any = None,
        alg: str = "RS256",
        kid: str | None = KID,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + 600,
            "client_id": "agent-app",
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": kid} if kid is not None else None
        return jwt.encode(payload, key or self.private, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks))
    return path


def verifier(jwks: str) -> JwtVerifier:
    return JwtVerifier(OAuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks=jwks))


def unsigned(keys: Keys) -> str:
    """An ``alg: none`` token with otherwise perfect claims."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": now + 600, "scope": "admin"}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": KID})


def hmac_confused(keys: Keys) -> str:
    """HS256 keyed with the public key's PEM: the classic algorithm-confusion forgery."""
    pem = keys.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": now + 600}
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_tokens(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": keys.token(exp=now - 3600, iat=now - 7200),
        "not-yet-valid": keys.token(nbf=now + 3600),
        "wrong-audience": keys.token(aud="https://elsewhere.example.test/mcp"),
        "wrong-issuer": keys.token(iss="https://evil.example.test"),
        "unsigned": unsigned(keys),
        "wrong-key": keys.token(key=keys.other),
        "unknown-kid": keys.token(kid="key-2", key=keys.other),
        "hmac-confusion": hmac_confused(keys),
        "no-sub": keys.token(sub=None),  # type: ignore[arg-type]
        "no-exp": keys.token(exp=None),
        "tampered": keys.token()[:-4] + "AAAA",
        "garbage": "not.a.jwt",
    }


BAD = [
    "expired",
    "not-yet-valid",
    "wrong-audience",
    "wrong-issuer",
    "unsigned",
    "wrong-key",
    "unknown-kid",
    "hmac-confusion",
    "no-sub",
    "no-exp",
    "tampered",
    "garbage",
]


def test_a_valid_token_is_its_subject(keys: Keys, jwks_file: Path) -> None:
    check = verifier(str(jwks_file))
    result = check.verify(keys.token("alice"))
    assert result is not None and result[0] == Principal("alice")
    admin = check.verify(keys.token("root", scope="openid admin"))
    assert admin is not None and admin[0] == Principal("root", admin=True)
    listed = check.verify(keys.token("root", scp=["admin"]))
    assert listed is not None and listed[0].admin
    ec_token = keys.token("erin", key=keys.ec, alg="ES256", kid="ec-1")
    assert (verified := check.verify(ec_token)) is not None and verified[0].name == "erin"
    leeway = keys.token("alice", exp=int(time.time()) - 5)
    assert check.verify(leeway) is not None, "30 s of clock skew is tolerated"


def test_the_admin_scope_name_is_configurable(keys: Keys, jwks_file: Path) -> None:
    check = JwtVerifier(
        OAuthSettings(ISSUER, AUDIENCE, str(jwks_file), admin_scope="threads:admin")
    )
    plain = check.verify(keys.token("root", scope="admin"))
    assert plain is not None and not plain[0].admin
    custom = check.verify(keys.token("root", scope="threads:admin"))
    assert custom is not None and custom[0].admin


@pytest.mark.parametrize("case", BAD)
def test_bad_tokens_are_refused(
    keys: Keys, jwks_file: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = bad_tokens(keys)[case]
    with caplog.at_level("INFO", logger="threadstore.audit"):
        assert verifier(str(jwks_file)).verify(token) is None
    assert token not in caplog.text


def test_a_bad_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        verifier(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a usable JWKS"):
        verifier(str(tmp_path / "bad.json"))
    (tmp_path / "sym.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    with pytest.raises(ConfigError):
        verifier(str(tmp_path / "sym.json"))


# -- over HTTP --------------------------------------------------------------------------------
class JwksServer:
    """A JWKS document on http://127.0.0.1:PORT/jwks.json, served by this test."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


STATIC = "ci-bot-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def oauth_server(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, JwksServer]]:
    jwks = JwksServer(keys.jwks)
    tokens = tmp_path_factory.mktemp("oauth") / "tokens"
    tokens.write_text(f"ci-bot {hash_token(STATIC)}\n")
    tokens.chmod(0o600)
    port = free_port()
    settings = load_settings(
        {
            "THREADSTORE_OAUTH_ISSUER": ISSUER,
            "THREADSTORE_OAUTH_AUDIENCE": AUDIENCE,
            "THREADSTORE_OAUTH_JWKS": jwks.url,
            "THREADSTORE_OAUTH_RESOURCE": f"http://127.0.0.1:{port}/mcp",
            "THREADSTORE_AUTH_TOKENS_FILE": str(tokens),
        }
    )
    auth = load_auth(settings, port=port)
    assert auth is not None and auth.oauth is not None
    storage = MemoryStorage()
    store = AsyncThreadStore(storage, ttl_seconds=3600, max_turns=10)
    try:
        with serving(store, auth, port=port) as url:
            yield url, jwks
    finally:
        jwks.close()
        storage.close()


def http_get(
    url: str, token: str | None = None, *, post: bool = True
) -> tuple[int, dict[str, str], bytes]:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    request = urllib.request.Request(url, data=body if post else None)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json, text/event-stream")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_protected_resource_metadata_is_served(oauth_server: tuple[str, JwksServer]) -> None:
    url, _ = oauth_server
    base = url.removesuffix("/mcp")
    status, _, body = http_get(f"{base}/.well-known/oauth-protected-resource/mcp", post=False)
    assert status == 200
    metadata = json.loads(body)
    assert metadata["resource"] == url
    assert [s.rstrip("/") for s in metadata["authorization_servers"]] == [ISSUER]
    status, headers, _ = http_get(url)
    assert status == 401
    challenge = headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge


@pytest.mark.parametrize("case", BAD)
def test_bad_tokens_get_401_over_http(
    oauth_server: tuple[str, JwksServer], keys: Keys, case: str
) -> None:
    url, _ = oauth_server
    status, headers, _ = http_get(url, bad_tokens(keys)[case])
    assert status == 401
    assert "resource_metadata=" in headers.get("www-authenticate", "")


async def test_signed_in_principals_are_isolated_and_the_admin_scope_sees_all(
    oauth_server: tuple[str, JwksServer], keys: Keys
) -> None:
    url, jwks = oauth_server
    async with (
        session(url, keys.token("alice")) as alice,
        session(url, keys.token("bob")) as bob,
        session(url, keys.token("root", scope="admin")) as root,
        session(url, STATIC) as bot,
    ):
        tid = (await ok(alice, "thread_create", {}))["thread_id"]
        await ok(alice, "thread_append", {"thread_id": tid, "role": "user", "content": "hi"})
        assert "was not found" in await error(bob, "thread_get", {"thread_id": tid})
        assert (await ok(bob, "store_info", {}))["principal"] == "bob"
        listed = await ok(root, "thread_list", {})
        assert {row["owner"] for row in listed["threads"]} == {"alice"}
        assert (await ok(root, "store_info", {}))["admin"] is True
        assert (await ok(bot, "store_info", {}))["principal"] == "ci-bot", "static tokens too"
        assert (await ok(bot, "thread_list", {}))["threads"] == []
    assert jwks.hits >= 1, "the keys came from the JWKS URL"


def test_the_resource_url_defaults_to_the_audience_then_the_address(jwks_file: Path) -> None:
    env = {
        "THREADSTORE_OAUTH_ISSUER": ISSUER,
        "THREADSTORE_OAUTH_AUDIENCE": AUDIENCE,
        "THREADSTORE_OAUTH_JWKS": str(jwks_file),
    }
    auth = load_auth(load_settings(env))
    assert auth is not None and auth.oauth is not None
    assert str(auth.oauth.resource_server_url) == AUDIENCE
    env["THREADSTORE_OAUTH_AUDIENCE"] = "threadstore-api"
    auth = load_auth(load_settings(env), host="127.0.0.1", port=9999)
    assert auth is not None and auth.oauth is not None
    assert str(auth.oauth.resource_server_url) == "http://127.0.0.1:9999/mcp"


async def test_threadstore_serve_with_a_tokens_file_and_oauth(keys: Keys, tmp_path: Path) -> None:
    """The real `threadstore serve --transport http` process: keys fetched from the JWKS URL at
    start, a hashed static token and an OAuth token side by side, audit lines on stderr, never a
    token."""
    import os
    import socket
    import subprocess
    import sys

    jwks = JwksServer(keys.jwks)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci-bot {hash_token(STATIC)} admin\n")
    tokens.chmod(0o600)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSTORE_")}
    env.update(
        HOME=str(tmp_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        THREADSTORE_URL=f"sqlite:///{tmp_path}/t.db",
        THREADSTORE_AUTH_TOKENS_FILE=str(tokens),
        THREADSTORE_OAUTH_ISSUER=ISSUER,
        THREADSTORE_OAUTH_AUDIENCE=AUDIENCE,
        THREADSTORE_OAUTH_JWKS=jwks.url,
        THREADSTORE_OAUTH_RESOURCE=f"http://127.0.0.1:{port}/mcp",
    )
    args = ["serve", "--transport", "http", "--port", str(port), "--log-level", "INFO"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadstore.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"server did not start: {proc.communicate()[1].decode()}")
                await anyio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/mcp"
        alice_token = keys.token("alice")
        async with session(url, alice_token) as alice, session(url, STATIC) as bot:
            tid = (await ok(alice, "thread_create", {}))["thread_id"]
            listed = await ok(bot, "thread_list", {})
            assert [(r["thread_id"], r["owner"]) for r in listed["threads"]] == [(tid, "alice")]
            assert (await ok(bot, "thread_delete", {"thread_id": tid}))["deleted"] is True
        status, _, _ = http_get(url, "wrong-token")
        assert status == 401
        assert jwks.hits >= 1
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        jwks.close()
    log = err.decode()
    assert out == b""
    assert "delete: principal='ci-bot' tool=thread_delete" in log and tid in log
    assert "status=401" in log
    assert STATIC not in log and alice_token not in log
