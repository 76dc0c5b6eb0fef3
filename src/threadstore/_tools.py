"""The MCP tools without MCP: for each tool an input model (its JSON schema and validator), an
output model and one async function over AsyncThreadStore.

server.py only registers these and turns ThreadstoreError into tool errors; nothing here knows
about transports, so every function can be read (and called) as plain domain code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from . import _auth
from ._history import estimate_tokens
from ._models import History, ThreadPage, Turn
from ._threads import AsyncThreadStore

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_HISTORY_TOKENS = 1_000_000

ThreadId = Annotated[
    str,
    Field(
        description=(
            "The thread's id exactly as thread_create returned it: a lowercase UUID such as"
            " '2f1c6a3e-8d4b-4c1a-9e57-3b2a1c0d9e8f' (this is the continuation id to carry"
            " between calls)."
        )
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- inputs -----------------------------------------------------------------------------------
class CreateInput(_Input):
    tool_name: Name = Field(
        "mcp",
        description="Who starts the thread: your tool or agent name (shown by thread_list).",
    )
    parent_thread_id: str | None = Field(
        None,
        description=(
            "Continue an earlier thread (for example one that is full): thread_history on the"
            " new thread then includes the parent's turns first."
        ),
    )
    initial_context: dict[str, Any] | None = Field(
        None,
        description="Any JSON object to keep with the thread, e.g. the task (at most 64 KiB).",
    )


class AppendInput(_Input):
    thread_id: ThreadId
    role: Literal["user", "assistant"] = Field(description="Who speaks: 'user' or 'assistant'.")
    content: str = Field(description="The message text (up to about 1 MB).")
    files: list[str] | None = Field(
        None, description="Paths of files this turn refers to (listed once in thread_history)."
    )
    images: list[str] | None = Field(None, description="Paths or URLs of images of this turn.")
    tool_name: Name | None = Field(None, description="The tool that produced this turn.")
    model_provider: Name | None = Field(None, description="e.g. 'anthropic'.")
    model_name: Name | None = Field(None, description="e.g. the model that wrote this turn.")
    metadata: dict[str, Any] | None = Field(
        None, description="Any JSON object to keep with the turn (at most 64 KiB)."
    )


class GetInput(_Input):
    thread_id: ThreadId
    offset: int = Field(0, ge=0, description="Index of the first turn to return (0 = oldest).")
    limit: int = Field(
        DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="How many turns to return at most."
    )


class HistoryInput(_Input):
    thread_id: ThreadId
    max_tokens: int = Field(
        ge=1,
        le=MAX_HISTORY_TOKENS,
        description=(
            "Token budget for the returned text; the newest turns of the thread and its"
            " parents that fit are kept (about 4 characters per token)."
        ),
    )


class ListInput(_Input):
    limit: int = Field(20, ge=1, le=200, description="How many threads to return at most.")
    cursor: str | None = Field(
        None, description="next_cursor of the previous page; omit for the first page."
    )


class DeleteInput(_Input):
    thread_id: ThreadId


class InfoInput(_Input):
    pass


# -- outputs ----------------------------------------------------------------------------------
class ThreadCreated(BaseModel):
    thread_id: str = Field(description="Pass this to the other tools (the continuation id).")
    parent_thread_id: str | None
    tool_name: str
    expires_in_seconds: float = Field(description="Idle time after which the thread expires.")
    max_turns: int


class TurnAdded(BaseModel):
    thread_id: str
    role: str
    timestamp: datetime
    tokens: int = Field(description="Estimated tokens of the content.")
    expires_in_seconds: float = Field(description="The thread's expiry, refreshed by this turn.")


class ThreadView(BaseModel):
    thread_id: str
    parent_thread_id: str | None
    tool_name: str
    created_at: datetime
    last_updated_at: datetime
    initial_context: dict[str, Any] | None
    turn_count: int = Field(description="Turns in the whole thread.")
    offset: int
    turns: list[Turn] = Field(description="Turns offset .. offset+len(turns)-1, oldest first.")
    next_offset: int | None = Field(description="offset of the next page; null on the last one.")


class ThreadDeleted(BaseModel):
    thread_id: str
    deleted: bool = Field(description="False when there was no such (live) thread.")


class StoreInfo(BaseModel):
    backend: str = Field(description="memory, sqlite or redis.")
    url: str = Field(description="The backend URL, passwords redacted.")
    namespace: str
    ttl_hours: float = Field(description="Threads expire this long after their last turn.")
    max_turns: int
    threads: int = Field(description="Live threads in this namespace that you can see.")
    stats: dict[str, Any] = Field(
        description="The backend's counters and facts (for admins; empty for other principals)."
    )
    principal: str | None = Field(None, description="Who you are to this server.")
    admin: bool = Field(True, description="Whether you see and manage every thread.")


# -- the tools --------------------------------------------------------------------------------
async def thread_create(store: AsyncThreadStore, args: CreateInput) -> ThreadCreated:
    thread_id = await store.create_thread(
        args.tool_name, args.initial_context, parent_thread_id=args.parent_thread_id
    )
    return ThreadCreated(
        thread_id=thread_id,
        parent_thread_id=args.parent_thread_id,
        tool_name=args.tool_name,
        expires_in_seconds=store.ttl_seconds,
        max_turns=store.max_turns,
    )


async def thread_append(store: AsyncThreadStore, args: AppendInput) -> TurnAdded:
    turn = await store.add_turn(
        args.thread_id,
        args.role,
        args.content,
        files=args.files,
        images=args.images,
        tool_name=args.tool_name,
        model_provider=args.model_provider,
        model_name=args.model_name,
        metadata=args.metadata,
    )
    return TurnAdded(
        thread_id=args.thread_id,
        role=turn.role,
        timestamp=turn.timestamp,
        tokens=estimate_tokens(turn.content),
        expires_in_seconds=store.ttl_seconds,
    )


async def thread_get(store: AsyncThreadStore, args: GetInput) -> ThreadView:
    thread = await store.require_thread(args.thread_id)
    total = len(thread.turns)
    end = min(total, args.offset + args.limit)
    return ThreadView(
        thread_id=thread.thread_id,
        parent_thread_id=thread.parent_thread_id,
        tool_name=thread.tool_name,
        created_at=thread.created_at,
        last_updated_at=thread.last_updated_at,
        initial_context=thread.initial_context,
        turn_count=total,
        offset=args.offset,
        turns=thread.turns[args.offset : end],
        next_offset=end if end < total else None,
    )


async def thread_history(store: AsyncThreadStore, args: HistoryInput) -> History:
    return await store.build_history(args.thread_id, max_tokens=args.max_tokens)


async def thread_list(store: AsyncThreadStore, args: ListInput) -> ThreadPage:
    return await store.list_threads(limit=args.limit, cursor=args.cursor)


async def thread_delete(store: AsyncThreadStore, args: DeleteInput) -> ThreadDeleted:
    deleted = await store.delete_thread(args.thread_id)
    _auth.deleted(store.owner or "-", "thread_delete", args.thread_id, deleted)
    return ThreadDeleted(thread_id=args.thread_id, deleted=deleted)


async def store_info(store: AsyncThreadStore, args: InfoInput) -> StoreInfo:
    storage = store.storage
    threads = await store.count_threads()
    # The backend's counters (keys, bytes, hits) describe everyone's threads: admins only.
    stats = await anyio.to_thread.run_sync(storage.stats) if store.sees_all else {}
    return StoreInfo(
        backend=storage.kind,
        url=storage.url,
        namespace=storage.namespace,
        ttl_hours=store.ttl_seconds / 3600,
        max_turns=store.max_turns,
        threads=threads,
        stats=stats,
        principal=store.owner,
        admin=store.sees_all,
    )
