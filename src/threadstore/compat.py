"""A drop-in body for a zen/pal-style server's ``utils/conversation_memory.py``.

An operator switches by replacing that module's body with one line::

    from threadstore.compat import *

and picks the storage with ``THREADSTORE_URL`` (``sqlite:///…`` or ``redis://…``; unset means
in-process memory, as before). Every name the original module offered keeps its signature,
answers and output: the pydantic models ``ThreadContext`` and ``ConversationTurn``,
``create_thread``, ``add_turn`` (False, with the reason logged, for a missing, expired or full
thread), ``get_thread`` (None for anything it cannot return), ``get_thread_chain``,
``build_conversation_history`` (same text, same token accounting),
``get_conversation_file_list``, ``get_conversation_image_list``, ``get_storage`` and the three
settings, read from the environment at import with the original's warn-and-default rule.

Threads written here are ordinary threadstore threads (``threadstore list``/``show``, the MCP
server and ``ThreadStore`` read them), and concurrent ``add_turn`` calls lose nothing: each turn
is one atomic append instead of a read-modify-write of the whole thread. The deliberate
differences are listed in the README ("Switching a zen/pal server").

This module imports nothing outside the base install (no ``mcp``), so it coexists with the
mcp 1.x such servers run on. ``build_conversation_history`` uses the host server's own helpers
when they exist (``config.DEFAULT_MODEL``, ``utils.model_context.ModelContext``,
``utils.file_utils``, ``utils.token_utils``, ``server.TOOLS``), exactly where the original looked
for them, and plain built-in equivalents otherwise.

The settings are module globals read at every call: assigning
``threadstore.compat.MAX_CONVERSATION_TURNS = 5`` changes the limit ``add_turn`` enforces.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from ._config import load_compat_settings, load_settings
from ._errors import InvalidInput, ThreadFull, ThreadNotFound, ThreadstoreError
from ._factory import get_storage_backend
from ._logic import LENIENT, Logic
from ._models import Thread
from ._storage import Storage
from ._threads import run_sync

__all__ = [
    "CONVERSATION_TIMEOUT_HOURS",
    "CONVERSATION_TIMEOUT_SECONDS",
    "MAX_CONVERSATION_TURNS",
    "ConversationTurn",
    "ThreadContext",
    # Imported by name by the original's users' tests.
    "_plan_file_inclusion_by_size",
    "add_turn",
    "build_conversation_history",
    "create_thread",
    "get_conversation_file_list",
    "get_conversation_image_list",
    "get_storage",
    "get_thread",
    "get_thread_chain",
    # The original module imported ``uuid`` at top level and its users' tests patch
    # ``utils.conversation_memory.uuid.uuid4``; create_thread draws ids through it here too.
    "uuid",
]

logger = logging.getLogger("threadstore.compat")

COMPAT_MAX_BYTES = 64 * 1024 * 1024
"""Largest turn, and largest ``initial_context``, accepted here (JSON, UTF-8 bytes). The
library's own API keeps its tighter defaults; an MCP request is never this large."""

_DROPPED_REQUEST_KEYS = frozenset({"temperature", "thinking_mode", "model", "continuation_id"})
_SESSION_FIELDS = ("session_fingerprint", "client_friendly_name")

_settings = load_compat_settings()
for _warning in _settings.warnings:
    logger.warning(_warning)

MAX_CONVERSATION_TURNS: int = _settings.max_turns
"""Turns per thread (env MAX_CONVERSATION_TURNS, default 50); read at every add_turn."""
CONVERSATION_TIMEOUT_HOURS: int | float = _settings.timeout_hours
"""Hours a thread lives after its last turn (env CONVERSATION_TIMEOUT_HOURS, default 3).
A fractional value such as 1.5 is honoured (the original fell back to 3)."""
CONVERSATION_TIMEOUT_SECONDS: int | float = CONVERSATION_TIMEOUT_HOURS * 3600
"""The TTL actually applied; read at every write."""


class ConversationTurn(BaseModel):
    """One turn, as the original module modelled it (ISO-8601 string timestamp, any role)."""

    model_config = ConfigDict(protected_namespaces=())

    role: str
    content: str
    timestamp: str
    files: list[str] | None = None
    images: list[str] | None = None
    tool_name: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    model_metadata: dict[str, Any] | None = None


class ThreadContext(BaseModel):
    """A thread with its turns, as the original module modelled it; mutable like the original."""

    model_config = ConfigDict(protected_namespaces=())

    thread_id: str
    parent_thread_id: str | None = None
    created_at: str
    last_updated_at: str
    tool_name: str
    turns: list[ConversationTurn]
    initial_context: dict[str, Any]
    session_fingerprint: str | None = None
    client_friendly_name: str | None = None


# -- storage ------------------------------------------------------------------------------------
def get_storage() -> Storage:
    """The process-wide backend (``THREADSTORE_URL``, else ``REDIS_URL``, else memory). A bad
    CONVERSATION_TIMEOUT_HOURS or MAX_CONVERSATION_TURNS, already warned about at import, does
    not stop it from opening."""
    return get_storage_backend(load_settings(conversation_limits=False))


def _logic() -> Logic:
    """The conversation logic with the settings as they are now and compat's wide limits."""
    return Logic(
        ttl_seconds=CONVERSATION_TIMEOUT_SECONDS,
        max_turns=MAX_CONVERSATION_TURNS,
        max_turn_bytes=COMPAT_MAX_BYTES,
        max_metadata_bytes=COMPAT_MAX_BYTES,
        rules=LENIENT,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _is_uuid(value: object) -> bool:
    if type(value) is not str or not value:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _as_json(model: BaseModel, field: str) -> Any:
    """A field as the original stored it: through pydantic's JSON encoder (a Path becomes a
    str, a datetime an ISO string, NaN null), then back to plain JSON values."""
    return json.loads(model.model_dump_json(include={field}))[field]


def _context(thread: Thread) -> ThreadContext:
    return ThreadContext(
        thread_id=thread.thread_id,
        parent_thread_id=thread.parent_thread_id,
        created_at=thread.created_at.isoformat(),
        last_updated_at=thread.last_updated_at.isoformat(),
        tool_name=thread.tool_name,
        turns=[
            ConversationTurn(
                role=t.role,
                content=t.content,
                timestamp=t.timestamp.isoformat(),
                files=t.files,
                images=t.images,
                tool_name=t.tool_name,
                model_provider=t.model_provider,
                model_name=t.model_name,
                model_metadata=t.metadata,
            )
            for t in thread.turns
        ],
        initial_context=thread.initial_context or {},
        session_fingerprint=thread.session_fingerprint,
        client_friendly_name=thread.client_friendly_name,
    )


# -- the original module's functions ------------------------------------------------------------
def create_thread(
    tool_name: str,
    initial_request: dict[str, Any],
    parent_thread_id: str | None = None,
    **extra: Any,
) -> str:
    """Start a thread and return its id (a UUID4 string).

    ``initial_request`` is kept without temperature, thinking_mode, model and continuation_id;
    any string is accepted as ``parent_thread_id``. Of the extra keywords some forks pass,
    ``session_fingerprint`` and ``client_friendly_name`` are kept; others are ignored. Raises a
    ThreadstoreError when the storage cannot take the thread (the original raised too)."""
    thread_id = str(uuid.uuid4())
    now = _now()
    session = {k: extra.pop(k) for k in _SESSION_FIELDS if k in extra}
    if extra:
        logger.debug("create_thread ignores keywords %s", sorted(extra))
    context = ThreadContext(
        thread_id=thread_id,
        parent_thread_id=parent_thread_id,
        created_at=now,
        last_updated_at=now,
        tool_name=tool_name,
        turns=[],
        initial_context={
            k: v for k, v in initial_request.items() if k not in _DROPPED_REQUEST_KEYS
        },
        **session,
    )
    op = _logic().create_thread(
        context.tool_name,
        _as_json(context, "initial_context"),
        context.parent_thread_id,
        thread_id=thread_id,
        session_fingerprint=context.session_fingerprint,
        client_friendly_name=context.client_friendly_name,
    )
    run_sync(get_storage(), op)
    logger.debug("created thread %s (parent %s)", thread_id, parent_thread_id)
    return thread_id


def get_thread(thread_id: str) -> ThreadContext | None:
    """The thread, or None when the id is not a UUID, the thread is missing or expired, or the
    storage cannot answer (logged at debug level, as the original stayed silent)."""
    if not _is_uuid(thread_id):
        return None
    try:
        thread = run_sync(get_storage(), _logic().get_thread(thread_id))
    except ThreadstoreError as exc:
        logger.debug("get_thread(%s) failed: %s", thread_id, exc)
        return None
    return None if thread is None else _context(thread)


def add_turn(
    thread_id: str,
    role: str,
    content: str,
    files: list[str] | None = None,
    images: list[str] | None = None,
    tool_name: str | None = None,
    model_provider: str | None = None,
    model_name: str | None = None,
    model_metadata: dict[str, Any] | None = None,
) -> bool:
    """Append a turn atomically and refresh the thread's TTL.

    True when stored; False, with the reason logged, when the thread is missing or expired,
    already holds MAX_CONVERSATION_TURNS turns, or the storage refuses or cannot be reached.
    Arguments of the wrong type raise pydantic's ValidationError, as in the original."""
    logger.debug("adding a %r turn to %s (%s)", role, thread_id, tool_name)
    try:
        turn = ConversationTurn(
            role=role,
            content=content,
            timestamp=_now(),
            files=files,
            images=images,
            tool_name=tool_name,
            model_provider=model_provider,
            model_name=model_name,
            model_metadata=model_metadata,
        )
    except ValidationError:
        # The original looked the thread up first: a missing or full thread answered False
        # whatever the arguments were; only a live one reached the model's validation.
        context = get_thread(thread_id)
        if context is None or len(context.turns) >= MAX_CONVERSATION_TURNS:
            logger.info("add_turn: thread %s is missing, expired or full", thread_id)
            return False
        raise
    if not _is_uuid(thread_id):
        logger.info("add_turn: %r is not a thread id", thread_id)
        return False
    try:
        metadata = None if model_metadata is None else _as_json(turn, "model_metadata")
    except (PydanticSerializationError, ValueError) as exc:
        # The original failed here too, when saving, and answered False.
        logger.warning(
            "add_turn: model_metadata for %s cannot be stored as JSON: %s", thread_id, exc
        )
        return False
    try:
        op = _logic().add_turn(
            thread_id,
            turn.role,
            turn.content,
            files=turn.files,
            images=turn.images,
            tool_name=turn.tool_name,
            model_provider=turn.model_provider,
            model_name=turn.model_name,
            metadata=metadata,
        )
        run_sync(get_storage(), op)
    except ThreadNotFound:
        logger.info("add_turn: thread %s was not found (never existed or expired)", thread_id)
        return False
    except ThreadFull:
        logger.info(
            "add_turn: thread %s already holds MAX_CONVERSATION_TURNS (%s) turns",
            thread_id,
            MAX_CONVERSATION_TURNS,
        )
        return False
    except InvalidInput as exc:
        logger.warning("add_turn: turn for thread %s refused: %s", thread_id, exc)
        return False
    except ThreadstoreError as exc:
        logger.warning("add_turn: could not store the turn for thread %s: %s", thread_id, exc)
        return False
    return True


def get_thread_chain(thread_id: str, max_depth: int = 20) -> list[ThreadContext]:
    """The thread and its ancestors through ``parent_thread_id``, oldest first; stops at a
    missing ancestor, a cycle or ``max_depth`` threads."""
    chain: list[ThreadContext] = []
    seen: set[str] = set()
    current: str | None = thread_id
    while current and len(chain) < max_depth:
        if current in seen:
            logger.warning("thread chain of %s loops back to %s", thread_id, current)
            break
        seen.add(current)
        context = get_thread(current)
        if context is None:
            logger.debug("thread chain of %s ends: %s not found", thread_id, current)
            break
        chain.append(context)
        current = context.parent_thread_id
    chain.reverse()
    return chain


def _newest_first(turns: Sequence[ConversationTurn], pick: str) -> list[str]:
    """Each path once, the newest turn's mention deciding its place."""
    found: dict[str, None] = {}
    for turn in reversed(turns):
        for path in getattr(turn, pick) or ():
            found.setdefault(path)
    return list(found)


def get_conversation_file_list(context: ThreadContext) -> list[str]:
    """Files mentioned by the thread's turns, each once, newest mention first."""
    return _newest_first(context.turns, "files")


def get_conversation_image_list(context: ThreadContext) -> list[str]:
    """Images mentioned by the thread's turns, each once, newest mention first."""
    return _newest_first(context.turns, "images")


# -- history ------------------------------------------------------------------------------------
def _host(module: str, name: str) -> Any:
    """``module.name`` from the host server, or None when that module is not importable."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(found, name, None)


@dataclass(frozen=True, slots=True)
class _Allocation:
    file_tokens: int
    history_tokens: int


class _PlainModelContext:
    """Token budget used when the host offers no ModelContext: a 200k-token model, 60 % of it
    for the prompt, of which 30 % for files and 50 % for history; ~3 characters per token."""

    model_name = "default"
    context_window = 200_000

    def calculate_token_allocation(self) -> _Allocation:
        content = int(self.context_window * 0.6)
        return _Allocation(file_tokens=int(content * 0.3), history_tokens=int(content * 0.5))

    def estimate_tokens(self, text: str) -> int:
        return len(text) // 3


def _default_model_context() -> Any:
    model_context_class = _host("utils.model_context", "ModelContext")
    model_name = _host("config", "DEFAULT_MODEL")
    if model_context_class is None or not isinstance(model_name, str):
        return _PlainModelContext()
    if _host("config", "IS_AUTO_MODE") and model_name.lower() == "auto":
        registry = _host("providers.registry", "ModelProviderRegistry")
        if registry is not None:
            model_name = registry.get_preferred_fallback_model()
    return model_context_class(model_name)


def _estimate_tokens(text: str) -> int:
    host = _host("utils.token_utils", "estimate_tokens")
    return int(host(text)) if host is not None else len(text) // 4


def _within_limit(text: str) -> tuple[bool, int]:
    host = _host("utils.token_utils", "check_token_limit")
    if host is not None:
        within, tokens = host(text)
        return bool(within), int(tokens)
    tokens = len(text) // 4
    return tokens <= _PlainModelContext.context_window, tokens


def _file_tokens(path: str) -> int:
    host = _host("utils.file_utils", "estimate_file_tokens")
    return int(host(path)) if host is not None else os.path.getsize(path) // 4


def _read_file(path: str) -> tuple[str, int]:
    host = _host("utils.file_utils", "read_file_content")
    if host is not None:
        text, tokens = host(path)
        return text, tokens
    with open(path, encoding="utf-8", errors="replace") as handle:
        body = handle.read()
    text = f"\n--- BEGIN FILE: {path} ---\n{body}\n--- END FILE: {path} ---\n"
    return text, len(text) // 4


def _plan_file_inclusion_by_size(
    paths: Iterable[str], budget: int
) -> tuple[list[str], list[str], int]:
    """Newest-first paths split into (embedded, left out, tokens of the embedded): a path is
    left out when it is no longer a regular file or when it would overflow the file budget.
    (The original module's helper of this name; its users' tests import it.)"""
    keep: list[str] = []
    skip: list[str] = []
    spent = 0
    for path in paths:
        try:
            if not os.path.isfile(path):
                skip.append(path)
                continue
            cost = _file_tokens(path)
        except Exception as exc:  # a broken path never breaks the history
            logger.debug("history: skipping %s: %s: %s", path, type(exc).__name__, exc)
            skip.append(path)
            continue
        if spent + cost <= budget:
            keep.append(path)
            spent += cost
        else:
            skip.append(path)
    return keep, skip, spent


def _embed_files(
    paths: list[str],
    keep: list[str],
    skip: list[str],
    max_file_tokens: int,
    read_files_func: Callable[[list[str]], str] | None,
) -> list[str]:
    """The "FILES REFERENCED" block's lines (empty when no file can be embedded)."""
    if not keep:
        return ["", "=== END REFERENCED FILES ===", ""]
    omitted = (
        f"[NOTE: {len(skip)} files omitted (size constraints, missing files, or access issues)]"
        if skip
        else ""
    )
    lines = [
        "=== FILES REFERENCED IN THIS CONVERSATION ===",
        "The following files have been shared and analyzed during our conversation.",
        omitted,
        "Refer to these when analyzing the context and requests below:",
        "",
    ]
    if read_files_func is not None:
        combined = read_files_func(paths)
        if not combined:
            lines.append("(No accessible files found)")
        else:
            within, tokens = _within_limit(combined)
            lines.append(
                combined
                if within
                else "ERROR: The total size of files referenced in this conversation has"
                " exceeded the context limit and cannot be displayed.\n"
                f"Estimated tokens: {tokens}, but limit is {max_file_tokens}."
            )
    else:
        pieces: list[str] = []
        for path in keep:
            try:
                text, _tokens = _read_file(path)
            except Exception as exc:  # moved or unreadable since planning
                logger.info("history: %s could not be embedded: %s", path, type(exc).__name__)
                continue
            if text:
                pieces.append(text)
        if pieces:
            block = "".join(pieces)
            if skip:
                block += (
                    f"\n[NOTE: {len(skip)} additional file(s) were omitted due to size"
                    " constraints, missing files, or access issues. These were older files"
                    " from earlier conversation turns.]\n"
                )
            lines.append(block)
        else:
            lines.append("(No accessible files found)")
    lines += ["", "=== END REFERENCED FILES ===", ""]
    return lines


def _turn_header(number: int, turn: ConversationTurn) -> str:
    label = "Agent" if turn.role == "user" else (turn.model_name or "Assistant")
    header = f"\n--- Turn {number} ({label}"
    if turn.tool_name:
        header += f" using {turn.tool_name}"
    model = turn.model_name if turn.model_name and turn.model_name != label else None
    via = "/".join(p for p in (turn.model_provider, model) if p) if turn.model_provider else model
    if via:
        header += f" via {via}"
    return header + ") ---"


def _turn_body(turn: ConversationTurn) -> list[str]:
    """The host tool's own rendering of the turn when it has one, else files and content."""
    if turn.tool_name:
        try:
            tools = _host("server", "TOOLS")
            tool = tools.get(turn.tool_name) if tools is not None else None
            if tool is not None:
                try:
                    lines: list[str] = tool.format_conversation_turn(turn)
                except AttributeError:
                    pass
                else:
                    return lines
        except Exception as exc:  # the history never fails for a tool's formatting
            logger.debug("history: no tool formatting for %s: %s", turn.tool_name, exc)
    lines = []
    if turn.files:
        lines += [f"Files used in this turn: {', '.join(turn.files)}", ""]
    lines.append(turn.content)
    return lines


def build_conversation_history(
    context: ThreadContext,
    model_context: Any = None,
    read_files_func: Callable[[list[str]], str] | None = None,
) -> tuple[str, int]:
    """The conversation so far as prompt text, and its estimated tokens; ("", 0) without turns.

    With a parent, the whole stored chain is used. Files are embedded once, newest mention
    first, within the model context's file budget; turns are taken newest first within the
    history budget and shown oldest first with their numbers across the chain."""
    if context.parent_thread_id:
        turns = [t for thread in get_thread_chain(context.thread_id) for t in thread.turns]
    else:
        turns = list(context.turns)
    if not turns:
        return "", 0
    files = _newest_first(turns, "files")

    if model_context is None:
        model_context = _default_model_context()
    allocation = model_context.calculate_token_allocation()
    max_file_tokens: int = allocation.file_tokens
    max_history_tokens: int = allocation.history_tokens

    parts = [
        "=== CONVERSATION HISTORY (CONTINUATION) ===",
        f"Thread: {context.thread_id}",
        f"Tool: {context.tool_name}",
        f"Turn {len(turns)}/{MAX_CONVERSATION_TURNS}",
        "You are continuing this conversation thread from where it left off.",
        "",
    ]
    if files:
        keep, skip, _tokens = _plan_file_inclusion_by_size(files, max_file_tokens)
        if skip:
            logger.info("history: %d file(s) left out: %s", len(skip), skip)
        parts += _embed_files(files, keep, skip, max_file_tokens, read_files_func)
    parts.append("Previous conversation turns:")

    spent = sum(model_context.estimate_tokens(p) for p in parts)
    chosen: list[str] = []
    for index in range(len(turns) - 1, -1, -1):
        turn = turns[index]
        rendered = "\n".join([_turn_header(index + 1, turn), *_turn_body(turn)])
        cost = model_context.estimate_tokens(rendered)
        if spent + cost > max_history_tokens:
            break
        chosen.append(rendered)
        spent += cost
    chosen.reverse()
    parts += chosen
    if len(chosen) < len(turns):
        logger.info("history: %d of %d turns fit the budget", len(chosen), len(turns))
        parts.append(f"\n[Note: Showing {len(chosen)} most recent turns out of {len(turns)} total]")
    parts += [
        "",
        "=== END CONVERSATION HISTORY ===",
        "",
        "IMPORTANT: You are continuing an existing conversation thread. Build upon the previous"
        " exchanges shown above,",
        "reference earlier points, and maintain consistency with what has been discussed.",
        "",
        "DO NOT repeat or summarize previous analysis, findings, or instructions that are already"
        " covered in the",
        "conversation history. Instead, provide only new insights, additional analysis, or direct"
        " answers to",
        "the follow-up question / concerns / insights. Assume the user has read the prior"
        " conversation.",
        "",
        f"This is turn {len(turns) + 1} of the conversation - use the conversation history above"
        " to provide a coherent continuation.",
    ]
    text = "\n".join(parts)
    return text, _estimate_tokens(text)
