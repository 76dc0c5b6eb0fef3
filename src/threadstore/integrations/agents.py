"""An OpenAI Agents SDK ``Session`` on threadstore storage (memory, SQLite, Redis).

::

    from agents import Agent, Runner
    from threadstore.integrations.agents import ThreadstoreSession

    session = ThreadstoreSession("user-42", url="sqlite:///sessions.db")
    await Runner.run(Agent(name="a"), "hello", session=session)

Each session is one threadstore thread (see ``session_thread_id``): item 0 is the thread header
(tool ``openai-agents``, ``initial_context={"session_id": …}``), then one turn per item whose
``content`` is the item's JSON exactly as given. So sessions show in ``threadstore list/show``,
MCP ``thread_get`` and exports, and expire like threads (the TTL is refreshed on every write).
Requires ``pip install 'threadstore[agents]'``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agents.items import TResponseInputItem
from agents.memory import SessionABC, SessionSettings

from .._config import load_settings
from .._errors import CorruptData, InvalidInput, StorageUnavailable, ThreadFull
from .._factory import open_storage
from .._ids import ALL_THREADS, thread_key
from .._logic import _micros
from .._models import ThreadMeta, Turn, utcnow
from .._storage import APPEND_FULL, APPEND_MISSING, MAX_ITEMS, Storage, check_text, check_ttl
from .._threads import AsyncThreadStore, ThreadStore
from ._keys import session_thread_id

__all__ = ["SESSION_TOOL_NAME", "ThreadstoreSession", "session_thread_id"]

SESSION_TOOL_NAME = "openai-agents"
"""The ``tool_name`` of a session's thread and of every turn the session writes."""


def _role(item: dict[str, Any]) -> str:
    """The turn role shown for an item: what the model produced is "assistant", the rest
    (user, system and developer messages, tool outputs) is "user"."""
    role = item.get("role")
    if role is not None:
        return "assistant" if role == "assistant" else "user"
    kind = item.get("type")
    return "user" if isinstance(kind, str) and kind.endswith("_output") else "assistant"


def _encode_item(item: object, index: int, now: datetime) -> str:
    if not isinstance(item, dict):
        raise InvalidInput(f"items[{index}] must be a dict (a JSON object), got {type(item)}")
    try:
        text = json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        same = json.loads(text) == item
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"items[{index}] is not plain JSON: {exc}") from None
    if not same:
        raise InvalidInput(
            f"items[{index}] would not come back unchanged from JSON (tuples, non-str keys)"
        )
    turn = Turn.model_construct(
        role=_role(item),
        content=check_text(text, f"items[{index}]"),
        timestamp=now,
        tool_name=SESSION_TOOL_NAME,
    )
    return turn.model_dump_json(exclude_none=True)


def _decode_item(raw: str, session_id: str) -> TResponseInputItem:
    """The item a stored turn holds. A turn another client added (``threadstore`` MCP tools,
    the library) becomes a plain message item with its role and content."""
    try:
        turn = json.loads(raw)
        content = turn["content"]
        if turn.get("tool_name") == SESSION_TOOL_NAME:
            item = json.loads(content)
            if not isinstance(item, dict):
                raise TypeError(f"an item must be a JSON object, got {type(item).__name__}")
            return item  # type: ignore[return-value]
        return {"role": turn["role"], "content": content}
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptData(
            f"session {session_id!r}: a stored item cannot be decoded ({exc})"
        ) from None


class ThreadstoreSession(SessionABC):
    """A conversation history for the Agents SDK ``Runner``, kept as one threadstore thread.

    ``url``: a threadstore URL (each ``memory://`` session starts empty and private). ``store``:
    an open ``Storage``, ``ThreadStore`` or ``AsyncThreadStore`` to share (not closed by the
    session). With neither, a new store is opened from the environment (``THREADSTORE_URL``…).
    ``ttl_seconds``: expiry after the last write (default ``CONVERSATION_TIMEOUT_HOURS``, or the
    given store's). ``max_items``: refuse ``add_items`` past this many items (default: no bound;
    ``MAX_CONVERSATION_TURNS`` does not apply to sessions).
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        *,
        url: str | None = None,
        store: Storage | ThreadStore | AsyncThreadStore | None = None,
        ttl_seconds: float | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        max_items: int | None = None,
    ) -> None:
        if type(session_id) is not str or not session_id:
            raise InvalidInput(f"session_id must be a non-empty str, got {session_id!r}")
        check_text(session_id, "session_id")
        if url is not None and store is not None:
            raise InvalidInput("pass url or store, not both")
        if max_items is not None and (type(max_items) is not int or max_items < 1):
            raise InvalidInput(f"max_items must be a positive int, got {max_items!r}")
        default_ttl: float | None = None
        if isinstance(store, ThreadStore | AsyncThreadStore):
            default_ttl = store.ttl_seconds
            store = store.storage
        if store is None:
            self._storage: Storage = open_storage(url)
            self._owns_storage = True
        elif isinstance(store, Storage):
            self._storage, self._owns_storage = store, False
        else:
            raise InvalidInput(
                f"store must be a Storage, ThreadStore or AsyncThreadStore, got {type(store)}"
            )
        if ttl_seconds is None:
            ttl_seconds = default_ttl if default_ttl is not None else load_settings().ttl_seconds
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.session_id = session_id
        if isinstance(session_settings, dict):
            session_settings = SessionSettings(**session_settings)
        self.session_settings = session_settings or SessionSettings()
        self.thread_id = session_thread_id(session_id)
        self.max_items = max_items
        self._key = thread_key(self.thread_id)
        self._closed = False

    @property
    def storage(self) -> Storage:
        return self._storage

    def __repr__(self) -> str:
        return f"<ThreadstoreSession {self.session_id!r} thread={self.thread_id} {self._storage}>"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise RuntimeError("ThreadstoreSession is closed")
        return await self._storage.aio.call(method, *args, **kwargs)

    # -- the Session protocol ----------------------------------------------------------------
    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The newest ``limit`` items (default ``session_settings.limit``, read at each call;
        None: all), oldest first."""
        if limit is None:  # the SDK may assign session_settings at any time: read it now
            settings: Any = self.session_settings
            limit = (
                settings.get("limit")
                if isinstance(settings, dict)
                else getattr(settings, "limit", None)
            )
        if limit is not None and limit < 0:
            limit = None  # as the SDK's SQLiteSession: a negative limit means all
        if limit == 0:
            await self._call("exists", self._key)  # a closed session still refuses
            return []
        if limit is None:
            raw: list[str] = await self._call("list_range", self._key, 1)
        else:
            length: int = await self._call("list_length", self._key)
            if length <= 1:
                return []
            raw = (await self._call("list_range", self._key, max(1, length - limit)))[-limit:]
        return [_decode_item(r, self.session_id) for r in raw]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items atomically (all or none, contiguous) and refresh the expiry."""
        if self._closed:
            raise RuntimeError("ThreadstoreSession is closed")
        if not items:
            return
        now = utcnow()
        payloads = [_encode_item(item, i, now) for i, item in enumerate(items)]
        bound = MAX_ITEMS if self.max_items is None else self.max_items + 1
        for _ in range(3):
            n = await self._call(
                "list_append_many",
                self._key,
                payloads,
                max_items=bound,
                ttl_seconds=self.ttl_seconds,
                score=_micros(now),  # last activity, for `threadstore list`
            )
            if n == APPEND_FULL:
                raise ThreadFull(
                    f"session {self.session_id!r} holds {self.max_items} items at most"
                    f" (max_items); {len(items)} more do not fit. Nothing was added."
                )
            if n != APPEND_MISSING:
                return
            await self._create()  # new, cleared or expired; another process may win the race
        raise StorageUnavailable(  # pragma: no cover - created then gone three times in a row
            f"session {self.session_id!r}: its thread vanished while items were being added"
        )

    async def _create(self) -> None:
        meta = ThreadMeta(
            thread_id=self.thread_id,
            created_at=utcnow(),
            tool_name=SESSION_TOOL_NAME,
            initial_context={"session_id": self.session_id},
        )
        await self._call(
            "list_create",
            self._key,
            self.ttl_seconds,
            meta.model_dump_json(exclude_none=True),
            scopes=(ALL_THREADS,),
            score=_micros(meta.created_at),
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item atomically (None when the session is empty)."""
        raw: str | None = await self._call("list_pop", self._key, ttl_seconds=self.ttl_seconds)
        return None if raw is None else _decode_item(raw, self.session_id)

    async def clear_session(self) -> None:
        """Delete every item (the thread goes; the next add_items starts a new one)."""
        await self._call("delete", self._key)

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Refuse further calls; a store opened from ``url`` is closed. Idempotent."""
        self._closed = True
        if self._owns_storage:
            self._storage.close()

    async def aclose(self) -> None:
        """close() for async code (closes a Redis store's async connections too)."""
        self._closed = True
        if self._owns_storage:
            await self._storage.aclose()
