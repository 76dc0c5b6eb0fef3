"""build_history as a pure function: properties over random threads, budgets and counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadstore import InvalidInput, Thread, Turn, estimate_tokens
from threadstore._history import build_history

T0 = datetime(2026, 1, 1, tzinfo=UTC)

turn_st = st.builds(
    Turn,
    role=st.sampled_from(["user", "assistant"]),
    content=st.text(max_size=300),
    timestamp=st.just(T0),
    files=st.none() | st.lists(st.sampled_from(["a.py", "b.py", "c.md", "d/e.txt"]), max_size=3),
    tool_name=st.none() | st.sampled_from(["chat", "review"]),
    model_name=st.none() | st.just("model-x"),
)


def make_chain(turn_lists: list[list[Turn]]) -> list[Thread]:
    chain = []
    parent = None
    for i, turns in enumerate(turn_lists):
        tid = f"00000000-0000-4000-8000-{i:012d}"
        chain.append(
            Thread(
                thread_id=tid,
                parent_thread_id=parent,
                created_at=T0 + timedelta(minutes=i),
                last_updated_at=T0 + timedelta(minutes=i),
                tool_name="chat",
                turns=turns,
            )
        )
        parent = tid
    return chain


def words(text: str) -> int:
    """A counter that is not additive over concatenation, unlike characters/4."""
    return len(text.split())


@settings(max_examples=150, deadline=None)
@given(
    turn_lists=st.lists(st.lists(turn_st, max_size=12), min_size=1, max_size=4),
    max_tokens=st.integers(min_value=0, max_value=3000),
    counter=st.sampled_from([None, words, len]),
)
def test_history_properties(turn_lists: list[list[Turn]], max_tokens: int, counter) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(turn_lists)
    history = build_history(chain, max_tokens, counter)
    count = counter or estimate_tokens
    all_turns = [t for thread in chain for t in thread.turns]
    # never over budget, and the reported figure is the real one
    assert history.tokens <= max_tokens
    assert history.tokens == (count(history.text) if history.text else 0)
    assert history.turns_included + history.turns_omitted == len(all_turns)
    # the newest turns are the ones kept, numbered across the chain, presented oldest first
    k = history.turns_included
    numbers = [
        int(line.split()[2]) for line in history.text.splitlines() if line.startswith("--- Turn ")
    ]
    assert numbers == list(range(len(all_turns) - k + 1, len(all_turns) + 1))
    # files of the included turns listed once, newest mention first
    expected: list[str] = []
    for turn in reversed(all_turns[len(all_turns) - k :]):
        for f in turn.files or ():
            if f not in expected:
                expected.append(f)
    assert history.files == expected
    assert history.thread_ids == [t.thread_id for t in chain]


def test_everything_fits_when_budget_allows() -> None:
    turns = [Turn(role="user", content=f"message {i}", timestamp=T0) for i in range(5)]
    h = build_history(make_chain([turns]), 10_000)
    assert h.turns_included == 5
    assert "omitted" not in h.text


def test_small_budget_keeps_newest() -> None:
    turns = [Turn(role="user", content="x" * 400, timestamp=T0) for _ in range(10)]
    h = build_history(make_chain([turns]), 400)
    assert 0 < h.turns_included < 10
    assert "Turn 10 (user)" in h.text
    assert "Turn 1 (user)" not in h.text
    assert "earlier turns omitted" in h.text


def test_zero_budget_is_empty() -> None:
    h = build_history(make_chain([[Turn(role="user", content="hi", timestamp=T0)]]), 0)
    assert h.text == ""
    assert h.turns_omitted == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "100", None, True])
def test_bad_budget(bad: object) -> None:
    with pytest.raises(InvalidInput, match="max_tokens"):
        build_history(make_chain([[]]), bad)  # type: ignore[arg-type]


def test_bad_counter() -> None:
    chain = make_chain([[Turn(role="user", content="hi", timestamp=T0)]])
    with pytest.raises(InvalidInput, match="token_counter"):
        build_history(chain, 100, lambda s: -1)
    with pytest.raises(InvalidInput, match="token_counter"):
        build_history(chain, 100, lambda s: 1.5)  # type: ignore[arg-type,return-value]
