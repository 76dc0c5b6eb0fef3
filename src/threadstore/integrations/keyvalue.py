"""A py-key-value ``AsyncKeyValue`` store on threadstore storage (memory, SQLite, Redis).

FastMCP keeps its state (response cache, OAuth proxy state, session state) in any py-key-value
store. ``ThreadstoreStore("sqlite:///state.db")`` gives it one SQLite file shared safely by every
process on the machine, or Redis, with expiry and threadstore's CLI::

    from threadstore.integrations.keyvalue import ThreadstoreStore

    store = ThreadstoreStore("sqlite:///state.db")
    await store.put("k", {"a": 1}, collection="users", ttl=3600)
    await store.get("k", collection="users")          # {"a": 1}

Each entry is one string key ``kv:…`` (see ``_keys.entry_key``) holding
``{"e": <expiry, epoch seconds, or null>, "v": <the value>}`` with the backend TTL set to the
entry's TTL. "No expiry" is the contract's longest TTL, ten years, refreshed by every put (see
notes/integrations.md). Requires ``pip install 'threadstore[keyvalue]'``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from key_value.aio.errors import (
    DeserializationError,
    SerializationError,
    StoreConnectionError,
)
from key_value.aio.stores.base import BaseContextManagerStore, ManagedEntry

from .._config import Fallback
from .._errors import CorruptData, InvalidInput, StorageUnavailable, WrongType
from .._factory import open_storage
from .._storage import MAX_TTL_SECONDS, MIN_TTL_SECONDS, Storage
from ._keys import entry_key

__all__ = ["NO_EXPIRY_TTL_SECONDS", "ThreadstoreStore", "dump_value"]

NO_EXPIRY_TTL_SECONDS = MAX_TTL_SECONDS
"""How long an entry put with ``ttl=None`` is kept: ten years after its last put."""


def dump_value(value: Mapping[str, Any]) -> str:
    """The value as JSON, or SerializationError when JSON would not give it back unchanged.

    Refused: anything json cannot encode (datetime, UUID, URL objects, bytes, sets), NaN and
    infinities (not JSON), and values JSON would alter silently (tuples, non-str keys).
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        same = json.loads(text) == value
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value is not plain JSON: {exc}") from exc
    if not same:
        raise SerializationError(
            "value would not come back unchanged from JSON (tuples become lists, non-str dict"
            " keys become str): convert it to plain JSON types first"
        )
    return text


def _load_entry(raw: str, key: str) -> ManagedEntry:
    try:
        doc = json.loads(raw)
        value, expires = doc["v"], doc["e"]
        if not isinstance(value, dict) or not (expires is None or isinstance(expires, float)):
            raise TypeError("unexpected field types")
    except (ValueError, TypeError, KeyError) as exc:
        raise DeserializationError(f"entry {key!r} cannot be decoded: {exc}") from exc
    expires_at = None if expires is None else datetime.fromtimestamp(expires, UTC)
    return ManagedEntry(value=value, expires_at=expires_at)


def _encode_entry(entry: ManagedEntry) -> tuple[str, float]:
    """(stored text, backend TTL) of an entry."""
    text = dump_value(entry.value)
    if entry.expires_at is None:
        return f'{{"e":null,"v":{text}}}', NO_EXPIRY_TTL_SECONDS
    now = time.time()
    expires = entry.expires_at.timestamp()
    ttl = min(max(expires - now, MIN_TTL_SECONDS), MAX_TTL_SECONDS)
    if expires - now > MAX_TTL_SECONDS:  # report what is kept, not what was asked
        expires = now + MAX_TTL_SECONDS
    if not math.isfinite(expires):  # pragma: no cover - datetimes are finite
        raise SerializationError("expiry is not a finite time")
    return f'{{"e":{float(expires)!r},"v":{text}}}', ttl


class ThreadstoreStore(BaseContextManagerStore):
    """py-key-value store backed by a threadstore URL or an open ``Storage``.

    ``url_or_storage``: a URL (``memory://``, ``sqlite:///path``, ``redis://…``; each
    ``memory://`` store is new and empty) or a ``Storage`` you opened (not closed by this store).
    ``fallback`` applies to a URL whose backend is unreachable at start: ``"fail"`` (default for
    this store: state such as OAuth tokens must not silently become per-process) or ``"memory"``.
    """

    def __init__(
        self,
        url_or_storage: str | Storage = "memory://",
        *,
        default_collection: str | None = None,
        namespace: str | None = None,
        fallback: Fallback = "fail",
    ) -> None:
        if isinstance(url_or_storage, Storage):
            storage, owned = url_or_storage, False
        elif isinstance(url_or_storage, str):
            storage = open_storage(url_or_storage, namespace=namespace, fallback=fallback)
            owned = True
        else:
            raise TypeError(
                "ThreadstoreStore needs a threadstore URL (str) or a Storage,"
                f" got {type(url_or_storage).__name__}"
            )
        self._storage = storage
        self._owns_storage = owned
        super().__init__(
            default_collection=default_collection,
            client_provided_by_user=not owned,
            stable_api=True,
        )

    @property
    def storage(self) -> Storage:
        """The threadstore storage underneath."""
        return self._storage

    def __repr__(self) -> str:
        return f"<ThreadstoreStore {self._storage.url} namespace={self._storage.namespace!r}>"

    async def _setup(self) -> None:
        if self._owns_storage:
            self._exit_stack.push_async_callback(self._storage.aclose)

    async def close(self) -> None:
        """Close the store; a storage opened from a URL is closed too. Idempotent."""
        await super().close()
        if self._owns_storage:
            await self._storage.aclose()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One storage call, its errors translated to py-key-value's."""
        try:
            return await self._storage.aio.call(method, *args, **kwargs)
        except StorageUnavailable as exc:
            raise StoreConnectionError(str(exc)) from exc
        except (CorruptData, WrongType) as exc:
            raise DeserializationError(str(exc)) from exc
        except InvalidInput as exc:
            raise SerializationError(str(exc)) from exc

    async def _get_managed_entry(self, *, collection: str, key: str) -> ManagedEntry | None:
        raw = await self._call("get", entry_key(collection, key))
        return None if raw is None else _load_entry(raw, key)

    async def _put_managed_entry(
        self, *, collection: str, key: str, managed_entry: ManagedEntry
    ) -> None:
        text, ttl = _encode_entry(managed_entry)
        await self._call("set_with_ttl", entry_key(collection, key), ttl, text)

    async def _put_managed_entries(
        self,
        *,
        collection: str,
        keys: Sequence[str],
        managed_entries: Sequence[ManagedEntry],
        ttl: float | None,
        created_at: datetime,
        expires_at: datetime | None,
    ) -> None:
        encoded = [_encode_entry(entry) for entry in managed_entries]  # all checked first
        for key, (text, seconds) in zip(keys, encoded, strict=True):
            await self._call("set_with_ttl", entry_key(collection, key), seconds, text)

    async def _delete_managed_entry(self, *, key: str, collection: str) -> bool:
        return bool(await self._call("delete", entry_key(collection, key)))
