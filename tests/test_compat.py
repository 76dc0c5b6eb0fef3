"""threadstore.compat: a server written against the original module switches by one import."""

from __future__ import annotations

import uuid

import pytest

from threadstore import compat


@pytest.fixture(autouse=True)
def _memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADSTORE_URL", "memory://")
    monkeypatch.setenv("MAX_CONVERSATION_TURNS", "3")


def test_original_flow() -> None:
    tid = compat.create_thread("chat", {"prompt": "hi", "files": ["a.py"]})
    assert compat.add_turn(tid, "user", "hello", files=["a.py"], model_metadata={"t": 1}) is True
    assert compat.add_turn(tid, "assistant", "hi!", model_provider="p", model_name="m") is True
    thread = compat.get_thread(tid)
    assert thread is not None
    assert thread.initial_context == {"prompt": "hi", "files": ["a.py"]}
    assert [t.role for t in thread.turns] == ["user", "assistant"]
    assert thread.turns[0].model_metadata == {"t": 1}
    child = compat.create_thread("chat", {}, parent_thread_id=tid)
    assert [t.thread_id for t in compat.get_thread_chain(child)] == [tid, child]


def test_failures_are_answers_not_exceptions() -> None:
    assert compat.get_thread("not-a-uuid") is None
    assert compat.get_thread(str(uuid.uuid4())) is None
    assert compat.get_thread_chain("../etc") == []
    assert compat.add_turn(str(uuid.uuid4()), "user", "x") is False
    assert compat.add_turn("bad", "user", "x") is False
    tid = compat.create_thread("chat", {})
    assert compat.add_turn(tid, "robot", "x") is False
    for i in range(3):
        assert compat.add_turn(tid, "user", f"{i}") is True
    assert compat.add_turn(tid, "user", "full") is False
