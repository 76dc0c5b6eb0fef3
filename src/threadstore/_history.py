"""Token-budgeted history: pure functions, no storage.

The newest turns are taken first until the budget is spent (the stores read them in that order,
one turn or a few small ones at a time, and stop there: see ``HistoryBuilder``), then presented
oldest first with their numbers across the whole parent chain; the files they mention are listed
once, newest mention first. The final text is measured with the caller's counter, so no history
ever exceeds ``max_tokens`` whatever the counter does with separators.
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


def _count(counter: TokenCounter, text: str) -> int:
    n = counter(text)
    if type(n) is not int or n < 0:
        raise InvalidInput(f"token_counter must return a non-negative int, got {n!r}")
    return n


class HistoryBuilder:
    """Fits turns offered newest first into ``max_tokens`` (sans-I/O: the caller reads them).

    ``offer`` takes the next older turn and says whether it fit; the caller stops reading at
    the first one that does not, so what is held is the budget's worth of rendered text plus
    the one turn that did not fit, never the whole chain. ``result`` measures the real text.
    ``missing_parent`` is the id of the oldest thread's parent when it is gone: the text says
    so in one line. When not even the newest turn fits, the text is empty and ``note`` says the
    smallest budget that would include it (a turn is never truncated).
    """

    def __init__(
        self,
        thread_ids: Sequence[str],
        total: int,
        max_tokens: int,
        counter: TokenCounter | None = None,
        *,
        missing_parent: str | None = None,
    ) -> None:
        check_budget(max_tokens)
        self._thread_ids = list(thread_ids)
        self._total = total
        self._max_tokens = max_tokens
        self._count = counter or estimate_tokens
        self._missing = missing_parent
        self._taken: list[tuple[str, tuple[str, ...]]] = []  # (block, files), newest first
        self._files: dict[str, None] = {}  # files of the taken turns, newest mention first
        self._spent = 0
        self._full = False
        self._newest: tuple[str, tuple[str, ...]] | None = None  # for the "no turn fits" note

    def offer(self, number: int, turn: Turn) -> bool:
        """Take turn ``number`` (the next older one) if it fits; False: stop offering."""
        if self._full:
            return False
        count = self._count
        block = render_turn(number, turn)
        turn_files = tuple(turn.files or ())
        if self._newest is None:
            self._newest = (block, turn_files)
        cost = _count(count, block) + _count(count, _SEPARATOR)
        files = dict(self._files)
        for f in turn_files:
            files.setdefault(f, None)
        head, tail = _frame(self._thread_ids, number, self._total, list(files), self._missing)
        if self._spent + cost + _count(count, head) + _count(count, tail) > self._max_tokens:
            self._full = True
            return False
        self._spent += cost
        self._taken.append((block, turn_files))
        self._files = files
        return True

    def result(self) -> History:
        # Measure the real text; counters need not be additive, so drop the oldest until it fits.
        total = self._total
        missing = self._missing
        k = len(self._taken)
        while k > 0:
            taken = self._taken[:k]
            files = _files_of(taken)
            head, tail = _frame(self._thread_ids, total - k + 1, total, files, missing)
            text = head + _SEPARATOR.join(block for block, _ in reversed(taken)) + tail
            tokens = _count(self._count, text)
            if tokens <= self._max_tokens:
                return History(
                    text=text,
                    tokens=tokens,
                    max_tokens=self._max_tokens,
                    turns_included=k,
                    turns_omitted=total - k,
                    files=files,
                    thread_ids=self._thread_ids,
                    note=gone_parent_line(missing) if missing else None,
                )
            k -= 1
        notes = [gone_parent_line(missing)] if missing else []
        if self._newest is not None:
            block, _ = self._newest
            files = _files_of([self._newest])
            head, tail = _frame(self._thread_ids, total, total, files, missing)
            # As the greedy pass prices it (parts counted apart), and as measured whole.
            count = self._count
            parts = sum(_count(count, p) for p in (block, _SEPARATOR, head, tail))
            needed = max(parts, _count(count, head + block + tail))
            notes.insert(
                0,
                f"No turn fits in max_tokens={self._max_tokens}: the newest turn alone needs"
                f" {needed} tokens with the history's headers; call again with max_tokens of at"
                f" least {needed}.",
            )
        return History(
            text="",
            tokens=0,
            max_tokens=self._max_tokens,
            turns_included=0,
            turns_omitted=total,
            files=[],
            thread_ids=self._thread_ids,
            note=" ".join(notes) or None,
        )


def _files_of(taken: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """The files of taken turns (newest first), each once, newest mention first."""
    seen: dict[str, None] = {}
    for _, turn_files in taken:
        for f in turn_files:
            seen.setdefault(f, None)
    return list(seen)


def check_budget(max_tokens: object) -> None:
    if type(max_tokens) is not int or max_tokens < 0:
        raise InvalidInput(f"max_tokens must be a non-negative int, got {max_tokens!r}")


def build_history(
    chain: Sequence[Thread],
    max_tokens: int,
    counter: TokenCounter | None = None,
    *,
    missing_parent: str | None = None,
) -> History:
    """Fit the turns of ``chain`` (oldest thread first, already read) into ``max_tokens``; the
    stores read theirs newest first instead (``Logic.build_history``), through the same
    ``HistoryBuilder``."""
    turns = [turn for thread in chain for turn in thread.turns]
    builder = HistoryBuilder(
        [t.thread_id for t in chain], len(turns), max_tokens, counter, missing_parent=missing_parent
    )
    for number in range(len(turns), 0, -1):  # newest first: a contiguous run of the most recent
        if not builder.offer(number, turns[number - 1]):
            break
    return builder.result()
