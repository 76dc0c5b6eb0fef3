"""Principals and the tokens file: parsing (line numbers in every error), permissions, hashed
tokens, duplicates, minimum strength, the constant-time lookup, and the settings."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from threadstore import ConfigError, InvalidInput
from threadstore._auth import (
    MIN_TOKEN_LENGTH,
    Principal,
    TokenTable,
    check_owner,
    check_token_strength,
    hash_token,
    load_tokens_file,
    parse_tokens,
)
from threadstore._config import load_settings

ALICE = "alice-token-0123456789abcdef0123456789"
BOB = "bob-token-0123456789abcdef0123456789xyz"
ROOT = "root-token-0123456789abcdef0123456789xy"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_tokens_file_with_comments_hashes_and_an_admin(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tokens",
        f"# team principals\n\nalice {ALICE}\nbob {hash_token(BOB)}  # hashed\nroot {ROOT} admin\n",
    )
    table = load_tokens_file(path)
    assert table.principals == (
        Principal("alice"),
        Principal("bob"),
        Principal("root", admin=True),
    )
    assert table.lookup(ALICE) == Principal("alice")
    assert table.lookup(BOB) == Principal("bob"), "a sha256: line accepts the token itself"
    assert table.lookup(ROOT) == Principal("root", admin=True)
    assert table.lookup(hash_token(BOB)) is None, "the hash is not a token"
    assert table.lookup(ALICE + "x") is None
    assert table.lookup(ALICE[:-1]) is None
    assert table.lookup("") is None


def test_hash_token_is_sha256_hex() -> None:
    assert hash_token(BOB) == "sha256:" + hashlib.sha256(BOB.encode()).hexdigest()
    upper = "SHA256:" + hashlib.sha256(BOB.encode()).hexdigest().upper()
    assert parse_tokens([f"bob {upper}"]).lookup(BOB) == Principal("bob")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_a_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "tokens", f"alice {ALICE}\n", mode)
    with pytest.raises(ConfigError) as caught:
        load_tokens_file(path)
    message = str(caught.value)
    assert "chmod 600" in message and f"{mode:04o}" in message and str(path) in message
    assert ALICE not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    assert len(load_tokens_file(write(tmp_path / "tokens", f"alice {ALICE}\n", mode))) == 1


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (f"alice {ALICE}\nbob\n", 2, "expected 'PRINCIPAL TOKEN'"),
        (f"# c\nalice {ALICE} root\n", 2, "expected 'PRINCIPAL TOKEN'"),
        (f"alice {ALICE} admin extra\n", 1, "4 fields"),
        ("\n\n\nalice short\n", 4, f"at least {MIN_TOKEN_LENGTH}"),
        ("alice sha256:abcd\n", 1, "64 hex digits"),
        ("alice sha256:" + "g" * 64 + "\n", 1, "64 hex digits"),
        (f"alice {ALICE}\nalice {BOB}\n", 2, "already defined on line 1"),
        (f"alice {ALICE}\nbob {ALICE}\n", 2, "already used on line 1"),
        (f"alice {ALICE}\nbob {hash_token(ALICE)}\n", 2, "already used on line 1"),
    ],
    ids=[
        "one-field",
        "bad-flag",
        "four-fields",
        "short-token",
        "short-hash",
        "non-hex-hash",
        "duplicate-principal",
        "duplicate-token",
        "duplicate-token-hashed",
    ],
)
def test_a_bad_line_is_named_by_number(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path / "tokens", text)
    with pytest.raises(ConfigError) as caught:
        load_tokens_file(path)
    message = str(caught.value)
    assert f"line {line}:" in message and words in message and str(path) in message
    for secret in (ALICE, BOB, "short"):
        assert secret not in message, "an error never shows a token"


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="defines no principals"):
        load_tokens_file(write(tmp_path / "tokens", "# nobody yet\n"))


def test_a_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        load_tokens_file(tmp_path / "absent")
    path = write(tmp_path / "tokens", "\xff", 0o600)
    path.write_bytes(b"alice \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_tokens_file(path)


def test_the_lookup_compares_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: hmac.compare_digest against every principal, no early exit."""
    import threadstore._auth as auth

    table = parse_tokens([f"alice {ALICE}", f"bob {BOB}", f"root {ROOT} admin"])
    calls: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token in (ALICE, ROOT, "nobody-0123456789abcdef0123456789ab"):
        calls.clear()
        table.lookup(token)
        assert len(calls) == 3


def test_the_shared_token_is_one_admin() -> None:
    table = TokenTable.single(ROOT)
    assert table.lookup(ROOT) == Principal("admin", admin=True)


def test_token_strength() -> None:
    check_token_strength("x" * MIN_TOKEN_LENGTH, "THREADSTORE_AUTH_TOKEN")
    with pytest.raises(ConfigError) as caught:
        check_token_strength("x" * (MIN_TOKEN_LENGTH - 1), "THREADSTORE_AUTH_TOKEN")
    assert "secrets.token_urlsafe" in str(caught.value) and "x" * 31 not in str(caught.value)


@pytest.mark.parametrize("bad", ["", " alice", "al\nice", "tab\there", "x" * 191, "nul\x00"])
def test_principal_names_are_checked(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_owner(bad)


def test_principal_names_may_be_any_printable_text() -> None:
    for name in ("alice", "auth0|5f7c8ec7", "Émile Zola", "user@example.com", "x" * 190):
        assert check_owner(name) == name


def test_the_settings_read_the_auth_variables(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "THREADSTORE_AUTH_TOKENS_FILE": str(tmp_path / "tokens"),
            "THREADSTORE_OAUTH_ISSUER": "https://auth.example.com",
            "THREADSTORE_OAUTH_AUDIENCE": "https://threads.example.com/mcp",
            "THREADSTORE_OAUTH_JWKS": "https://auth.example.com/.well-known/jwks.json",
            "THREADSTORE_OAUTH_ADMIN_SCOPE": "threads:admin",
        }
    )
    assert settings.auth_tokens_file == tmp_path / "tokens"
    assert settings.oauth_enabled and settings.oauth_admin_scope == "threads:admin"
    assert load_settings({}).oauth_admin_scope == "admin"
    assert not load_settings({}).oauth_enabled


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"THREADSTORE_OAUTH_ISSUER": "https://a.example"}, "THREADSTORE_OAUTH_AUDIENCE"),
        (
            {
                "THREADSTORE_OAUTH_ISSUER": "ftp://a.example",
                "THREADSTORE_OAUTH_AUDIENCE": "x",
                "THREADSTORE_OAUTH_JWKS": "/k.json",
            },
            "THREADSTORE_OAUTH_ISSUER",
        ),
        (
            {
                "THREADSTORE_OAUTH_ISSUER": "https://a.example",
                "THREADSTORE_OAUTH_AUDIENCE": "x",
                "THREADSTORE_OAUTH_JWKS": "file://k.json",
            },
            "THREADSTORE_OAUTH_JWKS",
        ),
        ({"THREADSTORE_OAUTH_ADMIN_SCOPE": "two words"}, "THREADSTORE_OAUTH_ADMIN_SCOPE"),
    ],
    ids=["incomplete", "issuer-not-http", "jwks-bad-scheme", "scope-with-space"],
)
def test_bad_oauth_settings_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(env)
