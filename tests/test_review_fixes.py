"""Regressions for bugs found in review: each once let bad input or a secret through."""

from __future__ import annotations

import json
import uuid

import pytest

from threadstore import (
    ConfigError,
    InvalidInput,
    MemoryStorage,
    StorageUnavailable,
    ThreadStore,
    open_storage,
)
from threadstore._redact import redact_url


def test_none_ttl_is_invalid_input_on_a_fresh_memory_store() -> None:
    with pytest.raises(InvalidInput, match="ttl"):
        MemoryStorage(sweeper=False).set_with_ttl("k", None, "v")  # type: ignore[arg-type]


@pytest.mark.parametrize("existing", [False, True], ids=["new key", "overwrite"])
def test_write_racing_close_is_refused(existing: bool) -> None:
    store = MemoryStorage(sweeper=False)
    if existing:
        store.set_with_ttl("k", 60, "old")
    real_clock = store._clock

    def clock_then_close() -> float:
        now = real_clock()
        store.close()  # close() lands between the clock read and the lock
        return now

    store._clock = clock_then_close
    with pytest.raises(StorageUnavailable):
        store.set_with_ttl("k", 60, "v")
    assert store._data == {}


@pytest.mark.parametrize(
    "url", ["redis://user:s3cr/et@host:1/0", "redis://:p#ss@h/0", "memory://admin:hunter2@host"]
)
def test_passwords_with_url_delimiters_are_redacted(url: str) -> None:
    secret = url.split(":")[2].split("@")[0]
    assert secret not in redact_url(url)
    with pytest.raises(ConfigError) as info:
        open_storage(url, fallback="fail")
    assert secret not in str(info.value)


def test_huge_max_turns_is_refused(tmp_path: object) -> None:
    with pytest.raises(InvalidInput, match="max_turns"):
        ThreadStore(MemoryStorage(sweeper=False), ttl_seconds=60, max_turns=2**63)
    with pytest.raises(InvalidInput, match="max_items"):
        MemoryStorage(sweeper=False).list_append("l", "x", max_items=2**63, ttl_seconds=60)


def _line(**overrides: object) -> str:
    now = "2026-01-01T00:00:00Z"
    turn = {"role": "user", "content": "ok", "timestamp": now}
    thread = {"thread_id": str(uuid.uuid4()), "created_at": now, "last_updated_at": now,
              "tool_name": "t", "turns": [turn]}  # fmt: skip
    thread.update(overrides)
    return json.dumps(thread)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"tool_name": ""}, "tool_name"),
        ({"initial_context": {"x": "y" * 70_000}}, "initial_context"),
        (
            {
                "turns": [
                    {
                        "role": "user",
                        "content": "x",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "tool_name": "n" * 5000,
                    }
                ]
            },
            "tool_name",
        ),
        (
            {
                "turns": [
                    {
                        "role": "user",
                        "content": "x",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "metadata": {"m": "z" * 100_000},
                    }
                ]
            },
            "metadata",
        ),
    ],
)
def test_import_applies_the_same_checks_and_stores_nothing(
    overrides: dict[str, object], match: str
) -> None:
    store = ThreadStore(MemoryStorage(sweeper=False), ttl_seconds=60, max_turns=10)
    with pytest.raises(InvalidInput, match=match):
        store.import_threads([_line(**overrides)])
    assert list(store.storage.scan()) == []
