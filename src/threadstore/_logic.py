"""The conversation logic, written once for both facades.

Each operation is a generator that yields the storage calls it needs (``Call``) and receives
their answers; ``ThreadStore`` runs it against a store directly, ``AsyncThreadStore`` awaits each
call through the store's async side. No I/O happens here, so the logic is the same code on every
backend and in both worlds (the "sans-I/O" style of h11 and friends).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from ._errors import (
    CorruptData,
    InvalidInput,
    InvalidThreadId,
    StorageUnavailable,
    ThreadFull,
    ThreadNotFound,
    ThreadstoreError,
    WrongType,
)
from ._history import TokenCounter, build_history
from ._ids import ALL_THREADS, KEY_PREFIX, check_thread_id, new_thread_id, thread_key
from ._models import ROLES, History, Thread, ThreadMeta, ThreadPage, ThreadSummary, Turn, utcnow
from ._storage import APPEND_FULL, APPEND_MISSING, check_scope, check_text, check_ttl

T = TypeVar("T")
log = logging.getLogger("threadstore")

DEFAULT_MAX_TURN_BYTES = 1_000_000
"""Largest stored turn (its JSON, in UTF-8 bytes): content, files, images and metadata."""
DEFAULT_MAX_METADATA_BYTES = 64 * 1024
"""Largest turn ``metadata`` or thread ``initial_context`` (JSON, UTF-8 bytes)."""
MAX_NAME_LENGTH = 200
"""Longest tool, provider or model name."""
EXPORT_PAGE = 100
"""Threads read per index page while exporting: the export holds at most this many ids."""


@dataclass(frozen=True, slots=True)
class Call:
    """One storage call an operation needs: ``getattr(storage, method)(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Op = Generator[Call, Any, T]


def _text(value: object, what: str, *, limit: int | None = None, empty: bool = True) -> str:
    if type(value) is not str:
        raise InvalidInput(f"{what} must be a str, got {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if limit is not None and len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters long; the maximum is {limit}")
    return check_text(value, what)


def _name(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what, limit=MAX_NAME_LENGTH, empty=False)


def _str_list(value: object, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{what} must be a list of str, got {type(value).__name__}")
    return [_text(v, f"{what}[{i}]", limit=4096, empty=False) for i, v in enumerate(value)]


def _json_dict(value: object, what: str, limit: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a dict, got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
        size = len(encoded.encode("utf-8"))
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply to store as JSON") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{what} must hold only JSON values (dicts with str keys, lists, str, finite numbers,"
            f" bools, None): {exc}"
        ) from None
    if size > limit:
        raise InvalidInput(f"{what} is {size} bytes of JSON; the maximum is {limit}")
    if any(type(k) is not str for k in value):
        raise InvalidInput(f"{what} keys must be str")
    return dict(value)


def _decode_meta(raw: str, thread_id: str) -> ThreadMeta:
    try:
        return ThreadMeta.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptData(
            f"thread {thread_id}: its stored header cannot be decoded ({_first(exc)})"
        ) from None


def _decode_turn(raw: str, thread_id: str, number: int) -> Turn:
    try:
        return Turn.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptData(
            f"thread {thread_id}: stored turn {number} cannot be decoded ({_first(exc)})"
        ) from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"


def _decode_thread(items: list[str], thread_id: str) -> Thread:
    meta = _decode_meta(items[0], thread_id)
    turns = [_decode_turn(raw, thread_id, n) for n, raw in enumerate(items[1:], 1)]
    return Thread(
        thread_id=thread_id,
        parent_thread_id=meta.parent_thread_id,
        created_at=meta.created_at,
        last_updated_at=turns[-1].timestamp if turns else meta.created_at,
        tool_name=meta.tool_name,
        initial_context=meta.initial_context,
        turns=turns,
    )


def _last_activity(raw: str, thread_id: str, length: int) -> datetime:
    """When the thread last changed: its last turn's time, or its creation for no turns."""
    if length == 1:
        return _decode_meta(raw, thread_id).created_at
    return _decode_turn(raw, thread_id, length - 1).timestamp


def _micros(stamp: datetime) -> int:
    """A timestamp as the index score: microseconds since the epoch (0 for earlier times)."""
    return max(0, int(stamp.timestamp()) * 1_000_000 + stamp.microsecond)


def _encode_cursor(micros: int, thread_id: str) -> str:
    return base64.urlsafe_b64encode(f"{micros}:{thread_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: object) -> tuple[int, str]:
    if type(cursor) is not str or len(cursor) > 200:
        raise InvalidInput("cursor must be the next_cursor string of a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, _, thread_id = raw.partition(":")
        return int(micros), check_thread_id(thread_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            f"invalid cursor {cursor[:40]!r}: pass the next_cursor of a previous page"
        ) from None


@dataclass(frozen=True, slots=True)
class Logic:
    """Settings plus the operations; shared by ThreadStore and AsyncThreadStore."""

    ttl_seconds: float
    max_turns: int
    max_turn_bytes: int = DEFAULT_MAX_TURN_BYTES
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES

    def __post_init__(self) -> None:
        check_ttl(self.ttl_seconds)
        for name in ("max_turns", "max_turn_bytes", "max_metadata_bytes"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 1 << 40:
                raise InvalidInput(f"{name} must be a positive int up to 2**40, got {value!r}")

    def not_found(self, thread_id: str) -> ThreadNotFound:
        hours = self.ttl_seconds / 3600
        return ThreadNotFound(
            f"thread {thread_id} was not found: it never existed or it expired (threads expire"
            f" {hours:g} hour{'s' if hours != 1 else ''} after their last turn;"
            " CONVERSATION_TIMEOUT_HOURS sets it). Start a new thread."
        )

    # -- writes ---------------------------------------------------------------------------------
    def create_thread(
        self,
        tool_name: str,
        initial_context: dict[str, Any] | None = None,
        parent_thread_id: str | None = None,
    ) -> Op[str]:
        name = _text(tool_name, "tool_name", limit=MAX_NAME_LENGTH, empty=False)
        context = _json_dict(initial_context, "initial_context", self.max_metadata_bytes)
        parent = None
        if parent_thread_id is not None:
            parent = check_thread_id(parent_thread_id, "parent_thread_id")
        for _ in range(3):  # a UUID4 collision is astronomically unlikely; never overwrite one
            thread_id = new_thread_id()
            meta = ThreadMeta(
                thread_id=thread_id,
                parent_thread_id=parent,
                created_at=utcnow(),
                tool_name=name,
                initial_context=context,
            )
            created = yield Call(
                "list_create",
                (thread_key(thread_id), self.ttl_seconds, meta.model_dump_json(exclude_none=True)),
                {"scopes": (ALL_THREADS,), "score": _micros(meta.created_at)},
            )
            if created:
                return thread_id
        raise StorageUnavailable(  # pragma: no cover - three UUID4 collisions in a row
            "could not allocate a fresh thread id: the store reports every new id as taken"
        )

    def add_turn(
        self,
        thread_id: str,
        role: str,
        content: str,
        *,
        files: list[str] | None = None,
        images: list[str] | None = None,
        tool_name: str | None = None,
        model_provider: str | None = None,
        model_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[Turn]:
        check_thread_id(thread_id)
        turn = Turn.model_construct(
            role=role,
            content=content,
            timestamp=utcnow(),
            files=files,
            images=images,
            tool_name=tool_name,
            model_provider=model_provider,
            model_name=model_name,
            metadata=metadata,
        )
        turn, payload = self._turn_payload(turn)
        n = yield Call(
            "list_append",
            (thread_key(thread_id), payload),
            {
                "max_items": self.max_turns + 1,
                "ttl_seconds": self.ttl_seconds,
                "score": _micros(turn.timestamp),
            },
        )
        if n == APPEND_MISSING:
            raise self.not_found(thread_id)
        if n == APPEND_FULL:
            raise ThreadFull(
                f"thread {thread_id} has reached its maximum of {self.max_turns} turns"
                " (MAX_CONVERSATION_TURNS). Start a new thread with"
                f" parent_thread_id={thread_id} to continue the conversation."
            )
        return turn

    def _turn_payload(self, turn: Turn) -> tuple[Turn, str]:
        """Check every field of a turn; the checked turn and its stored JSON (or InvalidInput)."""
        if turn.role not in ROLES or type(turn.role) is not str:
            raise InvalidInput(f"unknown role {turn.role!r}: expected 'user' or 'assistant'")
        checked = Turn.model_construct(
            role=turn.role,
            content=_text(turn.content, "content"),
            timestamp=turn.timestamp,
            files=_str_list(turn.files, "files"),
            images=_str_list(turn.images, "images"),
            tool_name=_name(turn.tool_name, "tool_name"),
            model_provider=_name(turn.model_provider, "model_provider"),
            model_name=_name(turn.model_name, "model_name"),
            metadata=_json_dict(turn.metadata, "metadata", self.max_metadata_bytes),
        )
        payload = checked.model_dump_json(exclude_none=True)
        size = len(payload.encode("utf-8"))
        if size > self.max_turn_bytes:
            raise InvalidInput(
                f"turn is {size} bytes as stored; the maximum is {self.max_turn_bytes}"
                " (split the content or store large files elsewhere and pass their paths)"
            )
        return checked, payload

    def delete_thread(self, thread_id: str) -> Op[bool]:
        deleted: bool = yield Call("delete", (thread_key(check_thread_id(thread_id)),))
        return deleted

    # -- reads ----------------------------------------------------------------------------------
    def get_thread(self, thread_id: str) -> Op[Thread | None]:
        check_thread_id(thread_id)
        items: list[str] = yield Call("list_range", (thread_key(thread_id),))
        return _decode_thread(items, thread_id) if items else None

    def require_thread(self, thread_id: str) -> Op[Thread]:
        thread = yield from self.get_thread(thread_id)
        if thread is None:
            raise self.not_found(thread_id)
        return thread

    def count_threads(self, *, scope: str = ALL_THREADS) -> Op[int]:
        """Live threads in an index scope (all of them by default): O(log n)."""
        count: int = yield Call("index_count", (check_scope(scope),))
        return count

    def get_thread_chain(self, thread_id: str, max_depth: int = 20) -> Op[list[Thread]]:
        check_thread_id(thread_id)
        if type(max_depth) is not int or max_depth < 1:
            raise InvalidInput(f"max_depth must be a positive int, got {max_depth!r}")
        chain: list[Thread] = []
        seen: set[str] = set()
        current: str | None = thread_id
        while current is not None and current not in seen and len(chain) < max_depth:
            seen.add(current)
            thread = yield from self.get_thread(current)
            if thread is None:
                break
            chain.append(thread)
            current = thread.parent_thread_id
        chain.reverse()
        return chain

    def build_history(
        self, thread_id: str, *, max_tokens: int, token_counter: TokenCounter | None = None
    ) -> Op[History]:
        chain = yield from self.get_thread_chain(thread_id)
        if not chain:
            raise self.not_found(thread_id)
        return build_history(chain, max_tokens, token_counter)

    def list_threads(
        self, *, limit: int = 50, cursor: str | None = None, scope: str = ALL_THREADS
    ) -> Op[ThreadPage]:
        """A page of the threads filed under ``scope``, most recent activity first.

        One index page (O(log n + limit)) plus four reads per thread listed. The order is the
        index score, the stored time of the last turn (or creation), so a cursor (last
        activity, id) pages without gaps or repeats for threads that stay put.
        """
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an int from 1 to 1000, got {limit!r}")
        check_scope(scope)
        after = None
        if cursor is not None:
            micros, thread_id = _decode_cursor(cursor)
            after = (micros, thread_key(thread_id))
        entries: list[tuple[int, str]] = yield Call("index_page", (scope, limit + 1, after))
        summaries: list[ThreadSummary] = []
        for _, key in entries[:limit]:
            if not key.startswith(KEY_PREFIX):
                continue  # not a thread (the scope is shared with other kinds of lists)
            try:
                summary = yield from self._summary(key[len(KEY_PREFIX) :])
            except (CorruptData, WrongType) as exc:  # one damaged thread does not hide the rest
                log.warning("threadstore: list_threads skips a thread: %s", exc)
                continue
            if summary is not None:
                summaries.append(summary)
        next_cursor = None
        if len(entries) > limit:
            micros, key = entries[limit - 1]
            next_cursor = _encode_cursor(micros, key[len(KEY_PREFIX) :])
        return ThreadPage(threads=summaries, next_cursor=next_cursor)

    def _summary(self, thread_id: str) -> Op[ThreadSummary | None]:
        """A listed thread's row (its last turn is decoded too: a damaged thread is skipped, not
        listed). None if it expired meanwhile."""
        key = thread_key(thread_id)
        length: int = yield Call("list_length", (key,))
        if not length:
            return None
        head: list[str] = yield Call("list_range", (key, 0, 1))
        left: float | None = yield Call("ttl", (key,))
        last: list[str] = yield Call("list_range", (key, length - 1, length))
        if not head or left is None or not last:
            return None  # expired meanwhile
        meta = _decode_meta(head[0], thread_id)
        return ThreadSummary(
            thread_id=thread_id,
            parent_thread_id=meta.parent_thread_id,
            tool_name=meta.tool_name,
            created_at=meta.created_at,
            last_updated_at=_last_activity(last[0], thread_id, length),
            turn_count=length - 1,
            expires_in_seconds=round(left, 3),
        )

    def _rank(self, thread_id: str) -> Op[tuple[int, str, int] | None]:
        """(last activity in µs, id, length) of a live thread read from its items; None if it
        expired meanwhile. For reindex(): the index keeps this score for listing."""
        key = thread_key(thread_id)
        length: int = yield Call("list_length", (key,))
        if not length:
            return None
        last: list[str] = yield Call("list_range", (key, length - 1, length))
        if not last:
            return None
        return _micros(_last_activity(last[0], thread_id, length)), thread_id, length

    def reindex(self) -> Op[int]:
        """File every live thread in the index (a backfill after upgrading a Redis store whose
        threads were written by an older release). O(threads); idempotent; safe while the store
        is in use. Returns the number of threads filed; damaged ones are skipped (logged)."""
        keys: list[str] = yield Call("scan", (KEY_PREFIX,))
        filed = 0
        for key in keys:
            thread_id = key[len(KEY_PREFIX) :]
            try:
                check_thread_id(thread_id)
                entry = yield from self._rank(thread_id)
            except (CorruptData, WrongType, InvalidThreadId) as exc:
                log.warning("threadstore: reindex skips %r: %s", key, exc)
                continue
            if entry is not None:
                done = yield Call("index_put", (key, (ALL_THREADS,), entry[0]))
                filed += bool(done)
        return filed

    # -- export / import ------------------------------------------------------------------------
    def export_page(
        self, after: tuple[int, str] | None = None
    ) -> Op[tuple[list[str], tuple[int, str] | None]]:
        """The next few threads of an export as JSON lines, oldest activity first, and the
        position to pass for the page after (None at the end). A thread that gets a turn while
        an export runs moves ahead of the position: it is exported (perhaps twice, the later
        line newer), never missed."""
        entries: list[tuple[int, str]] = yield Call(
            "index_page", (ALL_THREADS, EXPORT_PAGE, after), {"ascending": True}
        )
        lines: list[str] = []
        for _, key in entries:
            if key.startswith(KEY_PREFIX):
                line = yield from self.export_line(key[len(KEY_PREFIX) :])
                if line is not None:
                    lines.append(line)
        return lines, (entries[-1] if len(entries) == EXPORT_PAGE else None)

    def export_line(self, thread_id: str) -> Op[str | None]:
        """One thread as a JSON line; None when it expired meanwhile or is damaged (logged)."""
        try:
            thread = yield from self.get_thread(thread_id)
        except (CorruptData, WrongType) as exc:
            log.warning("threadstore: export skips a thread: %s", exc)
            return None
        return None if thread is None else thread.model_dump_json(exclude_none=True)

    def import_thread(self, line: str, *, replace: bool = False) -> Op[bool]:
        """Store one exported JSON line; False when the thread exists and ``replace`` is off."""
        try:
            thread = Thread.model_validate_json(line)
        except ValidationError as exc:
            raise InvalidInput(f"not an exported thread ({_first(exc)})") from None
        thread_id = check_thread_id(thread.thread_id)
        if thread.parent_thread_id is not None:
            check_thread_id(thread.parent_thread_id, "parent_thread_id")
        # The same checks as create_thread and add_turn, before anything is written.
        _text(thread.tool_name, "tool_name", limit=MAX_NAME_LENGTH, empty=False)
        _json_dict(thread.initial_context, "initial_context", self.max_metadata_bytes)
        payloads = [self._turn_payload(turn)[1] for turn in thread.turns]
        key = thread_key(thread_id)
        meta = ThreadMeta(
            thread_id=thread_id,
            parent_thread_id=thread.parent_thread_id,
            created_at=thread.created_at,
            tool_name=thread.tool_name,
            initial_context=thread.initial_context,
        )
        if replace:
            yield Call("delete", (key,))
        created = yield Call(
            "list_create",
            (key, self.ttl_seconds, meta.model_dump_json(exclude_none=True)),
            {"scopes": (ALL_THREADS,), "score": _micros(thread.created_at)},
        )
        if not created:
            return False
        max_items = max(self.max_turns, len(payloads)) + 1
        try:
            for turn, payload in zip(thread.turns, payloads, strict=True):
                yield Call(
                    "list_append",
                    (key, payload),
                    {
                        "max_items": max_items,
                        "ttl_seconds": self.ttl_seconds,
                        "score": _micros(turn.timestamp),
                    },
                )
        except ThreadstoreError:
            yield Call("delete", (key,))  # no half-imported thread left behind
            raise
        return True
