"""Thread ids: canonical lowercase UUID4 strings, checked before storage is touched."""

from __future__ import annotations

import re
import uuid

from ._errors import InvalidThreadId

_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
KEY_PREFIX = "thread:"
_EXAMPLE = "2f1c6a3e-8d4b-4c1a-9e57-3b2a1c0d9e8f"


def new_thread_id() -> str:
    return str(uuid.uuid4())


def check_thread_id(thread_id: object, what: str = "thread id") -> str:
    """Return ``thread_id`` if it is a canonical lowercase UUID4 string, else raise."""
    if type(thread_id) is str and len(thread_id) == 36 and _UUID4.fullmatch(thread_id):
        return thread_id
    if type(thread_id) is not str:
        raise InvalidThreadId(f"{what} must be a str, got {type(thread_id).__name__}")
    shown = thread_id if len(thread_id) <= 80 else thread_id[:77] + "..."
    raise InvalidThreadId(
        f"invalid {what} {shown!r}: expected a lowercase UUID4 string such as"
        f" {_EXAMPLE!r} (no braces, no 'urn:' prefix, no upper case)"
    )


def thread_key(thread_id: str) -> str:
    return KEY_PREFIX + thread_id


ALL_THREADS = "threads"
"""The activity index scope holding every thread (notes/index.md)."""
OWNER_SCOPE_PREFIX = "owner:"


def owner_scope(principal: str) -> str:
    """The index scope holding the threads of one principal."""
    return OWNER_SCOPE_PREFIX + principal
