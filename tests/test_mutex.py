"""The memory backend's mutex (a one-token SimpleQueue): exclusion, timeouts, interrupts."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from threadstore._mutex import Mutex


def test_with_holds_the_mutex_for_the_block_and_gives_it_back_on_an_exception() -> None:
    m = Mutex()
    assert not m.locked()
    with m:
        assert m.locked()
    assert not m.locked()

    def fail_inside() -> None:
        with m:
            raise KeyError("inside")

    with pytest.raises(KeyError):
        fail_inside()
    assert not m.locked()
    assert m._token.qsize() == 1  # one token, whatever came back


def test_every_mutex_has_a_class_of_its_own() -> None:
    a, b = Mutex(), Mutex()
    assert type(a) is not type(b) and isinstance(a, Mutex)
    with a:
        assert a.locked() and not b.locked()


def test_threads_take_turns_no_update_is_lost() -> None:
    """A read-modify-write that yields the GIL in the middle: without exclusion, updates vanish."""
    m = Mutex()
    box = {"n": 0}
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(300):
            with m:
                n = box["n"]
                time.sleep(0)  # let another thread run while the mutex is held
                box["n"] = n + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert box["n"] == 1200
    assert not m.locked()


def test_acquire_waits_at_most_its_timeout_and_release_refuses_a_second_token() -> None:
    m = Mutex()
    assert m.acquire(timeout=0)
    assert not m.acquire(timeout=0)
    assert not m.acquire(timeout=0.01)
    got = threading.Event()

    def waiter() -> None:
        if m.acquire(timeout=30):
            got.set()
            m.release()

    t = threading.Thread(target=waiter)
    t.start()
    m.release()  # the waiter gets it
    t.join()
    assert got.is_set()
    with pytest.raises(RuntimeError, match="not held"):
        m.release()
    assert m._token.qsize() == 1


def test_an_interrupt_while_waiting_takes_no_token() -> None:
    """SIGINT reaches the main thread while it waits for a mutex another thread holds: it raises
    KeyboardInterrupt without the token, and the mutex works on as before."""
    m = Mutex()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with m:
            held.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    interrupted = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def keep_interrupting() -> None:
        while not interrupted.wait(0.01):  # until the main thread says it was interrupted
            signal.pthread_kill(main, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    kicker = threading.Thread(target=keep_interrupting)
    try:
        kicker.start()
        with pytest.raises(KeyboardInterrupt), m:
            pytest.fail("took a mutex another thread holds")
        interrupted.set()
        kicker.join()
    finally:
        interrupted.set()
        signal.signal(signal.SIGINT, previous)
    assert m.locked()  # still the holder's
    release.set()
    t.join()
    with m:
        assert m._token.qsize() == 0
    assert m._token.qsize() == 1
