"""The command line is an operator tool: it sees every principal's threads, shows the owner and
filters by it (`list --owner`); `doctor` checks the tokens file and the OAuth keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from threadstore import ThreadStore, open_storage
from threadstore._auth import hash_token
from threadstore.cli import app

runner = CliRunner()
TOKEN = "alice-cli-0123456789abcdef0123456789abc"


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/threads.db"


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture
def threads(url: str) -> dict[str, str]:
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    try:
        return {
            "alice": store.for_owner("alice").create_thread("a"),
            "bob": store.for_owner("bob").create_thread("b"),
            "none": store.create_thread("legacy"),
        }
    finally:
        store.close()


def test_list_shows_every_owner(url: str, threads: dict[str, str]) -> None:
    result = run("--url", url, "list")
    assert result.exit_code == 0, result.stderr
    assert "owner" in result.stdout
    for owner, tid in threads.items():
        line = next(x for x in result.stdout.splitlines() if tid in x)
        assert (owner if owner != "none" else "-") in line
    data = json.loads(run("--url", url, "list", "--json").stdout)
    owners = {row["thread_id"]: row["owner"] for row in data["threads"]}
    assert owners == {tid: (o if o != "none" else None) for o, tid in threads.items()}


def test_list_filters_by_owner(url: str, threads: dict[str, str]) -> None:
    data = json.loads(run("--url", url, "list", "--owner", "alice", "--json").stdout)
    assert [row["thread_id"] for row in data["threads"]] == [threads["alice"]]
    nobody = json.loads(run("--url", url, "list", "--owner", "carol", "--json").stdout)
    assert nobody["threads"] == []
    bad = run("--url", url, "list", "--owner", "")
    assert bad.exit_code == 2 and "owner" in bad.stderr


def test_list_owner_pages_keep_the_filter(url: str, threads: dict[str, str]) -> None:
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    store.for_owner("alice").create_thread("a2")
    store.close()
    first = run("--url", url, "list", "--owner", "alice", "-n", "1")
    assert "--owner alice --cursor" in first.stderr


def test_show_names_the_owner(url: str, threads: dict[str, str]) -> None:
    result = run("--url", url, "show", threads["bob"])
    assert result.exit_code == 0 and "owner" in result.stdout and "bob" in result.stdout
    data = json.loads(run("--url", url, "show", threads["bob"], "--json").stdout)
    assert data["owner"] == "bob"
    legacy = run("--url", url, "show", threads["none"])
    assert "admins only" in legacy.stdout


def test_export_and_import_keep_owners(url: str, threads: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "backup.jsonl"
    assert run("--url", url, "export", "-o", str(out)).exit_code == 0
    other = f"sqlite:///{tmp_path}/other.db"
    assert run("--url", other, "import", str(out)).exit_code == 0
    data = json.loads(run("--url", other, "list", "--owner", "bob", "--json").stdout)
    assert [row["thread_id"] for row in data["threads"]] == [threads["bob"]]


def doctor(url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, dict[str, str]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run("--url", url, "doctor", "--json")
    data = json.loads(result.stdout)
    return {c["name"]: c for c in data["checks"]}


def test_doctor_checks_the_tokens_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice {TOKEN}\nroot {hash_token(TOKEN + 'x')} admin\n")
    os.chmod(path, 0o600)
    checks = doctor(url, monkeypatch, THREADSTORE_AUTH_TOKENS_FILE=str(path))
    assert checks["tokens file"]["status"] == "ok"
    assert "2 principals (1 admin)" in checks["tokens file"]["detail"]
    os.chmod(path, 0o644)
    checks = doctor(url, monkeypatch, THREADSTORE_AUTH_TOKENS_FILE=str(path))
    check = checks["tokens file"]
    assert check["status"] == "FAIL" and "chmod 600" in check["detail"]
    os.chmod(path, 0o600)
    path.write_text(f"alice {TOKEN}\nbob {TOKEN}\n")
    checks = doctor(url, monkeypatch, THREADSTORE_AUTH_TOKENS_FILE=str(path))
    check = checks["tokens file"]
    assert check["status"] == "FAIL" and "line 2" in check["detail"]
    assert TOKEN not in json.dumps(checks)
    assert run("--url", url, "doctor").exit_code == 1


def test_doctor_checks_the_oauth_keys(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    env = {
        "THREADSTORE_OAUTH_ISSUER": "https://auth.example.test",
        "THREADSTORE_OAUTH_AUDIENCE": "threadstore",
        "THREADSTORE_OAUTH_JWKS": str(jwks),
    }
    checks = doctor(url, monkeypatch, **env)
    assert checks["oauth"]["status"] == "ok" and "1 signing keys" in checks["oauth"]["detail"]
    jwks.write_text("{}")
    checks = doctor(url, monkeypatch, **env)
    assert checks["oauth"]["status"] == "FAIL"
