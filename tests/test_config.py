"""Settings from the environment and opening backends from URLs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import threadstore
from threadstore import ConfigError, MemoryStorage, load_settings, open_storage
from threadstore._redact import redact_text, redact_url


def test_defaults() -> None:
    s = load_settings({})
    assert s.url is None
    assert s.ttl_seconds == 3 * 3600
    assert s.max_turns == 50
    assert s.namespace == "threadstore"
    assert s.fallback == "memory"


def test_values_are_read() -> None:
    s = load_settings(
        {
            "REDIS_URL": "redis://localhost:6379/0",
            "CONVERSATION_TIMEOUT_HOURS": "1.5",
            "MAX_CONVERSATION_TURNS": "20",
            "THREADSTORE_NAMESPACE": "proj-a",
            "THREADSTORE_FALLBACK": "FAIL",
        }
    )
    assert s.url == "redis://localhost:6379/0"
    assert s.ttl_seconds == 5400
    assert s.max_turns == 20
    assert s.namespace == "proj-a"
    assert s.fallback == "fail"


def test_threadstore_url_wins_over_redis_url() -> None:
    s = load_settings({"REDIS_URL": "redis://a", "THREADSTORE_URL": "sqlite:///x.db"})
    assert s.url == "sqlite:///x.db"


def test_blank_values_mean_unset() -> None:
    assert load_settings({"REDIS_URL": "", "CONVERSATION_TIMEOUT_HOURS": " "}).url is None


@pytest.mark.parametrize(
    ("var", "value", "accepted"),
    [
        ("CONVERSATION_TIMEOUT_HOURS", "abc", "positive number of hours"),
        ("CONVERSATION_TIMEOUT_HOURS", "-1", "positive number of hours"),
        ("CONVERSATION_TIMEOUT_HOURS", "0", "positive number of hours"),
        ("CONVERSATION_TIMEOUT_HOURS", "nan", "positive number of hours"),
        ("CONVERSATION_TIMEOUT_HOURS", "inf", "positive number of hours"),
        ("MAX_CONVERSATION_TURNS", "0", "whole number"),
        ("MAX_CONVERSATION_TURNS", "2.5", "whole number"),
        ("THREADSTORE_NAMESPACE", "a b", "A-Z"),
        ("THREADSTORE_NAMESPACE", "x" * 65, "A-Z"),
        ("THREADSTORE_FALLBACK", "maybe", "'memory' or 'fail'"),
        ("THREADSTORE_URL", "mysql://db", "memory://"),
        ("THREADSTORE_URL", "localhost:6379", "redis://"),
        ("REDIS_URL", "http://x", "redis://"),
    ],
)
def test_bad_values_name_variable_value_and_what_is_accepted(
    var: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({var: value})
    msg = str(info.value)
    assert var in msg
    assert repr(value) in msg
    assert accepted in msg


def test_bad_url_error_hides_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"THREADSTORE_URL": "mysql://user:hunter2@db/x"})
    assert "hunter2" not in str(info.value)


def test_state_dir_follows_xdg(tmp_path: Path) -> None:
    s = load_settings({"XDG_STATE_HOME": str(tmp_path)})
    assert s.default_sqlite_url == f"sqlite:///{tmp_path}/threadstore/threads.db"
    s = load_settings({"HOME": str(tmp_path)})
    assert s.state_dir == tmp_path / ".local/state/threadstore"


# -- open_storage and the singleton ------------------------------------------------------------
def test_open_storage_defaults_to_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("THREADSTORE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    with open_storage() as s:
        assert isinstance(s, MemoryStorage)


def test_memory_url_options() -> None:
    with open_storage("memory://?max_keys=10&max_bytes=100000&sweeper=0") as s:
        stats = s.stats()
        assert stats["max_keys"] == 10
        assert stats["max_bytes"] == 100000
        assert stats["sweeper"] is False


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("memory://?max_keys=ten", "whole number"),
        ("memory://?colour=blue", "unknown memory URL option"),
        ("memory://host/path", "no host or path"),
        ("memory://?max_bytes=5", "max_bytes"),
        ("ftp://x", "memory://"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_storage(url)


def test_singleton_is_shared_and_resettable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THREADSTORE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    threadstore.reset_storage_backend()
    seen: list[object] = []
    barrier = threading.Barrier(16)

    def first_call() -> None:
        barrier.wait()
        seen.append(threadstore.get_storage_backend())

    threads = [threading.Thread(target=first_call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1
    store = threadstore.get_storage_backend()
    store.setex("k", 60, "v")
    threadstore.reset_storage_backend()
    fresh = threadstore.get_storage_backend()
    assert fresh is not store
    assert fresh.get("k") is None
    threadstore.reset_storage_backend()


def test_singleton_reports_bad_config(monkeypatch: pytest.MonkeyPatch) -> None:
    threadstore.reset_storage_backend()
    monkeypatch.setenv("CONVERSATION_TIMEOUT_HOURS", "abc")
    monkeypatch.setenv("THREADSTORE_URL", "memory://")
    with pytest.raises(ConfigError, match="CONVERSATION_TIMEOUT_HOURS"):
        threadstore.get_storage_backend()


def test_fallback_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="fallback"):
        open_storage("memory://", fallback="sometimes")  # type: ignore[arg-type]


def test_no_warning_for_memory(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), open_storage("memory://"):
        pass
    assert caplog.records == []


# -- redaction ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host", "redis://:***@host"),
        ("rediss://s3cret@host", "rediss://***@host"),
        ("redis://host:6379", "redis://host:6379"),
        ("unix:///tmp/r.sock?password=s3cret&db=1", "unix:///tmp/r.sock?password=***&db=1"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text() -> None:
    text = "Error connecting to redis://u:pa55@h:1 with token=abc and pa55 again"
    out = redact_text(text, "pa55")
    assert "pa55" not in out
    assert "abc" not in out
