"""The backend contract: strings and append-only capped lists, every key with a TTL.

A backend knows nothing about threads. Each key holds a string or a list of strings and has an
expiry; every operation is atomic on its own. The answers mirror Redis' GET/SET PX/DEL/EXISTS/
PTTL/PEXPIRE/SCAN. Argument checking lives here as plain functions so every backend rejects the
same inputs with the same messages before touching its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar

from ._errors import InvalidInput

MAX_KEY_LENGTH = 1024
"""Longest key accepted, in characters (namespace prefix not counted)."""
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600.0
"""Longest TTL accepted: ten years."""
MIN_TTL_SECONDS = 0.001
"""TTLs have millisecond precision; anything shorter is rejected rather than rounded to zero."""

MAX_ITEMS = 1 << 62
"""Largest max_items accepted (fits every backend's integers)."""
APPEND_MISSING = 0
"""list_append result: the key does not exist (or expired); nothing was appended."""
APPEND_FULL = -1
"""list_append result: the list already holds max_items items; nothing was appended."""

MAX_SCOPE_LENGTH = 200
"""Longest index scope name, in characters."""
MAX_SCOPES = 8
"""Most scopes one list may be filed under."""
MAX_SCORE = (1 << 53) - 1
"""Largest index score (a Redis double holds every integer up to it exactly)."""
MAX_PAGE = 1000
"""Most entries one index_page call returns."""
TRIM_ON_WRITE = 2
"""Expired index entries a write that touches the index removes on the side."""
TRIM_ON_READ = 64
"""Expired index entries one index_page call removes at most (it skips any further ones)."""


def check_text(text: str, what: str) -> str:
    """Refuse text that cannot be stored as UTF-8 (an unpaired surrogate from a bad decode)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"{what} is not valid Unicode text: unpaired surrogate at position {exc.start}"
            ) from None
    return text


def check_key(key: object) -> str:
    if type(key) is not str:
        raise InvalidInput(f"key must be a str, got {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        if not key:
            raise InvalidInput("key must not be empty")
        if "\x00" in key:
            raise InvalidInput("key must not contain NUL characters")
        raise InvalidInput(f"key is {len(key)} characters long; the maximum is {MAX_KEY_LENGTH}")
    return check_text(key, "key")


def check_value(value: object, what: str = "value") -> str:
    if type(value) is not str:
        raise InvalidInput(f"{what} must be a str, got {type(value).__name__}")
    return check_text(value, what)


def check_ttl(ttl_seconds: object) -> float:
    """Validate a TTL in seconds (int or float, finite, 1 ms to 10 years) and return it as float."""
    if type(ttl_seconds) is float or type(ttl_seconds) is int:
        ttl = float(ttl_seconds)
        if MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            return ttl
        if math.isnan(ttl):
            raise InvalidInput("ttl_seconds must be a number, got NaN")
        raise InvalidInput(
            f"ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS:.0f}, got {ttl!r}"
        )
    raise InvalidInput(f"ttl_seconds must be an int or float, got {type(ttl_seconds).__name__}")


def ttl_ms(ttl_seconds: object) -> int:
    """A validated TTL as whole milliseconds (at least 1)."""
    return max(1, round(check_ttl(ttl_seconds) * 1000))


def check_values(values: object) -> list[str]:
    """Validate the items of list_append_many: a non-empty list or tuple of str."""
    if not isinstance(values, list | tuple):
        raise InvalidInput(f"values must be a list of str, got {type(values).__name__}")
    if not values:
        raise InvalidInput("values must not be empty")
    return [check_value(v, f"values[{i}]") for i, v in enumerate(values)]


def check_max_items(max_items: object) -> int:
    if type(max_items) is not int or not 1 <= max_items <= MAX_ITEMS:
        raise InvalidInput(f"max_items must be an int from 1 to {MAX_ITEMS}, got {max_items!r}")
    return max_items


def check_range(start: object, stop: object) -> tuple[int, int | None]:
    """Validate list_range bounds: non-negative ints, ``stop`` None for "to the end"."""
    if (
        type(start) is not int
        or start < 0
        or (stop is not None and (type(stop) is not int or stop < 0))
    ):
        raise InvalidInput(f"start and stop must be non-negative ints, got {start!r}, {stop!r}")
    return start, stop


def check_scope(scope: object) -> str:
    if type(scope) is not str:
        raise InvalidInput(f"scope must be a str, got {type(scope).__name__}")
    if not scope or len(scope) > MAX_SCOPE_LENGTH or "\x00" in scope:
        raise InvalidInput(
            f"scope must be 1 to {MAX_SCOPE_LENGTH} characters without NUL, got {scope[:40]!r}"
        )
    return check_text(scope, "scope")


def check_scopes(scopes: object) -> tuple[str, ...]:
    """A list or tuple of distinct scope names (possibly empty), as a tuple in the given order."""
    if not isinstance(scopes, list | tuple):
        raise InvalidInput(f"scopes must be a list or tuple of str, got {type(scopes).__name__}")
    if len(scopes) > MAX_SCOPES:
        raise InvalidInput(f"a list may be filed under at most {MAX_SCOPES} scopes")
    checked = tuple(check_scope(s) for s in scopes)
    if len(set(checked)) != len(checked):
        raise InvalidInput(f"scopes must be distinct, got {list(checked)!r}")
    return checked


def check_score(score: object) -> int:
    if type(score) is not int or not 0 <= score <= MAX_SCORE:
        raise InvalidInput(f"score must be an int from 0 to 2**53 - 1, got {score!r}")
    return score


def check_page(limit: object, after: object) -> tuple[int, tuple[int, str] | None]:
    """Validate index_page's limit (1 to MAX_PAGE) and keyset position ``(score, key)``."""
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r}")
    if after is None:
        return limit, None
    if not isinstance(after, list | tuple) or len(after) != 2:
        raise InvalidInput(f"after must be None or a (score, key) pair, got {after!r}")
    return limit, (check_score(after[0]), check_key(after[1]))


def check_prefix(prefix: object) -> str:
    if type(prefix) is not str:
        raise InvalidInput(f"prefix must be a str, got {type(prefix).__name__}")
    if "\x00" in prefix:
        raise InvalidInput("prefix must not contain NUL characters")
    return prefix


ListEnds = tuple[int, str, str, float]
"""What list_ends returns: (length, first item, last item, seconds left)."""


class Storage(ABC):
    """What every backend implements. See DESIGN.md, "The backend contract"."""

    kind: ClassVar[str]
    """Short backend name: "memory", "sqlite" or "redis"."""

    namespace: str
    """Key prefix: two namespaces on one server or file never see each other's keys."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The backend's URL with any password redacted (safe to print)."""

    # -- strings -------------------------------------------------------------------------------
    @abstractmethod
    def get(self, key: str) -> str | None:
        """The string at ``key``, or None when it is missing or expired."""

    @abstractmethod
    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        """Store ``value`` at ``key`` (replacing any string or list) for ``ttl_seconds``."""

    def setex(self, key: str, ttl_seconds: float, value: str) -> None:
        """Alias of set_with_ttl, as in the seed module and Redis' SETEX."""
        self.set_with_ttl(key, ttl_seconds, value)

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live key was removed."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when ``key`` holds a live string or list."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it is missing or expired."""

    @abstractmethod
    def expire(self, key: str, ttl_seconds: float) -> bool:
        """Set a new TTL on a live key; False when it is missing."""

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[str]:
        """Live keys starting with ``prefix`` (namespace not included), in no particular order."""

    # -- lists ---------------------------------------------------------------------------------
    @abstractmethod
    def list_create(
        self,
        key: str,
        ttl_seconds: float,
        first: str,
        *,
        scopes: tuple[str, ...] | list[str] = (),
        score: int = 0,
    ) -> bool:
        """Create a list holding ``first`` if ``key`` is free; False (nothing changed) otherwise.

        With ``scopes``, the new list is filed under each of those index scopes with ``score``,
        in the same atomic step (see notes/index.md). The store remembers the scopes.
        """

    @abstractmethod
    def list_append(
        self,
        key: str,
        value: str,
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        """Append to an existing list and refresh its TTL, atomically, in O(1).

        Returns the new length; APPEND_MISSING (0) when the list does not exist, APPEND_FULL (-1)
        when it already holds ``max_items`` items. In both cases nothing changed. When the list
        is filed under index scopes and ``score`` is higher than its score, it is re-scored in
        all of them in the same atomic step (O(log n) per scope); a lower score is ignored, so
        activity only grows (appends stamped in one order may land in the other).
        """

    @abstractmethod
    def list_append_many(
        self,
        key: str,
        values: list[str],
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        """Append every item of ``values`` to an existing list and refresh its TTL, atomically:
        all of them or none, contiguous (no other append lands between them). ``score``
        raises a filed list's score in all its scopes, as for list_append.

        Returns the new length; APPEND_MISSING (0) when the list does not exist, APPEND_FULL (-1)
        when ``len(values)`` more items would exceed ``max_items``. In both cases nothing changed.
        """

    @abstractmethod
    def list_pop(self, key: str, *, ttl_seconds: float) -> str | None:
        """Remove and return the last item of a list and refresh its TTL, atomically (its index
        expiry follows; its score is kept).

        None (nothing changed) when the key is missing or the list holds a single item: lists
        are never empty, so item 0 is never popped.
        """

    @abstractmethod
    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> list[str]:
        """Items ``start`` to ``stop`` (Python slice semantics, non-negative) of a list.

        An empty list when the key is missing or expired; lists are never empty otherwise.
        """

    @abstractmethod
    def list_length(self, key: str) -> int:
        """Number of items in the list at ``key``; 0 when missing or expired."""

    def list_ends(self, key: str) -> ListEnds | None:
        """``(length, first item, last item, seconds left)`` of the list at ``key``, or None when
        it is missing or expired: what a listing shows of a thread. Backends read it in one step
        (one lock hold, one round trip); this default makes the four calls."""
        length = self.list_length(key)
        if not length:
            return None
        first = self.list_range(key, 0, 1)
        last = self.list_range(key, length - 1, length)
        left = self.ttl(key)
        if not first or not last or left is None:
            return None  # expired (or popped) between the calls
        return length, first[0], last[0], left

    def list_ends_many(self, keys: list[str]) -> list[ListEnds | None]:
        """list_ends of each key, in order (a listing page). Redis sends them in one round trip;
        this default calls list_ends for each. An error for any key raises (the caller may then
        read them one by one to tell which)."""
        return [self.list_ends(key) for key in keys]

    # -- activity index (notes/index.md) -------------------------------------------------------
    @abstractmethod
    def index_put(self, key: str, scopes: tuple[str, ...] | list[str], score: int) -> bool:
        """File the live list at ``key`` under ``scopes`` (added to any it is filed under) with
        ``score`` in all of them; False when the key is missing. For backfills, not hot paths."""

    @abstractmethod
    def index_page(
        self,
        scope: str,
        limit: int,
        after: tuple[int, str] | None = None,
        *,
        ascending: bool = False,
    ) -> list[tuple[int, str]]:
        """Up to ``limit`` live entries ``(score, key)`` of ``scope`` strictly past the keyset
        position ``after``, by (score, key) descending (ascending with ``ascending``). Fewer
        than ``limit`` only when no more live entries follow. O(log n + limit) plus dead
        entries skipped, of which a bounded number are removed per call."""

    @abstractmethod
    def index_count(self, scope: str) -> int:
        """Number of live entries in ``scope``."""

    # -- lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters and facts about the store, safe to print (no secrets)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads. Idempotent."""

    def shutdown(self) -> None:
        """Alias of close(), as in the seed module."""
        self.close()

    async def aclose(self) -> None:
        """close() for async code; backends with async connections close those too."""
        self.close()

    @property
    def aio(self) -> AsyncOps:
        """How the async facade reaches this store. Default: each call in a worker thread."""
        return ThreadOffload(self)

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} namespace={self.namespace!r}>"


class AsyncOps(Protocol):
    """The async side of a store: run one contract method by name and await its result."""

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...


_R = TypeVar("_R")


async def run_in_worker(fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> _R:
    """Run ``fn`` in a worker thread; a cancelled caller still waits for it to finish.

    ``asyncio.to_thread`` returns at once when its caller is cancelled while the worker thread
    runs on: a cancelled write could then land later, after writes of calls made since. Here the
    CancelledError is re-raised only once the worker is done, so when cancellation reaches the
    caller the call has either happened or never will, and stored order follows the order in
    which calls returned.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])  # wait() never cancels what it waits for
        if not future.cancelled():
            future.exception()  # retrieved: the caller gets CancelledError, nothing is logged
        raise


class ThreadOffload:
    """Runs each contract call in a worker thread so the event loop never blocks on I/O."""

    __slots__ = ("_storage",)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self._storage, method)
        if method == "scan":
            return await run_in_worker(lambda: list(fn(*args, **kwargs)))
        return await run_in_worker(fn, *args, **kwargs)


class Inline:
    """For stores whose every call is a few microseconds of CPU: call directly on the loop."""

    __slots__ = ("_storage",)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self._storage, method)(*args, **kwargs)
        return list(result) if method == "scan" else result
