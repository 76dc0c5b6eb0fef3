"""Open a backend from a URL, and the process-wide singleton of the seed module."""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlsplit

from ._config import Fallback, Settings, check_namespace, check_url, load_settings
from ._errors import ConfigError, StorageUnavailable
from ._memory import MemoryStorage
from ._redact import redact_url
from ._storage import Storage

log = logging.getLogger("threadstore")

_singleton: Storage | None = None
_singleton_lock = threading.Lock()


def _int_option(url: str, name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{redact_url(url)}: option {name}={raw!r} must be a whole number"
        ) from None


def _open_memory(url: str, namespace: str) -> MemoryStorage:
    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(
            f"memory URL takes no host or path, got {redact_url(url)!r}; use memory://"
        )
    kwargs: dict[str, int | bool | float] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("max_keys", "max_bytes"):
            kwargs[name] = _int_option(url, name, raw)
        elif name == "sweeper":
            if raw not in ("0", "1", "true", "false"):
                raise ConfigError(f"memory URL option sweeper={raw!r} must be 0, 1, true or false")
            kwargs[name] = raw in ("1", "true")
        else:
            raise ConfigError(
                f"unknown memory URL option {name!r}; accepted: max_keys, max_bytes, sweeper"
            )
    try:
        return MemoryStorage(namespace=namespace, **kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"{redact_url(url)}: {exc}") from None


def _open(url: str, namespace: str) -> Storage:
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return _open_memory(url, namespace)
    if scheme == "sqlite":
        from ._sqlite import SQLiteStorage

        return SQLiteStorage.from_url(url, namespace=namespace)
    try:
        from ._redis import RedisStorage
    except ModuleNotFoundError as exc:  # the driver, not our module
        raise ConfigError(
            f"{redact_url(url)} needs the redis extra: pip install 'threadstore[redis]'"
        ) from exc
    return RedisStorage.from_url(url, namespace=namespace)


def open_storage(
    url: str | None = None,
    *,
    namespace: str | None = None,
    fallback: Fallback | None = None,
    settings: Settings | None = None,
) -> Storage:
    """Open a new, independent backend.

    ``url`` defaults to THREADSTORE_URL, then REDIS_URL, then ``memory://``. When the backend
    cannot be reached, ``fallback`` (default THREADSTORE_FALLBACK, else "memory") decides: "memory"
    logs one warning and returns an in-memory store, "fail" raises StorageUnavailable.
    """
    settings = settings or load_settings()
    url = check_url(url, "url") if url is not None else (settings.url or "memory://")
    namespace = check_namespace(namespace, "namespace") if namespace else settings.namespace
    mode = fallback or settings.fallback
    if mode not in ("memory", "fail"):
        raise ConfigError(f"fallback={mode!r} is not valid: expected 'memory' or 'fail'")
    try:
        return _open(url, namespace)
    except StorageUnavailable as exc:
        if mode == "fail" or url.startswith("memory:"):
            raise
        log.warning(
            "threadstore: %s is unreachable (%s); falling back to in-memory storage: threads"
            " will not be shared with other processes nor survive a restart"
            " (set THREADSTORE_FALLBACK=fail to make this an error)",
            redact_url(url),
            exc,
        )
        return MemoryStorage(namespace=namespace)


def get_storage_backend(settings: Settings | None = None) -> Storage:
    """The process-wide store configured from the environment (created on first use).
    ``settings``, when given, replaces the environment for that first creation only."""
    global _singleton
    store = _singleton
    if store is not None:
        return store
    with _singleton_lock:
        if _singleton is None:
            _singleton = open_storage(settings=settings)
        return _singleton


def reset_storage_backend() -> None:
    """Close and forget the process-wide store; the next get_storage_backend() makes a new one."""
    global _singleton
    with _singleton_lock:
        store, _singleton = _singleton, None
    if store is not None:
        store.close()
