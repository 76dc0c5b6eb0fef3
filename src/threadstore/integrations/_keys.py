"""Pure encodings shared by the adapters: no I/O, no third-party imports."""

from __future__ import annotations

import hashlib
import uuid

from .._storage import MAX_KEY_LENGTH

KV_PREFIX = "kv:"
"""Every py-key-value entry's storage key starts with this (never ``thread:``)."""
MAX_PLAIN_COLLECTION = 200
"""Longer collection names are stored as their SHA-256."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _storable(text: str, limit: int) -> bool:
    if len(text) > limit or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def collection_prefix(collection: str) -> str:
    """The start of every key of ``collection``: prefix-free, so key encodings never collide.

    ``kv:<length>:<name>`` for a short name; ``kv:#<sha256>`` for a long one (or one holding NUL
    or an unpaired surrogate). The first character after ``kv:`` tells the two forms apart.
    """
    if _storable(collection, MAX_PLAIN_COLLECTION):
        return f"{KV_PREFIX}{len(collection)}:{collection}"
    return f"{KV_PREFIX}#{_digest(collection)}"


def entry_key(collection: str, key: str) -> str:
    """The storage key of one entry: the collection prefix, then ``=<key>`` verbatim while the
    whole fits the contract's 1024 characters, else ``#<sha256 of key>``. Injective: the prefix
    ends at a known place, and ``=`` / ``#`` tell the two key forms apart."""
    head = collection_prefix(collection)
    if _storable(key, MAX_KEY_LENGTH - len(head) - 1):
        return f"{head}={key}"
    return f"{head}#{_digest(key)}"


_SESSION_SALT = b"threadstore/openai-agents-session\x00"


def session_thread_id(session_id: str) -> str:
    """The thread of an Agents session: a UUID4-shaped id derived from SHA-256 of the session
    id, so every process finds the same thread with no lookup and no race."""
    raw = bytearray(hashlib.sha256(_SESSION_SALT + session_id.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(raw)))
