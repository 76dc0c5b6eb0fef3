"""Drop-in replacement for the original conversation-memory module.

A server written against that module switches by changing one import::

    from threadstore.compat import add_turn, create_thread, get_thread, get_thread_chain

The functions keep the original names, arguments and answers: ``get_thread`` returns None for a
missing, expired or malformed id, ``add_turn`` returns False instead of raising. Storage is the
process-wide backend (``get_storage_backend()``), configured from the environment as before.
"""

from __future__ import annotations

import logging
from typing import Any

from ._errors import ThreadstoreError
from ._models import Thread
from ._threads import ThreadStore

log = logging.getLogger("threadstore")


def _store() -> ThreadStore:
    return ThreadStore()


def create_thread(
    tool_name: str, initial_request: dict[str, Any], parent_thread_id: str | None = None
) -> str:
    """Start a thread and return its id (raises InvalidInput / StorageUnavailable on failure)."""
    return _store().create_thread(tool_name, initial_request, parent_thread_id)


def get_thread(thread_id: str) -> Thread | None:
    """The thread, or None when the id is malformed, unknown or expired."""
    try:
        return _store().get_thread(thread_id)
    except ThreadstoreError as exc:
        log.debug("get_thread(%r) failed: %s", thread_id, exc)
        return None


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
    """Append a turn; False (with the reason logged) when the thread is missing, expired, full
    or the input is invalid, as in the original module."""
    try:
        _store().add_turn(
            thread_id,
            role,
            content,
            files=files,
            images=images,
            tool_name=tool_name,
            model_provider=model_provider,
            model_name=model_name,
            metadata=model_metadata,
        )
    except ThreadstoreError as exc:
        log.warning("add_turn to thread %r failed: %s", thread_id, exc)
        return False
    return True


def get_thread_chain(thread_id: str, max_depth: int = 20) -> list[Thread]:
    """The thread and its ancestors, oldest first; empty when the id is malformed or unknown."""
    try:
        return _store().get_thread_chain(thread_id, max_depth)
    except ThreadstoreError as exc:
        log.debug("get_thread_chain(%r) failed: %s", thread_id, exc)
        return []
