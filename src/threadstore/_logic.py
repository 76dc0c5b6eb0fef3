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
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from . import _auth
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
from ._history import HistoryBuilder, TokenCounter, check_budget
from ._ids import (
    ALL_THREADS,
    KEY_PREFIX,
    check_thread_id,
    new_thread_id,
    owner_scope,
    thread_key,
)
from ._models import ROLES, History, Thread, ThreadMeta, ThreadPage, ThreadSummary, Turn, utcnow
from ._storage import (
    APPEND_FULL,
    APPEND_MISSING,
    ListEnds,
    check_key,
    check_scope,
    check_text,
    check_ttl,
)

T = TypeVar("T")
log = logging.getLogger("threadstore")

DEFAULT_MAX_TURN_BYTES = 1_000_000
"""Largest stored turn (its JSON, in UTF-8 bytes): content, files, images and metadata."""
DEFAULT_MAX_METADATA_BYTES = 64 * 1024
"""Largest turn ``metadata`` or thread ``initial_context`` (JSON, UTF-8 bytes)."""
MAX_NAME_LENGTH = 200
"""Longest tool, provider or model name."""
CHAIN_DEPTH = 20
"""How many threads of a parent chain build_history walks."""
HISTORY_BATCH = 32
"""Most turns build_history reads at once (only while the turns read so far are small)."""
HISTORY_BATCH_BYTES = 64 * 1024
"""build_history reads at most about this much text at once, judged by the largest turn read so
far; a turn larger than this is read alone."""
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


@dataclass(frozen=True, slots=True)
class Rules:
    """What the write operations accept besides sizes. ``STRICT`` is the library's own API;
    ``LENIENT`` is what ``threadstore.compat`` needs to accept every input the original module
    accepted. Stored threads look the same either way, so every reader serves both."""

    roles: frozenset[str] | None = frozenset(ROLES)
    """Allowed turn roles; None accepts any string."""
    max_name_length: int | None = MAX_NAME_LENGTH
    """Longest tool, provider or model name (None: no limit but the turn size)."""
    empty_names: bool = False
    """Whether a tool, provider or model name may be empty."""
    max_path_length: int | None = 4096
    """Longest entry of ``files`` / ``images`` (None: no limit); entries may then be empty."""
    check_id: Callable[[object, str], str] = check_thread_id
    """Accepts or refuses (InvalidThreadId) a thread id given by the caller."""
    strict_parent: bool = True
    """When False, any string is kept as ``parent_thread_id`` without checking it."""


STRICT = Rules()


def _any_string(thread_id: object, what: str = "thread id") -> str:
    """Compat's id rule: any non-empty string, kept exactly as given. The original module stored
    whatever id its ``uuid.uuid4()`` returned (its users' tests patch it to fixed strings) and
    answered None/False for non-UUIDs before reaching storage; compat keeps that check itself."""
    if type(thread_id) is not str or not thread_id:
        return check_thread_id(thread_id, what)  # raises InvalidThreadId with the usual message
    return check_text(thread_id, what)


LENIENT = Rules(
    roles=None,
    max_name_length=None,
    empty_names=True,
    max_path_length=None,
    check_id=_any_string,
    strict_parent=False,
)


def _name(value: object, what: str, rules: Rules = STRICT) -> str | None:
    if value is None:
        return None
    return _text(value, what, limit=rules.max_name_length, empty=rules.empty_names)


def _str_list(value: object, what: str, rules: Rules = STRICT) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{what} must be a list of str, got {type(value).__name__}")
    limit = rules.max_path_length
    return [_text(v, f"{what}[{i}]", limit=limit, empty=limit is None) for i, v in enumerate(value)]


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


def _is_id(rules: Rules, value: str) -> bool:
    try:
        rules.check_id(value, "thread id")
    except InvalidThreadId:
        return False
    return True


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
        owner=meta.owner,
        session_fingerprint=meta.session_fingerprint,
        client_friendly_name=meta.client_friendly_name,
    )


def _ranked(thread_id: str, ends: ListEnds) -> tuple[int, str, int]:
    """(last activity in µs, id, length) from a thread's list_ends."""
    length, _, last, _ = ends
    return _micros(_last_activity(last, thread_id, length)), thread_id, length


def _last_activity(raw: str, thread_id: str, length: int) -> datetime:
    """When the thread last changed: its last turn's time, or its creation for no turns."""
    if length == 1:
        return _decode_meta(raw, thread_id).created_at
    return _decode_turn(raw, thread_id, length - 1).timestamp


EARLIEST_STAMP = datetime(1970, 1, 1, tzinfo=UTC)
"""Imported timestamps must lie between this and a day from now (and carry a timezone)."""


def _check_stamp(stamp: datetime, what: str) -> None:
    """Refuse a timestamp that cannot rank a thread: naive, or outside a sane range."""
    if stamp.tzinfo is None or stamp.utcoffset() is None:
        raise InvalidInput(
            f"{what} {stamp.isoformat()!r} has no timezone: exported timestamps are UTC, e.g."
            " 2026-01-31T12:00:00Z"
        )
    latest = utcnow() + timedelta(days=1)
    if not EARLIEST_STAMP <= stamp <= latest:
        raise InvalidInput(
            f"{what} {stamp.isoformat()!r} is out of range: expected a time between"
            f" {EARLIEST_STAMP:%Y-%m-%d} and tomorrow"
        )


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ThreadstoreError) else f"{type(exc).__name__}: {exc}"


def _micros(stamp: datetime) -> int:
    """A timestamp as the index score: microseconds since the epoch (0 for earlier times)."""
    return max(0, int(stamp.timestamp()) * 1_000_000 + stamp.microsecond)


def _encode_cursor(micros: int, thread_id: str) -> str:
    return base64.urlsafe_b64encode(f"{micros}:{thread_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: object) -> tuple[int, str]:
    # The id is any thread key's id (compat stores ids that are not UUIDs): it only positions
    # the next page, so it is checked as a storage key, not as a UUID.
    if type(cursor) is not str or len(cursor) > 1500:
        raise InvalidInput("cursor must be the next_cursor string of a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, _, thread_id = raw.partition(":")
        check_key(thread_key(thread_id))
        if not thread_id or int(micros) < 0:
            raise ValueError("empty")
        return int(micros), thread_id
    except (ValueError, binascii.Error, UnicodeDecodeError, InvalidInput):
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
    owner: str | None = None
    """The principal acting: threads created are owned by it (None: created without owner)."""
    see_all: bool = True
    """False: only ``owner``'s threads exist for this logic; another principal's thread (or one
    without owner) answers exactly like a missing one. True: every thread (an admin, or the
    unscoped library)."""
    rules: Rules = STRICT

    def __post_init__(self) -> None:
        check_ttl(self.ttl_seconds)
        if self.owner is not None:
            _auth.check_owner(self.owner)
        if not self.see_all and self.owner is None:
            raise InvalidInput("a scoped store needs an owner")
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

    def parent_not_found(self, parent: str) -> ThreadNotFound:
        hours = self.ttl_seconds / 3600
        return ThreadNotFound(
            f"parent_thread_id {parent} was not found: it never existed, was deleted or expired"
            f" (threads expire {hours:g} hour{'s' if hours != 1 else ''} after their last turn;"
            " CONVERSATION_TIMEOUT_HOURS sets it). Create the thread without parent_thread_id,"
            " or with the id of a live thread."
        )

    # -- ownership ------------------------------------------------------------------------------
    def visible(self, meta: ThreadMeta) -> bool:
        """Whether this logic's principal may see (and change) a thread."""
        return self.see_all or meta.owner == self.owner

    def _owned(self, thread_id: str, operation: str) -> Op[bool]:
        """True when the thread is live and visible to this logic. A thread of another
        principal is logged (audit) and answers False, exactly like a missing one."""
        head: list[str] = yield Call("list_range", (thread_key(thread_id), 0, 1))
        if not head:
            return False
        if self.visible(_decode_meta(head[0], thread_id)):
            return True
        _auth.refused(self.owner, operation, thread_id)
        return False

    def _scope(self, scope: str) -> str:
        """The index scope a listing or count reads: a scoped logic only ever its owner's."""
        if self.see_all or self.owner is None:
            return scope
        return owner_scope(self.owner)

    @staticmethod
    def _scopes(owner: str | None) -> tuple[str, ...]:
        """The index scopes a thread is filed under: every thread, and its owner's."""
        return (ALL_THREADS,) if owner is None else (ALL_THREADS, owner_scope(owner))

    # -- writes ---------------------------------------------------------------------------------
    def create_thread(
        self,
        tool_name: str,
        initial_context: dict[str, Any] | None = None,
        parent_thread_id: str | None = None,
        *,
        thread_id: str | None = None,
        session_fingerprint: str | None = None,
        client_friendly_name: str | None = None,
    ) -> Op[str]:
        """Start a thread. With ``thread_id`` given (compat: the caller draws the id, as the
        original module did), a thread already stored under that id is replaced, as the
        original's ``setex`` did; otherwise a fresh UUID4 is drawn and nothing is overwritten."""
        rules = self.rules
        name = _text(tool_name, "tool_name", limit=rules.max_name_length, empty=rules.empty_names)
        context = _json_dict(initial_context, "initial_context", self.max_metadata_bytes)
        parent = None
        if parent_thread_id is not None:
            if rules.strict_parent:
                parent = check_thread_id(parent_thread_id, "parent_thread_id")
            else:
                parent = _text(parent_thread_id, "parent_thread_id")
        fingerprint = _name(session_fingerprint, "session_fingerprint", rules)
        friendly_name = _name(client_friendly_name, "client_friendly_name", rules)
        given = None if thread_id is None else rules.check_id(thread_id, "thread id")
        if not self.see_all and given is not None:
            raise InvalidInput("a store scoped to an owner draws its own thread ids")
        if parent is not None and not self.see_all:
            owned = yield from self._owned(parent, "create_thread")
            if not owned:  # missing or another principal's: the same answer
                raise self.parent_not_found(parent)
        elif parent is not None and rules.strict_parent:  # compat accepts any parent string
            live: int = yield Call("list_length", (thread_key(parent),))
            if not live:
                raise self.parent_not_found(parent)
        for _ in range(3):  # a UUID4 collision is astronomically unlikely; never overwrite one
            tid = given if given is not None else new_thread_id()
            meta = ThreadMeta(
                thread_id=tid,
                parent_thread_id=parent,
                created_at=utcnow(),
                tool_name=name,
                initial_context=context,
                owner=self.owner,
                session_fingerprint=fingerprint,
                client_friendly_name=friendly_name,
            )
            if given is not None:
                yield Call("delete", (thread_key(tid),))
            created = yield Call(
                "list_create",
                (thread_key(tid), self.ttl_seconds, meta.model_dump_json(exclude_none=True)),
                {"scopes": self._scopes(self.owner), "score": _micros(meta.created_at)},
            )
            if created:
                return tid
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
        self.rules.check_id(thread_id, "thread id")
        turn, payload = self._checked_turn(
            role, content, utcnow(), files, images, tool_name, model_provider, model_name, metadata
        )
        # The owner never changes and scoped stores never reuse an id (only compat, unscoped, may
        # recreate one), so checking it first is race-free.
        if not self.see_all and not (yield from self._owned(thread_id, "add_turn")):
            raise self.not_found(thread_id)
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
        return self._checked_turn(
            turn.role,
            turn.content,
            turn.timestamp,
            turn.files,
            turn.images,
            turn.tool_name,
            turn.model_provider,
            turn.model_name,
            turn.metadata,
        )

    def _checked_turn(
        self,
        role: object,
        content: object,
        timestamp: datetime,
        files: object,
        images: object,
        tool_name: object,
        model_provider: object,
        model_name: object,
        metadata: object,
    ) -> tuple[Turn, str]:
        """The turn these fields make once each is checked, and its stored JSON (or
        InvalidInput). Built once: pydantic's model_construct costs microseconds."""
        rules = self.rules
        if type(role) is not str or (rules.roles is not None and role not in rules.roles):
            expected = " or ".join(repr(r) for r in sorted(rules.roles or ()))
            raise InvalidInput(f"unknown role {role!r}: expected {expected or 'a str'}")
        checked = Turn.model_construct(
            role=role,
            content=_text(content, "content"),
            timestamp=timestamp,
            files=_str_list(files, "files", rules),
            images=_str_list(images, "images", rules),
            tool_name=_name(tool_name, "tool_name", rules),
            model_provider=_name(model_provider, "model_provider", rules),
            model_name=_name(model_name, "model_name", rules),
            metadata=_json_dict(metadata, "metadata", self.max_metadata_bytes),
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
        check_thread_id(thread_id)
        if not self.see_all and not (yield from self._owned(thread_id, "delete_thread")):
            return False
        deleted: bool = yield Call("delete", (thread_key(thread_id),))
        return deleted

    # -- reads ----------------------------------------------------------------------------------
    def get_thread(self, thread_id: str) -> Op[Thread | None]:
        return (yield from self._get(thread_id, "get_thread"))

    def _get(self, thread_id: str, operation: str | None) -> Op[Thread | None]:
        """The thread if it is live and visible; a foreign one is audited unless ``operation``
        is None (a parent met while walking a chain: not a request for it)."""
        self.rules.check_id(thread_id, "thread id")
        items: list[str] = yield Call("list_range", (thread_key(thread_id),))
        if not items:
            return None
        thread = _decode_thread(items, thread_id)
        if self.see_all or thread.owner == self.owner:
            return thread
        if operation is not None:
            _auth.refused(self.owner, operation, thread_id)
        return None

    def require_thread(self, thread_id: str) -> Op[Thread]:
        thread = yield from self.get_thread(thread_id)
        if thread is None:
            raise self.not_found(thread_id)
        return thread

    def count_threads(self, *, scope: str = ALL_THREADS) -> Op[int]:
        """Live threads in an index scope (all of them by default; a scoped logic counts only
        its owner's): O(log n)."""
        count: int = yield Call("index_count", (check_scope(self._scope(scope)),))
        return count

    def get_thread_chain(self, thread_id: str, max_depth: int = 20) -> Op[list[Thread]]:
        self.rules.check_id(thread_id, "thread id")
        if type(max_depth) is not int or max_depth < 1:
            raise InvalidInput(f"max_depth must be a positive int, got {max_depth!r}")
        chain: list[Thread] = []
        seen: set[str] = set()
        current: str | None = thread_id
        while current is not None and current not in seen and len(chain) < max_depth:
            seen.add(current)
            if len(chain) and not _is_id(self.rules, current):
                # A parent stored through compat may be any string (the original module kept
                # whatever it was given); one that names no possible thread ends the chain.
                log.debug("threadstore: chain of %s ends at parent %r", thread_id, current[:80])
                break
            # The chain stops at a thread the caller may not see: parents never leak.
            thread = yield from self._get(current, "get_thread_chain" if not chain else None)
            if thread is None:
                break
            chain.append(thread)
            current = thread.parent_thread_id
        chain.reverse()
        return chain

    def build_history(
        self, thread_id: str, *, max_tokens: int, token_counter: TokenCounter | None = None
    ) -> Op[History]:
        """The chain's headers and lengths first, then its turns newest first, a turn (or a few
        small ones) at a time, until the budget is spent: memory is bounded by the budget plus
        one read, whatever the size of the chain. Same text as fitting the whole chain."""
        self.rules.check_id(thread_id, "thread id")
        check_budget(max_tokens)  # bad arguments fail before any read
        chain = yield from self._chain_heads(thread_id)
        if not chain:
            raise self.not_found(thread_id)
        parent = chain[-1][1].parent_thread_id
        # The walk stopped before the chain's limit, not at a cycle: the parent is gone.
        ids = [tid for tid, _, _ in reversed(chain)]
        gone = len(chain) < CHAIN_DEPTH and parent and parent not in ids
        total = sum(length - 1 for _, _, length in chain)
        builder = HistoryBuilder(
            ids, total, max_tokens, token_counter, missing_parent=parent if gone else None
        )
        number = total
        batch = 1
        largest = 0
        for tid, _, length in chain:
            key = thread_key(tid)
            stop = length  # items [1, stop) are still to read, newest (stop - 1) first
            while stop > 1:
                start = max(1, stop - batch)
                raw: list[str] = yield Call("list_range", (key, start, stop))
                if len(raw) != stop - start:  # the thread expired meanwhile: history ends here
                    return builder.result()
                largest = max(largest, *map(len, raw))
                for index in range(stop - 1, start - 1, -1):
                    if not builder.offer(number, _decode_turn(raw[index - start], tid, index)):
                        return builder.result()
                    number -= 1
                raw = []  # not held while the next batch is read
                stop = start
                # Small turns are read a few at a time (fewer round trips); a large one alone.
                batch = max(1, min(batch * 2, HISTORY_BATCH, HISTORY_BATCH_BYTES // (largest or 1)))
        return builder.result()

    def _chain_heads(self, thread_id: str) -> Op[list[tuple[str, ThreadMeta, int]]]:
        """(id, header, list length) of the thread and its ancestors, newest first: the walk of
        ``get_thread_chain`` (cycle-safe, at most CHAIN_DEPTH, stopping at a parent that names
        no possible thread or that the caller may not see) without reading any turn."""
        chain: list[tuple[str, ThreadMeta, int]] = []
        seen: set[str] = set()
        current: str | None = thread_id
        while current is not None and current not in seen and len(chain) < CHAIN_DEPTH:
            seen.add(current)
            if len(chain) and not _is_id(self.rules, current):
                log.debug("threadstore: chain of %s ends at parent %r", thread_id, current[:80])
                break
            key = thread_key(current)
            head: list[str] = yield Call("list_range", (key, 0, 1))
            if not head:
                break
            meta = _decode_meta(head[0], current)
            if not self.visible(meta):
                if not chain:
                    _auth.refused(self.owner, "build_history", current)
                break
            length: int = yield Call("list_length", (key,))
            if not length:
                break  # expired meanwhile
            chain.append((current, meta, length))
            current = meta.parent_thread_id
        return chain

    def list_threads(
        self, *, limit: int = 50, cursor: str | None = None, scope: str = ALL_THREADS
    ) -> Op[ThreadPage]:
        """A page of the threads filed under ``scope``, most recent activity first.

        One index page (O(log n + limit)) plus list_ends of the threads listed (one pipelined
        request for the whole page on Redis). The order is the index score, the stored time of
        the last turn (or creation), so a cursor (last activity, id) pages without gaps or
        repeats for threads that stay put.
        """
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an int from 1 to 1000, got {limit!r}")
        scope = check_scope(self._scope(scope))
        after = None
        if cursor is not None:
            micros, thread_id = _decode_cursor(cursor)
            after = (micros, thread_key(thread_id))
        entries: list[tuple[int, str]] = yield Call("index_page", (scope, limit + 1, after))
        # Other kinds of lists may share a scope: only threads are listed.
        keys = [key for _, key in entries[:limit] if key.startswith(KEY_PREFIX)]
        batch: list[ListEnds | None] | None = None
        if keys:
            try:
                batch = yield Call("list_ends_many", (keys,))
            except StorageUnavailable:
                raise
            except ThreadstoreError:
                pass  # one thread is damaged: read them one by one below, to skip just that one
        summaries: list[ThreadSummary] = []
        for i, key in enumerate(keys):
            thread_id = key[len(KEY_PREFIX) :]
            try:
                ends = batch[i] if batch is not None else (yield Call("list_ends", (key,)))
                summary = self._summary(thread_id, ends)
            except StorageUnavailable:
                raise
            except Exception as exc:  # whatever is wrong with one thread does not hide the rest
                log.warning("threadstore: list skips thread %s: %s", thread_id, _reason(exc))
                continue
            if summary is not None:
                summaries.append(summary)
        next_cursor = None
        if len(entries) > limit:
            micros, key = entries[limit - 1]
            next_cursor = _encode_cursor(micros, key[len(KEY_PREFIX) :])
        return ThreadPage(threads=summaries, next_cursor=next_cursor)

    def _summary(self, thread_id: str, ends: ListEnds | None) -> ThreadSummary | None:
        """A listed thread's row from its list_ends (its last turn is decoded too: a damaged
        thread is skipped, not listed). None if it expired meanwhile."""
        if ends is None:
            return None  # expired meanwhile
        length, head, last, left = ends
        meta = _decode_meta(head, thread_id)
        if not self.visible(meta):
            return None  # never in the owner's scope; checked all the same
        return ThreadSummary(
            thread_id=thread_id,
            parent_thread_id=meta.parent_thread_id,
            tool_name=meta.tool_name,
            created_at=meta.created_at,
            last_updated_at=_last_activity(last, thread_id, length),
            turn_count=length - 1,
            expires_in_seconds=round(left, 3),
            owner=meta.owner,
        )

    def _rank(self, thread_id: str) -> Op[tuple[int, str, int] | None]:
        """(last activity in µs, id, length) of a live thread read from its items; None if it
        expired meanwhile. The score the index keeps for listing."""
        ends: ListEnds | None = yield Call("list_ends", (thread_key(thread_id),))
        return None if ends is None else _ranked(thread_id, ends)

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
                ends: ListEnds | None = yield Call("list_ends", (key,))
                if ends is None:
                    continue  # expired meanwhile
                score = _ranked(thread_id, ends)[0]
                owner = _decode_meta(ends[1], thread_id).owner
            except (CorruptData, WrongType, InvalidThreadId) as exc:
                log.warning("threadstore: reindex skips %r: %s", key, exc)
                continue
            done = yield Call("index_put", (key, self._scopes(owner), score))
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
            "index_page", (self._scope(ALL_THREADS), EXPORT_PAGE, after), {"ascending": True}
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
        try:  # the id came from the index: no id rule applies (compat's ids are exported too)
            items: list[str] = yield Call("list_range", (thread_key(thread_id),))
            thread = _decode_thread(items, thread_id) if items else None
            if thread is None or not (self.see_all or thread.owner == self.owner):
                return None
            return thread.model_dump_json(exclude_none=True)
        except StorageUnavailable:
            raise
        except Exception as exc:  # whatever is wrong with one thread must not stop the export
            log.warning("threadstore: export skips thread %s: %s", thread_id, _reason(exc))
            return None

    def import_thread(self, line: str, *, replace: bool = False) -> Op[bool]:
        """Store one exported JSON line; False when the thread exists and ``replace`` is off.

        The owner in the line is kept, except by a scoped logic: it imports every thread as its
        own and never replaces another principal's thread (that one is kept: False)."""
        try:
            thread = Thread.model_validate_json(line)
        except ValidationError as exc:
            raise InvalidInput(f"not an exported thread ({_first(exc)})") from None
        thread_id = check_thread_id(thread.thread_id)
        if thread.parent_thread_id is not None:
            check_thread_id(thread.parent_thread_id, "parent_thread_id")
        _check_stamp(thread.created_at, "created_at")
        _check_stamp(thread.last_updated_at, "last_updated_at")
        for n, turn in enumerate(thread.turns, 1):
            _check_stamp(turn.timestamp, f"turns[{n}].timestamp")
        # The same checks as create_thread and add_turn, before anything is written.
        _text(thread.tool_name, "tool_name", limit=MAX_NAME_LENGTH, empty=False)
        _json_dict(thread.initial_context, "initial_context", self.max_metadata_bytes)
        _name(thread.session_fingerprint, "session_fingerprint", self.rules)
        _name(thread.client_friendly_name, "client_friendly_name", self.rules)
        payloads = [self._turn_payload(turn)[1] for turn in thread.turns]
        key = thread_key(thread_id)
        meta = ThreadMeta(
            thread_id=thread_id,
            parent_thread_id=thread.parent_thread_id,
            created_at=thread.created_at,
            tool_name=thread.tool_name,
            initial_context=thread.initial_context,
            owner=thread.owner if self.see_all else self.owner,
            session_fingerprint=thread.session_fingerprint,
            client_friendly_name=thread.client_friendly_name,
        )
        if meta.owner is not None:
            _auth.check_owner(meta.owner)
        if replace:
            if not self.see_all:
                exists: bool = yield Call("exists", (key,))
                if exists and not (yield from self._owned(thread_id, "import_threads")):
                    return False
            yield Call("delete", (key,))
        # Filed at once with its last activity (the last turn's time, else its creation): the
        # appends below leave the score, which only ever grows, even if the file's turns are
        # not in time order.
        last = thread.turns[-1].timestamp if thread.turns else thread.created_at
        created = yield Call(
            "list_create",
            (key, self.ttl_seconds, meta.model_dump_json(exclude_none=True)),
            {"scopes": self._scopes(meta.owner), "score": _micros(last)},
        )
        if not created:
            return False
        max_items = max(self.max_turns, len(payloads)) + 1
        try:
            for payload in payloads:
                yield Call(
                    "list_append",
                    (key, payload),
                    {"max_items": max_items, "ttl_seconds": self.ttl_seconds},
                )
        except ThreadstoreError:
            yield Call("delete", (key,))  # no half-imported thread left behind
            raise
        return True
