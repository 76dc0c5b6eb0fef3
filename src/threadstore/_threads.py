"""ThreadStore and AsyncThreadStore: the two thin facades over the shared logic in _logic.py.

Each public method is one line: build the operation, run it. The sync runner calls the store
directly; the async runner awaits the store's async side (native redis.asyncio for Redis, a
worker thread for SQLite, inline for memory). Method names and signatures match one to one
(a test keeps them in step).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from typing_extensions import Unpack

from ._config import load_settings
from ._errors import InvalidInput, ThreadstoreError
from ._factory import get_storage_backend
from ._forking import step_begin, step_end
from ._history import TokenCounter
from ._logic import DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_TURN_BYTES, Call, Logic, Op
from ._models import History, Thread, ThreadPage, Turn, TurnFields
from ._storage import Storage, run_in_worker

T = TypeVar("T")
F = TypeVar("F", bound="_Facade")


OFFLOAD_BYTES = 64 * 1024
"""Storage answers holding more text than this are decoded in a worker thread (async API)."""


def _large(result: object) -> bool:
    """A list of stored items whose decoding would hold the event loop for long."""
    if type(result) is not list:
        return False
    size = 0
    for item in result:
        if type(item) is str:
            size += len(item)
            if size > OFFLOAD_BYTES:
                return True
    return False


def _advance(op: Op[Any], result: Any, error: ThreadstoreError | None) -> tuple[bool, Any]:
    """One step of an operation: (False, its next Call) or (True, its return value). The
    generator's StopIteration never leaves this function (it cannot cross a future). A fork()
    waits until no thread is inside a step (see _forking.py)."""
    me = step_begin()
    try:
        if error is not None:
            return False, op.throw(error)
        return False, op.send(result)  # send(None) starts a new generator, like next()
    except StopIteration as stop:
        return True, stop.value
    finally:
        step_end(me)


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, line


@contextmanager
def _at_line(number: int) -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        raise type(exc)(f"line {number}: {exc}") from None


class _Facade:
    def __init__(
        self,
        storage: Storage | None = None,
        *,
        ttl_seconds: float | None = None,
        max_turns: int | None = None,
        max_turn_bytes: int = DEFAULT_MAX_TURN_BYTES,
        max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    ) -> None:
        if ttl_seconds is None or max_turns is None:
            settings = load_settings()
            ttl_seconds = settings.ttl_seconds if ttl_seconds is None else ttl_seconds
            max_turns = settings.max_turns if max_turns is None else max_turns
        self.storage: Storage = storage if storage is not None else get_storage_backend()
        self._logic = Logic(
            ttl_seconds=ttl_seconds,
            max_turns=max_turns,
            max_turn_bytes=max_turn_bytes,
            max_metadata_bytes=max_metadata_bytes,
        )

    @property
    def ttl_seconds(self) -> float:
        return self._logic.ttl_seconds

    @property
    def max_turns(self) -> int:
        return self._logic.max_turns

    @property
    def owner(self) -> str | None:
        """The principal this store acts for (see ``for_owner``); None for the unscoped store."""
        return self._logic.owner

    @property
    def sees_all(self) -> bool:
        """True unless this store is scoped to one owner's threads."""
        return self._logic.see_all

    def for_owner(self: F, owner: str, *, admin: bool = False) -> F:
        """The same store acting as principal ``owner``, sharing this one's storage.

        Threads it creates are owned by ``owner``. Unless ``admin``, it sees only those: another
        principal's thread (or one created without an owner) is exactly like a missing one for
        every method (None, ThreadNotFound with the same text, False from delete_thread), lists
        and counts hold only ``owner``'s threads, and chains stop at a parent it may not see.
        ``admin=True`` sees and manages every thread. Cheap (no I/O); closing either store
        closes the shared storage.
        """
        scoped = copy.copy(self)
        scoped._logic = dataclasses.replace(self._logic, owner=owner, see_all=admin)
        return scoped

    def __repr__(self) -> str:
        who = "" if self.owner is None else f" owner={self.owner!r}"
        who += " admin" if self.owner is not None and self.sees_all else ""
        return f"<{type(self).__name__} {self.storage!r} ttl={self.ttl_seconds:g}s{who}>"


def run_sync(storage: Storage, op: Op[T]) -> T:
    """Run an operation of _logic.py against a storage object, in the calling thread."""
    done, step = _advance(op, None, None)
    while not done:
        call: Call = step
        error: ThreadstoreError | None = None
        result: Any = None
        try:
            result = getattr(storage, call.method)(*call.args, **call.kwargs)
            if call.method == "scan":
                result = list(result)
        except ThreadstoreError as exc:  # the operation may handle it
            error = exc
        done, step = _advance(op, result, error)
    value: T = step
    return value


class ThreadStore(_Facade):
    """Conversation threads on any backend. Safe to share between threads."""

    def _run(self, op: Op[T]) -> T:
        return run_sync(self.storage, op)

    def create_thread(
        self,
        tool_name: str,
        initial_context: dict[str, Any] | None = None,
        parent_thread_id: str | None = None,
    ) -> str:
        """Start a thread; returns its id (a lowercase UUID4) to hand back as continuation_id."""
        return self._run(self._logic.create_thread(tool_name, initial_context, parent_thread_id))

    def add_turn(
        self, thread_id: str, role: str, content: str, **fields: Unpack[TurnFields]
    ) -> Turn:
        """Append a turn atomically and refresh the thread's TTL. Optional fields: files,
        images, tool_name, model_provider, model_name, metadata (a JSON object)."""
        return self._run(self._logic.add_turn(thread_id, role, content, **fields))

    def get_thread(self, thread_id: str) -> Thread | None:
        """The whole thread, or None when it does not exist or expired."""
        return self._run(self._logic.get_thread(thread_id))

    def require_thread(self, thread_id: str) -> Thread:
        """The whole thread; ThreadNotFound (stating the timeout) when missing or expired."""
        return self._run(self._logic.require_thread(thread_id))

    def count_threads(self) -> int:
        """How many live threads the namespace holds (only this owner's for a scoped store):
        read from the activity index, O(log n) whatever the store holds."""
        return self._run(self._logic.count_threads())

    def get_thread_chain(self, thread_id: str, max_depth: int = 20) -> list[Thread]:
        """The thread and its ancestors, oldest first (cycle-safe, at most max_depth)."""
        return self._run(self._logic.get_thread_chain(thread_id, max_depth))

    def build_history(
        self, thread_id: str, *, max_tokens: int, token_counter: TokenCounter | None = None
    ) -> History:
        """The newest turns of the chain that fit in max_tokens, presented oldest first."""
        return self._run(
            self._logic.build_history(thread_id, max_tokens=max_tokens, token_counter=token_counter)
        )

    def list_threads(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        """Live threads, most recent activity first; pass next_cursor for the next page."""
        return self._run(self._logic.list_threads(limit=limit, cursor=cursor))

    def delete_thread(self, thread_id: str) -> bool:
        """Remove a thread; True if it existed."""
        return self._run(self._logic.delete_thread(thread_id))

    def export_threads(self) -> Iterator[str]:
        """Every live thread as one JSON line (no trailing newline), for backup or migration.
        A damaged thread is skipped with a warning in the log, so it cannot block the others.

        Streams through the activity index a page at a time (oldest activity first): memory
        stays bounded however many threads are stored. A thread that gets a turn meanwhile may
        appear twice, the later line newer; import with ``replace=True`` keeps the newest."""
        after = None
        while True:
            lines, after = self._run(self._logic.export_page(after))
            yield from lines
            if after is None:
                return

    def reindex(self) -> int:
        """File every live thread in the activity index; returns how many. Needed once after
        upgrading a Redis store written by an older release (notes/index.md); harmless else."""
        return self._run(self._logic.reindex())

    def import_threads(self, lines: Iterable[str], *, replace: bool = False) -> int:
        """Store exported JSON lines; returns how many threads were written (existing ones are
        kept unless ``replace``). A bad line raises InvalidInput naming its line number."""
        written = 0
        for number, line in _numbered(lines):
            with _at_line(number):
                written += self._run(self._logic.import_thread(line, replace=replace))
        return written

    def close(self) -> None:
        self.storage.close()


class AsyncThreadStore(_Facade):
    """The same API, awaitable; never blocks the event loop."""

    async def _run(self, op: Op[T], *, offload: bool = False) -> T:
        """Run ``op``, awaiting each storage call. The operation's own steps (decoding, rendering,
        token counting) run on the event loop when they are cheap, and in a worker thread when
        ``offload`` is set or the data just read is large, so that no client waits on them."""
        aio = self.storage.aio
        done, step = _advance(op, None, None)
        while not done:
            call: Call = step
            error: ThreadstoreError | None = None
            result: Any = None
            try:
                result = await aio.call(call.method, *call.args, **call.kwargs)
            except ThreadstoreError as exc:  # the operation may handle it
                error = exc
            if offload or (call.method == "list_range" and _large(result)):
                done, step = await run_in_worker(_advance, op, result, error)
            else:
                done, step = _advance(op, result, error)
        value: T = step
        return value

    async def create_thread(
        self,
        tool_name: str,
        initial_context: dict[str, Any] | None = None,
        parent_thread_id: str | None = None,
    ) -> str:
        return await self._run(
            self._logic.create_thread(tool_name, initial_context, parent_thread_id)
        )

    async def add_turn(
        self, thread_id: str, role: str, content: str, **fields: Unpack[TurnFields]
    ) -> Turn:
        return await self._run(self._logic.add_turn(thread_id, role, content, **fields))

    async def get_thread(self, thread_id: str) -> Thread | None:
        return await self._run(self._logic.get_thread(thread_id))

    async def require_thread(self, thread_id: str) -> Thread:
        return await self._run(self._logic.require_thread(thread_id))

    async def count_threads(self) -> int:
        return await self._run(self._logic.count_threads())

    async def get_thread_chain(self, thread_id: str, max_depth: int = 20) -> list[Thread]:
        return await self._run(self._logic.get_thread_chain(thread_id, max_depth))

    async def build_history(
        self, thread_id: str, *, max_tokens: int, token_counter: TokenCounter | None = None
    ) -> History:
        return await self._run(
            self._logic.build_history(
                thread_id, max_tokens=max_tokens, token_counter=token_counter
            ),
            offload=True,  # decoding, rendering and the caller's token counter: off the loop
        )

    async def list_threads(self, *, limit: int = 50, cursor: str | None = None) -> ThreadPage:
        return await self._run(self._logic.list_threads(limit=limit, cursor=cursor))

    async def delete_thread(self, thread_id: str) -> bool:
        return await self._run(self._logic.delete_thread(thread_id))

    async def export_threads(self) -> AsyncIterator[str]:
        after = None
        while True:
            lines, after = await self._run(self._logic.export_page(after))
            for line in lines:
                yield line
            if after is None:
                return

    async def reindex(self) -> int:
        return await self._run(self._logic.reindex())

    async def import_threads(self, lines: Iterable[str], *, replace: bool = False) -> int:
        written = 0
        for number, line in _numbered(lines):
            with _at_line(number):
                written += await self._run(self._logic.import_thread(line, replace=replace))
        return written

    async def close(self) -> None:
        await self.storage.aclose()
