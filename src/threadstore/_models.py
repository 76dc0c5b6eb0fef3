"""The conversation data model: pydantic models for what is stored and what is returned."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["user", "assistant"]
ROLES: tuple[str, ...] = ("user", "assistant")
"""The roles the library's own API writes. Stored turns may carry other role strings (written
through ``threadstore.compat``, which accepts any role as the original module did), so reading
takes any string."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class TurnFields(TypedDict, total=False):
    """The optional keyword arguments of add_turn (checked by the one implementation in
    _logic.py; the facades pass them through)."""

    files: list[str] | None
    images: list[str] | None
    tool_name: str | None
    model_provider: str | None
    model_name: str | None
    metadata: dict[str, Any] | None


class Turn(BaseModel):
    """One message of a thread."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: str  # "user" or "assistant" through the library's API; any string through compat
    content: str
    timestamp: datetime = Field(default_factory=utcnow)
    files: list[str] | None = None
    images: list[str] | None = None
    tool_name: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def model_metadata(self) -> dict[str, Any] | None:
        """The original module's name for ``metadata``."""
        return self.metadata


class ThreadMeta(BaseModel):
    """Item 0 of a thread's list: what is fixed when the thread is created."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    thread_id: str
    parent_thread_id: str | None = None
    created_at: datetime
    tool_name: str
    initial_context: dict[str, Any] | None = None
    owner: str | None = None
    """The principal that created the thread (None: created without one, seen by admins only)."""
    session_fingerprint: str | None = None
    client_friendly_name: str | None = None


class Thread(BaseModel):
    """A whole thread as read from storage."""

    model_config = ConfigDict(frozen=True)

    thread_id: str
    parent_thread_id: str | None = None
    created_at: datetime
    last_updated_at: datetime
    tool_name: str
    initial_context: dict[str, Any] | None = None
    turns: list[Turn] = Field(default_factory=list)
    owner: str | None = None
    session_fingerprint: str | None = None
    """Optional client-session labels some forks of the original module keep (set via compat)."""
    client_friendly_name: str | None = None


class ThreadSummary(BaseModel):
    """One row of list_threads: enough to pick a thread without loading its turns."""

    model_config = ConfigDict(frozen=True)

    thread_id: str
    parent_thread_id: str | None = None
    tool_name: str
    created_at: datetime
    last_updated_at: datetime
    turn_count: int
    expires_in_seconds: float
    owner: str | None = None


class ThreadPage(BaseModel):
    """A page of list_threads, most recent activity first."""

    threads: list[ThreadSummary]
    next_cursor: str | None = None


class History(BaseModel):
    """What build_history returns: text that fits the budget, and what it left out."""

    model_config = ConfigDict(frozen=True)

    text: str
    tokens: int
    max_tokens: int
    turns_included: int
    turns_omitted: int
    files: list[str] = Field(default_factory=list)
    thread_ids: list[str] = Field(default_factory=list)
    note: str | None = Field(
        None,
        description=(
            "Set when something is missing from text: no turn fits max_tokens (with the smallest"
            " budget that would include the newest turn), or a parent thread is gone."
        ),
    )
