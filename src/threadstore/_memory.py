"""The in-process backend (``memory://``): a dict under one short lock, bounded, with lazy and
incremental expiry.

Layout. ``_data`` maps key -> (value, expires_at, size, n, slot): value is a ``str`` or a
``list`` of str; expires_at is on the monotonic clock (a wall-clock jump neither expires nor
revives a key); size is the bytes held by key and value; the key is filed in expiry bucket
``_buckets[n]`` (the keys filed for second ``n``) at index ``slot``. ``_due`` is a heap of the
bucket numbers in use. Every live key is filed in exactly one bucket, never later than its expiry.
Filing is an append; taking a key out moves the bucket's last key into its slot, so both are O(1)
without hashing the key again. A TTL that grows (every turn refreshes its thread's) leaves the
key where it is, so the common write touches no bucket at all; when a bucket's second has passed,
the sweeper and the writers take its keys a few at a time: expired ones are dropped, refreshed
ones are filed again where they now belong. No step walks the keyspace while holding the lock.

An entry names its bucket by number rather than holding the list: an entry of a string then
holds only a str, a float and ints, so the garbage collector stops tracking it at its first young
collection. Entries that held a list stayed tracked, and every full collection, each pausing
every thread, walked all of them (9 full collections while a million keys went in, the longest
200 ms; now one).

Hot paths. ``get`` and ``set_with_ttl`` over a string make no function call while they hold the
lock (only ``in``, subscripts, arithmetic and attribute access); a new key adds a few C builtins
(``len``, ``str.isascii``, ``list.append``). CPython switches threads only at calls and backward
jumps, so a thread is rarely descheduled while it holds the lock; the clock is read before the
lock is taken. The lock is a ``Mutex`` (_mutex.py), a one-token ``queue.SimpleQueue`` whose
``with`` block costs about half of a ``threading.Lock``'s. Both paths hold it in a ``with``
block, never ``acquire()`` and a ``finally: release()``: CPython handles pending signals when a
call returns, so a KeyboardInterrupt can land just after ``acquire()`` and before the ``try``,
and the lock stays held for good (a fifth of the interrupts did, in a probe like the Ctrl-C test
of tests/test_hardening.py); ``with`` leaves no such gap. A write takes the fast path while
``now < _fast_until`` (the store is open, not torn, and no bucket is due for a sweep) and, for a
new key, while its expiry falls in the "hot" bucket (the one the slow path filed its last new key
in) and that bucket is below its cap (see ``_heat``); anything else (a new second, a full store,
a key or value that needs the full checks) goes through ``_set_slowly``, which runs every check.

Interrupts. CPython runs signal handlers when a call returns, so a KeyboardInterrupt (or
whatever a handler raises) can stop an update between two of its steps, with the lock released by
its ``with`` and the structures half-changed. Every method that updates in several steps is
wrapped by ``_marks_torn``: such an exception marks the store torn, which stops the fast paths,
and the next call that takes the lock derives the buckets, the byte count and the activity index
again from the entries (``_mend``) before it goes on. ``_data`` itself only ever changes by whole
entries. The fast paths make their last call after their last change, so they never tear.

Eviction. When a write would pass ``max_keys`` or ``max_bytes``, the key closest to expiry goes
first (Redis' ``volatile-ttl``), chosen among a few keys of the earliest bucket: since every turn
refreshes its thread's TTL, that is the thread idle the longest, and an expired key always goes
before a live one. It costs O(1) per eviction and nothing on reads (an LRU would add work to
every ``get``).

Activity index (notes/index.md). ``_filed`` maps a filed list's key to [scopes, score]; ``_ix``
maps a scope to a sorted list of (score, key). Every path that removes a key for good (delete,
expiry, eviction, a string written over a list) unfiles it in the same critical section, so the
only dead entries are keys expired and not dropped yet: pages skip them (dropping a few), and a
count first lets the sweep drop them (in batches, releasing the lock between batches) and then
drops the expired keys of the current second's bucket.
"""

from __future__ import annotations

import functools
import heapq
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from sortedcontainers import SortedList

from . import _forking
from ._config import DEFAULT_NAMESPACE
from ._errors import InvalidInput, StorageUnavailable, WrongType
from ._mutex import Mutex
from ._storage import (
    APPEND_FULL,
    APPEND_MISSING,
    MAX_KEY_LENGTH,
    TRIM_ON_READ,
    AsyncOps,
    Inline,
    ListEnds,
    Storage,
    check_key,
    check_max_items,
    check_page,
    check_prefix,
    check_range,
    check_scope,
    check_scopes,
    check_score,
    check_ttl,
    check_value,
    check_values,
)

DEFAULT_MAX_KEYS = 1_000_000
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of keys and values
SWEEP_BATCH = 64  # bucket entries handled per lock hold by the sweeper (tens of microseconds)
SWEEP_PAUSE = 0.0001  # seconds the sweeper sleeps between batches: readers get the GIL at once
WRITE_SWEEP = 4  # bucket entries a new key handles on the side when a bucket is due
EVICT_SAMPLE = 16  # keys of the earliest bucket compared to pick the soonest to expire
EVICT_REFILE = 64  # refreshed keys an eviction may re-file before it settles for the soonest seen
_ITEM_OVERHEAD = 8  # one list slot per list item

_sizeof = sys.getsizeof
_NEVER = float("inf")
_CLOSED = float("-inf")
_UNSET = object()  # no TTL validated yet
_ASCII_HEADER = sys.getsizeof("")
_TWO_HEADERS = 2 * _ASCII_HEADER
_LIST_HEADER = sys.getsizeof([None])
# _KEY_COST[n]: the bytes a string entry is charged for a key of n characters and the two str
# headers. An empty key finds None (the sum raises TypeError; typed as int for the sums) and a key
# longer than MAX_KEY_LENGTH finds no item (IndexError): the length check costs the fast path
# nothing.
_KEY_COST = cast(
    tuple[int, ...], (None, *range(_TWO_HEADERS + 1, _TWO_HEADERS + MAX_KEY_LENGTH + 1))
)


class Bucket(list[str]):
    """The keys filed for one second of expiry, ``n`` (its key in ``_buckets``, the very float
    object that entries filed here hold)."""

    __slots__ = ("n",)

    def __init__(self, n: float) -> None:
        super().__init__()
        self.n = n


Entry = tuple["str | list[str]", float, int, float, int]
"""(value, expires_at, bytes held by key and value, the number of the bucket the key is filed in,
and its slot there: ``_buckets[entry[3]][entry[4]] == key``)."""


Filing = list[Any]
"""[scopes (tuple of str), score (int)] of a filed list."""

M = TypeVar("M", bound=Callable[..., Any])


def _marks_torn(method: M) -> M:
    """Wrap a method that updates the store in several steps: if an interrupt stops it (any
    exception that is not an ``Exception``), the store is marked torn, and mended by the next
    call that takes the lock (see "Interrupts" above)."""

    @functools.wraps(method)
    def guarded(self: MemoryStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            raise
        except BaseException:
            self._torn = True
            self._fast_until = _CLOSED  # no fast path until _mend has run
            raise

    return cast(M, guarded)


def _items_size(items: list[str]) -> int:
    """The bytes list items add to their entry."""
    return sum(_str_size(v) for v in items) + _ITEM_OVERHEAD * len(items)


def _entry_size(key: str, value: str | list[str]) -> int:
    """The bytes an entry holds (the fast paths count an ASCII string inline, to the same sum)."""
    if type(value) is list:
        return _str_size(key) + _LIST_HEADER + _items_size(value)
    assert type(value) is str
    return _str_size(value) + len(key) + _ASCII_HEADER


_STORES: weakref.WeakSet[MemoryStorage] = weakref.WeakSet()
_held: list[MemoryStorage] = []  # stores whose lock the forking thread holds across fork()


def _lock_before_fork(deadline: float) -> None:
    """Hold every store's lock across fork(): the child then starts from a consistent store
    whose lock no vanished thread holds (it would hang forever on its first call)."""
    for store in list(_STORES):
        if store._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held.append(store)


def _unlock_in_parent() -> None:
    while _held:
        _held.pop()._lock.release()


def _reinit_in_child() -> None:
    held = set(map(id, _held))
    _held.clear()
    for store in list(_STORES):
        store._after_fork_in_child(clean=id(store) in held)


_forking.register(
    before=_lock_before_fork, after_in_parent=_unlock_in_parent, after_in_child=_reinit_in_child
)


def _str_size(s: str) -> int:
    """Bytes a str occupies: exact for ASCII (the common case) without a sys.getsizeof call."""
    return len(s) + _ASCII_HEADER if s.isascii() else _sizeof(s)


class MemoryStorage(Storage):
    """Thread-safe, bounded, in-process store. One process only; lost on exit."""

    kind = "memory"

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sweeper: bool = True,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        if type(max_keys) is not int or max_keys < 1:
            raise InvalidInput(f"max_keys must be a positive int, got {max_keys!r}")
        if type(max_bytes) is not int or max_bytes < 64 * 1024:
            raise InvalidInput(f"max_bytes must be an int of at least 65536, got {max_bytes!r}")
        self.namespace = namespace
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._max_value_bytes = max_bytes - 1024 - _ASCII_HEADER  # room left for the longest key
        self._good_ttl: object = _UNSET
        self._clock = clock
        self._lock = Mutex()
        self._data: dict[str, Entry] = {}
        self._buckets: dict[float, Bucket] = {}
        self._due: list[float] = []  # heap of the bucket numbers in _buckets
        self._fast_until = _NEVER  # see _note_due
        self._hot = Bucket(_NEVER)  # the bucket new keys were filed in last, for seconds [from, to)
        self._hot_from = self._hot_to = _NEVER  # _hot_from is _hot.n while it takes keys
        self._hot_cap = 0  # new keys go inline while len(_hot) < _hot_cap: see _heat
        self._ix: dict[str, Any] = {}  # scope -> SortedList of (score, key)
        self._filed: dict[str, Filing] = {}
        self._bytes = 0
        self._hits = self._misses = self._expired = self._evicted = self._mended = 0
        self._closed = False
        self._torn = False  # an update was cut short by an interrupt: see _marks_torn
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sweep_interval = float(sweep_interval)
        if sweeper:
            self._start_sweeper()
        _STORES.add(self)

    def _start_sweeper(self) -> None:
        self._sweeper = threading.Thread(
            target=_sweep_forever,
            args=(weakref.ref(self), self._stop, self._sweep_interval),
            name="threadstore-memory-sweeper",
            daemon=True,
        )
        self._sweeper.start()

    def _after_fork_in_child(self, *, clean: bool) -> None:
        """In a child process: a fresh lock; the sweeper thread did not survive fork(), so a new
        one starts. A store whose lock could not be taken before the fork may be half-updated:
        it refuses every call, telling the child to open its own."""
        self._lock = Mutex()
        if not clean and not self._closed:
            self._closed = True
            self._clock = _forked_clock
            self._note_due()
        if self._sweeper is not None and not self._closed:
            self._stop = threading.Event()
            self._start_sweeper()

    @property
    def url(self) -> str:
        return "memory://"

    @property
    def aio(self) -> AsyncOps:
        # Every call is a few microseconds under a lock never held for more than constant work.
        return Inline(self)

    # -- internals (call with the lock held) ----------------------------------------------------
    def _bucket(self, expires_at: float) -> Bucket:
        """The bucket for ``expires_at``, created (and put on the heap) if needed."""
        n = expires_at // 1.0
        bucket = self._buckets.get(n)
        if bucket is None:
            bucket = self._buckets[n] = Bucket(n)
            heapq.heappush(self._due, n)
            self._note_due()
        return bucket

    def _heat(self, expires_at: float) -> Bucket:
        """The bucket for ``expires_at``, which becomes the one new keys are filed in inline."""
        bucket = self._hot = self._bucket(expires_at)
        self._hot_from = bucket.n
        self._hot_to = bucket.n + 1.0
        # The inline path files new keys only here, so it counts keys by the hot bucket's length
        # instead of len(_data): len(_data) - len(_hot) + _hot_cap <= max_keys holds while it
        # fills. _put lowers the cap for every key filed elsewhere (a key taken out of the hot
        # bucket and kept is filed again; tests/memory_invariants.py checks the bound).
        self._hot_cap = self._max_keys - len(self._data) + len(bucket)
        return bucket

    def _note_due(self) -> None:
        """After the heap of buckets changed: the fast write paths hold until the earliest
        bucket's second has passed (then its keys are due for a sweep), and never once the store
        is closed."""
        due = self._due
        stop = self._closed or self._torn
        self._fast_until = _CLOSED if stop else due[0] + 1.0 if due else _NEVER

    def _put(
        self, key: str, value: str | list[str], expires_at: float, size: int, bucket: Bucket
    ) -> None:
        """Store an entry, filed in ``bucket`` (the one of its expiry, or an earlier one)."""
        self._data[key] = (value, expires_at, size, bucket.n, len(bucket))
        bucket.append(key)
        if bucket is not self._hot:
            self._hot_cap -= 1  # maybe one key more outside the hot bucket: see _heat

    def _unslot(self, entry: Entry) -> None:
        """Take an entry's key out of its bucket: the bucket's last key moves into its slot."""
        bucket, slot = self._buckets[entry[3]], entry[4]
        last = bucket.pop()
        if slot < len(bucket):
            bucket[slot] = last
            moved = self._data[last]
            self._data[last] = (moved[0], moved[1], moved[2], moved[3], slot)

    def _retime(
        self, key: str, entry: Entry, value: str | list[str], expires_at: float, size: int
    ) -> None:
        """Replace an entry; it stays filed unless its expiry moved before its bucket."""
        if expires_at // 1.0 < entry[1] // 1.0:  # filed at most at entry[1]'s bucket: maybe late
            self._unslot(entry)
            self._put(key, value, expires_at, size, self._bucket(expires_at))
        else:
            self._data[key] = (value, expires_at, size, entry[3], entry[4])

    def _drop(self, key: str, entry: Entry) -> None:
        self._unslot(entry)
        del self._data[key]
        self._bytes -= entry[2]

    def _next_due(self, limit: float) -> Bucket | None:
        """The earliest non-empty bucket numbered below ``limit``; emptied ones are retired."""
        due, buckets = self._due, self._buckets
        while due and due[0] < limit:
            bucket = buckets[due[0]]
            if bucket:
                return bucket
            n = heapq.heappop(due)
            del buckets[n]
            if n == self._hot_from:
                self._hot_to = _CLOSED  # new keys no longer go there
            self._note_due()
        return None

    def _sweep(self, now: float, budget: int) -> bool:
        """Handle up to ``budget`` keys of fully past buckets; True if more are waiting."""
        data = self._data
        limit = now // 1.0  # buckets below this one have entirely passed
        while budget > 0:
            bucket = self._next_due(limit)
            if bucket is None:
                return False
            key = bucket.pop()
            budget -= 1
            entry = data[key]
            if entry[1] <= now:
                del data[key]
                self._bytes -= entry[2]
                self._expired += 1
                if key in self._filed:
                    self._unfile(key)
            else:  # refreshed since it was filed: file it where it belongs now
                self._put(key, entry[0], entry[1], entry[2], self._bucket(entry[1]))
        return self._next_due(limit) is not None

    def _evict_one(self, now: float) -> bool:
        """Evict the key closest to expiry, looking at a few keys of the earliest bucket."""
        data = self._data
        refiled = 0
        while True:
            bucket = self._next_due(float("inf"))
            if bucket is None:
                return False
            n = self._due[0]
            victim: str | None = None
            for key in bucket[-EVICT_SAMPLE:]:
                entry = data[key]
                if entry[1] // 1.0 > n and refiled < EVICT_REFILE:
                    self._unslot(entry)  # refreshed: file it where it belongs now
                    self._put(key, entry[0], entry[1], entry[2], self._bucket(entry[1]))
                    refiled += 1
                elif victim is None or entry[1] < data[victim][1]:
                    victim = key
            if victim is not None:
                entry = data[victim]
                self._drop(victim, entry)
                if victim in self._filed:
                    self._unfile(victim)
                if entry[1] <= now:
                    self._expired += 1
                else:
                    self._evicted += 1
                return True

    def _make_room(self, now: float, new_keys: int, new_bytes: int) -> None:
        data = self._data
        while (
            len(data) + new_keys > self._max_keys or self._bytes + new_bytes > self._max_bytes
        ) and self._evict_one(now):
            pass

    def _live(self, key: str, now: float) -> Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= now:
            self._drop(key, entry)
            self._expired += 1
            if key in self._filed:
                self._unfile(key)
            return None
        return entry

    def _file(self, key: str, scopes: tuple[str, ...], score: int) -> None:
        """File ``key`` under ``scopes`` (re-scoring it where it is filed already)."""
        filed = self._filed.get(key)
        if filed is not None:
            self._refile(key, filed, score)
            scopes = tuple(s for s in scopes if s not in filed[0])
            filed[0] = filed[0] + scopes
        else:
            self._filed[key] = [scopes, score]
        ix = self._ix
        for name in scopes:
            entries = ix.get(name)
            if entries is None:
                entries = ix[name] = SortedList()
            entries.add((score, key))

    def _refile(self, key: str, filed: Filing, score: int) -> None:
        """A filed key's new score, in every scope it is in."""
        old = filed[1]
        if score != old:
            ix = self._ix
            for name in filed[0]:
                entries = ix[name]
                entries.remove((old, key))
                entries.add((score, key))
            filed[1] = score

    def _unfile(self, key: str) -> None:
        filed = self._filed.pop(key)
        ix = self._ix
        for name in filed[0]:
            entries = ix[name]
            entries.remove((filed[1], key))
            if not entries:
                del ix[name]

    def _list_entry(self, key: str, now: float) -> Entry | None:
        entry = self._live(key, now)
        if entry is not None and type(entry[0]) is not list:
            raise WrongType(f"key {key!r} holds a string, not a list")
        return entry

    def _check_open(self) -> None:
        if self._closed:
            self._clock()  # raises: closed, or unusable after fork()
        if self._torn:
            self._mend()

    def _mend(self) -> None:
        """After an interrupted update: file every entry again in the bucket of its expiry, with
        its size counted afresh, and rebuild the activity index from ``_filed`` (dropping what
        is no longer a live list). O(n log n) under the lock, once per interrupt."""
        data, filed = self._data, self._filed
        self._buckets, self._due = {}, []
        self._hot, self._hot_from, self._hot_to = Bucket(_NEVER), _NEVER, _NEVER
        self._hot_cap = 0
        self._bytes = 0
        for key, entry in list(data.items()):
            size = _entry_size(key, entry[0])
            self._put(key, entry[0], entry[1], size, self._bucket(entry[1]))
            self._bytes += size
        groups: dict[str, list[tuple[int, str]]] = {}
        for key, (scopes, score) in list(filed.items()):
            live = data.get(key)
            if live is None or type(live[0]) is not list:
                del filed[key]
                continue
            for name in scopes:
                groups.setdefault(name, []).append((score, key))
        self._ix = {name: SortedList(entries) for name, entries in groups.items()}
        self._torn = False
        self._mended += 1
        self._note_due()

    # -- strings --------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        clock = self._clock  # see set_with_ttl
        now = clock()
        data = self._data
        try:
            with self._lock:  # no call inside, and ``with`` on purpose: see the module docstring
                if key in data:
                    entry = data[key]
                    if entry[1] > now:
                        value = entry[0]
                        if value.__class__ is str:
                            self._hits += 1
                            return value
                        raise WrongType(f"key {key!r} holds a list, not a string")
                    self._drop_expired(key, now)
                self._misses += 1
        except TypeError:  # an unhashable key; check_key below says what is wrong
            pass
        # Only str keys are ever stored, so a key of another type is rejected on the miss path.
        check_key(key)
        return None

    @_marks_torn
    def _drop_expired(self, key: str, now: float) -> None:
        self._check_open()
        self._live(key, now)  # the caller's clock reading: the key it saw expired goes

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        if ttl_seconds is not self._good_ttl:
            ttl_seconds = self._check_ttl(ttl_seconds)
        try:
            # The entry's size, and the key's length checked by _KEY_COST on the way. ASCII is
            # exact without a sys.getsizeof call; keys count by length.
            if value.__class__ is str and value.isascii():
                size = len(value) + _KEY_COST[len(key)]
            else:
                size = _sizeof(check_value(value)) - _ASCII_HEADER + _KEY_COST[len(key)]
            clock = self._clock  # an attribute of the instance: LOAD_METHOD cannot cache it
            now = clock()  # raises StorageUnavailable once the store is closed
            expires_at = now + ttl_seconds
            data = self._data
            with self._lock:  # no call inside on the common paths: see the module docstring
                if now < self._fast_until:  # open, and no expiry bucket is due for a sweep
                    if key in data:
                        old = data[key]
                        if (
                            expires_at >= old[1]  # stays in its bucket
                            and old[0].__class__ is str
                            and (total := self._bytes + size - old[2]) <= self._max_bytes
                        ):
                            data[key] = (value, expires_at, size, old[3], old[4])
                            self._bytes = total
                            return
                    elif (  # a new key: due in the hot bucket's second, room to spare, ASCII
                        (n := self._hot_from) <= expires_at
                        and expires_at < self._hot_to
                        and (slot := len(bucket := self._hot)) < self._hot_cap  # max_keys
                        and (total := self._bytes + size) <= self._max_value_bytes  # so size fits
                        and key.__class__ is str
                        and key.isascii()
                        and "\x00" not in key
                    ):
                        data[key] = (value, expires_at, size, n, slot)
                        self._bytes = total
                        bucket.append(key)  # the only call after a change: see "Interrupts"
                        return
                self._set_slowly(key, value, now, expires_at, size)
        except (TypeError, IndexError):  # not a str key (unhashable, or without len()), empty
            check_key(key)  # or too long: this says which
            raise

    @_marks_torn
    def _set_slowly(self, key: str, value: str, now: float, expires_at: float, size: int) -> None:
        """set_with_ttl off the fast path: every check, room made, a few due keys swept."""
        self._check_open()
        data = self._data
        old = data.get(key)
        if old is not None:
            self._retime(key, old, value, expires_at, size)
            self._bytes += size - old[2]
            if self._bytes > self._max_bytes:  # also catches a value too large
                self._shrink_around(key, now, old)
            if old[0].__class__ is list and key in self._filed:
                self._unfile(key)  # a string replaced the list
        else:
            check_key(key)
            if size > self._max_value_bytes:
                self._refuse(size)
            if len(data) >= self._max_keys or self._bytes + size > self._max_bytes:
                self._make_room(now, 1, size)
            self._put(key, value, expires_at, size, self._heat(expires_at))
            self._bytes += size
        if now >= self._fast_until:
            self._sweep(now, WRITE_SWEEP)

    def _shrink_around(self, key: str, now: float, old: Entry | None = None) -> None:
        """After ``key`` grew past max_bytes: evict others (never ``key`` itself). A value
        larger than the store allows is refused and the ``old`` entry put back."""
        entry = self._data[key]
        if old is not None and entry[2] > self._max_value_bytes:
            self._drop(key, entry)
            self._put(key, old[0], old[1], old[2], self._bucket(old[1]))
            self._bytes += old[2]
            self._refuse(entry[2])
        self._unslot(entry)  # out of eviction's reach while room is made
        self._make_room(now, 0, 0)
        self._put(key, entry[0], entry[1], entry[2], self._bucket(entry[1]))

    def _check_ttl(self, ttl_seconds: object) -> float:
        ttl = check_ttl(ttl_seconds)
        self._good_ttl = ttl_seconds  # the next call with this very object skips the checks
        return ttl

    def _refuse(self, size: int) -> None:
        raise InvalidInput(
            f"value of {size} bytes is larger than the store allows"
            f" ({self._max_value_bytes} bytes: max_bytes less the longest key)"
        )

    @_marks_torn
    def delete(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            entry = self._live(key, self._clock())
            if entry is None:
                return False
            self._drop(key, entry)
            if key in self._filed:
                self._unfile(key)
            return True

    @_marks_torn
    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            return self._live(key, self._clock()) is not None

    @_marks_torn
    def ttl(self, key: str) -> float | None:
        check_key(key)
        with self._lock:
            self._check_open()
            now = self._clock()
            entry = self._live(key, now)
            return None if entry is None else entry[1] - now

    @_marks_torn
    def expire(self, key: str, ttl_seconds: float) -> bool:
        check_key(key)
        ttl = check_ttl(ttl_seconds)
        with self._lock:
            self._check_open()
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                return False
            self._retime(key, entry, entry[0], now + ttl, entry[2])
            return True

    def scan(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        with self._lock:
            self._check_open()
            keys = list(self._data)  # one C-level copy (~5 ms per million keys); filtered outside
        data, clock = self._data, self._clock
        for key in keys:
            if key.startswith(prefix):
                entry = data.get(key)
                if entry is not None and entry[1] > clock():
                    yield key

    # -- lists ----------------------------------------------------------------------------------
    @_marks_torn
    def list_create(
        self,
        key: str,
        ttl_seconds: float,
        first: str,
        *,
        scopes: tuple[str, ...] | list[str] = (),
        score: int = 0,
    ) -> bool:
        check_key(key)
        check_value(first, "first")
        ttl = check_ttl(ttl_seconds)
        scopes = check_scopes(scopes)
        check_score(score)
        size = _entry_size(key, [first])
        if size > self._max_bytes:
            raise InvalidInput(f"item of {size} bytes is larger than the store's max_bytes")
        with self._lock:
            self._check_open()
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._make_room(now, 1, size)
            self._put(key, [first], now + ttl, size, self._bucket(now + ttl))
            self._bytes += size
            if scopes:
                self._file(key, scopes, score)
            return True

    def list_append(
        self,
        key: str,
        value: str,
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        check_key(key)
        check_value(value)
        size = _str_size(value) + _ITEM_OVERHEAD
        return self._append(key, [value], size, max_items, ttl_seconds, score)

    def list_append_many(
        self,
        key: str,
        values: list[str],
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        check_key(key)
        values = check_values(values)
        size = _items_size(values)
        return self._append(key, values, size, max_items, ttl_seconds, score)

    @_marks_torn
    def _append(
        self,
        key: str,
        values: list[str],
        size: int,
        max_items: int,
        ttl_seconds: float,
        score: int | None,
    ) -> int:
        """list_append(_many) once key and values are checked: ``size`` is what they add."""
        check_max_items(max_items)
        ttl = check_ttl(ttl_seconds)
        if score is not None:
            check_score(score)
        with self._lock:
            self._check_open()
            now = self._clock()
            entry = self._list_entry(key, now)
            if entry is None:
                return APPEND_MISSING
            items = entry[0]
            assert type(items) is list
            if len(items) + len(values) > max_items:
                return APPEND_FULL
            if entry[2] + size > self._max_bytes:
                raise InvalidInput(f"list {key!r} would grow past the store's max_bytes")
            items.extend(values)
            self._retime(key, entry, items, now + ttl, entry[2] + size)
            if score is not None:
                filed = self._filed.get(key)
                if filed is not None and score > filed[1]:  # activity only grows
                    self._refile(key, filed, score)
            self._bytes += size
            if self._bytes > self._max_bytes:
                self._shrink_around(key, now)
            return len(items)

    @_marks_torn
    def list_pop(self, key: str, *, ttl_seconds: float) -> str | None:
        check_key(key)
        ttl = check_ttl(ttl_seconds)
        with self._lock:
            self._check_open()
            now = self._clock()
            entry = self._list_entry(key, now)
            if entry is None or len(entry[0]) < 2:
                return None
            items = entry[0]
            assert type(items) is list
            value: str = items.pop()
            size = _str_size(value) + _ITEM_OVERHEAD
            self._retime(key, entry, items, now + ttl, entry[2] - size)  # the index follows
            self._bytes -= size
            return value

    @_marks_torn
    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> list[str]:
        check_key(key)
        check_range(start, stop)
        with self._lock:
            self._check_open()
            entry = self._list_entry(key, self._clock())
            if entry is None:
                self._misses += 1
                return []
            self._hits += 1
            return entry[0][start:stop]  # type: ignore[return-value]

    @_marks_torn
    def list_length(self, key: str) -> int:
        check_key(key)
        with self._lock:
            self._check_open()
            entry = self._list_entry(key, self._clock())
            return 0 if entry is None else len(entry[0])

    @_marks_torn
    def list_ends(self, key: str) -> ListEnds | None:
        check_key(key)
        with self._lock:
            self._check_open()
            now = self._clock()
            entry = self._list_entry(key, now)
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            items = entry[0]
            return len(items), items[0], items[-1], entry[1] - now

    # -- activity index -------------------------------------------------------------------------
    @_marks_torn
    def index_put(self, key: str, scopes: tuple[str, ...] | list[str], score: int) -> bool:
        check_key(key)
        scopes = check_scopes(scopes)
        check_score(score)
        with self._lock:
            self._check_open()
            entry = self._list_entry(key, self._clock())
            if entry is None:
                return False
            self._file(key, scopes, score)
            return True

    @_marks_torn
    def index_page(
        self,
        scope: str,
        limit: int,
        after: tuple[int, str] | None = None,
        *,
        ascending: bool = False,
    ) -> list[tuple[int, str]]:
        check_scope(scope)
        limit, after = check_page(limit, after)
        page: list[tuple[int, str]] = []
        dead: list[str] = []
        with self._lock:
            self._check_open()
            now = self._clock()
            ix = self._ix.get(scope)
            if ix is None:
                return page
            if after is None:
                entries = ix.irange(reverse=not ascending)
            elif ascending:
                entries = ix.irange(minimum=after, inclusive=(False, True))
            else:
                entries = ix.irange(maximum=after, inclusive=(True, False), reverse=True)
            data = self._data
            for entry in entries:
                if data[entry[1]][1] > now:
                    page.append(entry)
                    if len(page) >= limit:
                        break
                elif len(dead) < TRIM_ON_READ:
                    dead.append(entry[1])
            for key in dead:  # expired, not swept yet: remove them now
                self._live(key, now)
        return page

    @_marks_torn
    def index_count(self, scope: str) -> int:
        check_scope(scope)
        while True:
            with self._lock:
                self._check_open()
                now = self._clock()
                if not self._sweep(now, SWEEP_BATCH):  # no fully past bucket left
                    # Every key is filed no later than its expiry: the ones expired now are
                    # gone, or in the bucket of the current second. Drop those, then count.
                    bucket = self._buckets.get(now // 1.0)
                    if bucket:
                        data = self._data
                        for key in [k for k in bucket if data[k][1] <= now]:
                            self._live(key, now)
                    ix = self._ix.get(scope)
                    return 0 if ix is None else len(ix)
            time.sleep(0)  # a backlog of expired keys: let other threads in between batches

    # -- lifecycle ------------------------------------------------------------------------------
    @_marks_torn
    def sweep(self, budget: int = SWEEP_BATCH) -> bool:
        """Handle up to ``budget`` keys of past buckets now; True if more are waiting."""
        with self._lock:
            if self._closed:
                return False
            if self._torn:
                self._mend()
            return self._sweep(self._clock(), budget)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.kind,
                "url": self.url,
                "keys": len(self._data),
                "bytes": self._bytes,
                "max_keys": self._max_keys,
                "max_bytes": self._max_bytes,
                "hits": self._hits,
                "misses": self._misses,
                "expired": self._expired,
                "evicted": self._evicted,
                "mended": self._mended,  # interrupted updates repaired (see _marks_torn)
                "sweeper": self._sweeper is not None and self._sweeper.is_alive(),
            }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._clock = _closed_clock  # every later operation raises StorageUnavailable
            self._data.clear()
            self._buckets.clear()
            self._due.clear()
            self._hot = Bucket(_NEVER)
            self._hot_from = self._hot_to = _NEVER
            self._hot_cap = 0
            self._note_due()
            self._ix.clear()
            self._filed.clear()
            self._bytes = 0
        self._stop.set()
        sweeper = self._sweeper
        if sweeper is not None and sweeper is not threading.current_thread():
            sweeper.join(timeout=5)


def _closed_clock() -> float:
    raise StorageUnavailable("the memory store is closed")


def _forked_clock() -> float:
    raise StorageUnavailable(
        "this memory store was busy in another thread when the process forked, so its state"
        " cannot be trusted here: open a new store in the child process (memory stores are"
        " per-process anyway)"
    )


def _sweep_forever(
    ref: weakref.ReferenceType[MemoryStorage], stop: threading.Event, interval: float
) -> None:
    """The background sweeper: every ``interval`` seconds, handle due keys in small batches.

    It holds only a weak reference between passes, so a store nobody uses can be collected.
    """
    while not stop.wait(interval):
        store = ref()
        if store is None:
            return
        try:
            while store.sweep(SWEEP_BATCH) and not stop.is_set():
                time.sleep(SWEEP_PAUSE)  # really yield the GIL to readers between batches
        finally:
            del store
