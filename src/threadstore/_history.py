"""Token-budgeted history: pure functions, no storage.

The newest turns are taken first until the budget is spent, then presented oldest first with
their numbers across the whole parent chain; the files they mention are listed once, newest
mention first. The final text is measured with the caller's counter, so no history ever exceeds
``max_tokens`` whatever the counter does with separators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._errors import InvalidInput
from ._models import History, Thread, Turn

TokenCounter = Callable[[str], int]

_SEPARATOR = "\n\n"


def estimate_tokens(text: str) -> int:
    """The default counter: about four characters per token, rounded up."""
    return (len(text) + 3) // 4


def render_turn(number: int, turn: Turn) -> str:
    who = turn.role
    details = [d for d in (turn.tool_name and f"tool {turn.tool_name}",) if d]
    if turn.model_name:
        details.append(
            f"{turn.model_provider}/{turn.model_name}" if turn.model_provider else turn.model_name
        )
    head = f"--- Turn {number} ({who}{', ' if details else ''}{', '.join(details)}) ---"
    parts = [head]
    if turn.files:
        parts.append("Files: " + ", ".join(turn.files))
    parts.append(turn.content)
    return "\n".join(parts)


def gone_parent_line(parent: str) -> str:
    return f"Parent thread {parent} is gone (deleted or expired); its turns are not included."


def _frame(
    thread_ids: Sequence[str],
    first: int,
    total: int,
    files: Sequence[str],
    missing_parent: str | None = None,
) -> tuple[str, str]:
    omitted = first - 1
    lines = ["=== CONVERSATION HISTORY ==="]
    if len(thread_ids) > 1:
        lines.append(f"Thread {thread_ids[-1]}, continuing {', '.join(thread_ids[:-1])}")
    else:
        lines.append(f"Thread {thread_ids[-1]}")
    if missing_parent:
        lines.append(gone_parent_line(missing_parent))
    shown = f"Turns {first}-{total} of {total}"
    if omitted:
        shown += f" ({omitted} earlier turn{'s' if omitted != 1 else ''} omitted to fit the budget)"
    lines.append(shown)
    if files:
        lines.append("Files referenced (newest mention first):")
        lines.extend(f"- {f}" for f in files)
    return "\n".join(lines) + _SEPARATOR, _SEPARATOR + "=== END OF HISTORY ==="


def _files_newest_first(turns: Sequence[Turn]) -> list[str]:
    seen: dict[str, None] = {}
    for turn in reversed(turns):
        for f in turn.files or ():
            seen.setdefault(f, None)
    return list(seen)


def _count(counter: TokenCounter, text: str) -> int:
    n = counter(text)
    if type(n) is not int or n < 0:
        raise InvalidInput(f"token_counter must return a non-negative int, got {n!r}")
    return n


def build_history(
    chain: Sequence[Thread],
    max_tokens: int,
    counter: TokenCounter | None = None,
    *,
    missing_parent: str | None = None,
) -> History:
    """Fit the turns of ``chain`` (oldest thread first) into ``max_tokens``.

    ``missing_parent`` is the id of the oldest thread's parent when it is gone: the text says
    so in one line. When not even the newest turn fits, the text is empty and ``note`` says the
    smallest budget that would include it (a turn is never truncated)."""
    if type(max_tokens) is not int or max_tokens < 0:
        raise InvalidInput(f"max_tokens must be a non-negative int, got {max_tokens!r}")
    count = counter or estimate_tokens
    thread_ids = [t.thread_id for t in chain]
    turns = [turn for thread in chain for turn in thread.turns]
    total = len(turns)
    blocks = [render_turn(n, turn) for n, turn in enumerate(turns, 1)]

    # Greedy by estimate, newest first: a contiguous run of the most recent turns.
    k = 0
    spent = 0
    while k < total:
        i = total - 1 - k
        cost = _count(count, blocks[i]) + _count(count, _SEPARATOR)
        files = _files_newest_first(turns[i:])
        head, tail = _frame(thread_ids, i + 1, total, files, missing_parent)
        if spent + cost + _count(count, head) + _count(count, tail) > max_tokens:
            break
        spent += cost
        k += 1

    # Measure the real text; counters need not be additive, so drop the oldest until it fits.
    while k > 0:
        first = total - k
        files = _files_newest_first(turns[first:])
        head, tail = _frame(thread_ids, first + 1, total, files, missing_parent)
        text = head + _SEPARATOR.join(blocks[first:]) + tail
        tokens = _count(count, text)
        if tokens <= max_tokens:
            return History(
                text=text,
                tokens=tokens,
                max_tokens=max_tokens,
                turns_included=k,
                turns_omitted=total - k,
                files=files,
                thread_ids=thread_ids,
                note=gone_parent_line(missing_parent) if missing_parent else None,
            )
        k -= 1
    notes = [gone_parent_line(missing_parent)] if missing_parent else []
    if total:
        files = _files_newest_first(turns[-1:])
        head, tail = _frame(thread_ids, total, total, files, missing_parent)
        # As the greedy pass above prices it (parts counted apart), and as measured whole.
        parts = sum(_count(count, p) for p in (blocks[-1], _SEPARATOR, head, tail))
        needed = max(parts, _count(count, head + blocks[-1] + tail))
        notes.insert(
            0,
            f"No turn fits in max_tokens={max_tokens}: the newest turn alone needs {needed}"
            f" tokens with the history's headers; call again with max_tokens of at least"
            f" {needed}.",
        )
    return History(
        text="",
        tokens=0,
        max_tokens=max_tokens,
        turns_included=0,
        turns_omitted=total,
        files=[],
        thread_ids=thread_ids,
        note=" ".join(notes) or None,
    )
