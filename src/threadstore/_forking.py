"""fork() while other threads use threadstore: the library's one at-fork hook.

A child process starts with only the thread that forked. Any lock another thread held at that
moment stays held in the child forever, including locks inside libraries threadstore calls while
it decodes and encodes (pydantic-core's Rust mutexes: a child forked while another thread was in
``model_validate_json`` hung there in about 1 fork in 1,300 under load). So before the process
forks:

1. **Steps drain.** Every step of an operation of ``_logic.py`` (the code between two storage
   calls: decoding, encoding, rendering) runs inside ``step_begin()`` / ``step_end()``. The
   hook stops new steps and waits, at most ``DRAIN_SECONDS``, until no thread is inside one.
   Storage calls in flight are not waited for here: they are between steps.
2. **Backends quiesce.** Then the hooks the backends registered with ``register()`` run, in
   the order they were registered (the memory store takes its locks; SQLite waits until no
   thread is inside SQLite). They share the same deadline.

After the fork the parent releases everything; the child gets fresh locks and an empty count.
One ``os.register_at_fork`` call holds this order: separate registrations would run in the
reverse order of import, and a backend could then hold a lock a draining step waits for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from threading import get_ident

DRAIN_SECONDS = 2.0
"""How long fork() waits for steps and backend calls in flight (they take microseconds)."""
_POLL_SECONDS = 0.0002  # how often a draining fork() looks again (it waits microseconds)

# Threads inside a step, by thread id, and how deep (a step may run another store's operation).
# Lock-free: each thread writes only its own key, and single dict operations are atomic in
# CPython. A step marks itself, then looks at _forking; fork() sets _forking, then waits for
# the marks to go: either the step sees the fork coming, or the fork sees the step.
_inside: dict[int, int] = {}
_forking = False
_resumed = threading.Event()  # set except while a fork() drains; late steps wait on it
_resumed.set()
_before: list[Callable[[float], None]] = []  # each gets the deadline (time.monotonic())
_after_in_parent: list[Callable[[], None]] = []
_after_in_child: list[Callable[[], None]] = []


def register(
    *,
    before: Callable[[float], None],
    after_in_parent: Callable[[], None],
    after_in_child: Callable[[], None],
) -> None:
    """A backend's fork hooks; ``before`` runs once steps have drained, with the deadline."""
    _before.append(before)
    _after_in_parent.append(after_in_parent)
    _after_in_child.append(after_in_child)


def step_begin() -> int:
    """Mark this thread inside a step (waiting while a fork() drains); pass the result to
    step_end."""
    me = get_ident()
    depth = _inside.get(me, 0)
    _inside[me] = depth + 1
    while _forking:
        if depth:  # already inside a step: the fork is waiting for this thread; go on
            break
        del _inside[me]
        _resumed.wait()
        _inside[me] = 1
    return me


def step_end(me: int) -> None:
    depth = _inside[me] - 1
    if depth:
        _inside[me] = depth
    else:
        del _inside[me]


def _before_fork() -> None:
    global _forking
    deadline = time.monotonic() + DRAIN_SECONDS
    _resumed.clear()
    _forking = True
    me = get_ident()
    while any(t != me for t in list(_inside)) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    for hook in _before:
        hook(deadline)


def _in_parent() -> None:
    global _forking
    for hook in reversed(_after_in_parent):
        hook()
    _forking = False
    _resumed.set()


def _in_child() -> None:
    global _resumed, _forking
    _inside.clear()  # the other threads are gone
    _forking = False
    _resumed = threading.Event()
    _resumed.set()
    for hook in _after_in_child:
        hook()


os.register_at_fork(before=_before_fork, after_in_parent=_in_parent, after_in_child=_in_child)
