"""build_history on a long chain of large turns (issue #11, item 11), on a SQLite file.

The chain: 20 threads x 50 turns of 200 KB (200 MB stored; --quick: 4 x 5 x 50 KB). Two budgets:
``max_tokens=1000`` (no 200 KB turn fits: the answer is a note) and ``max_tokens=1,000,000``
(about 4 MB of text, the newest ~19 turns).

Subjects:

- threadstore: ``ThreadStore.build_history`` / ``AsyncThreadStore.build_history``, which read
  the chain's headers and lengths, then its turns newest first until the budget is spent.
- whole chain (before #11): what build_history did before: every thread of the chain read and
  decoded whole (``get_thread_chain``), then fitted with the same pure function; in the async
  series all of it on the event loop, as the async facade ran it then.

Ops, per subject and budget:

- time of one call (ms), in this process;
- peak RSS growth (MB): a fresh process opens the store, warms up on a one-turn thread, notes
  its peak RSS (VmHWM), makes one call, notes it again;
- event-loop max lag (ms) while 4 concurrent async calls run (--quick: 2): a ticker task sleeps
  5 ms at a time and records how late it wakes; the row is the worst lateness seen.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from threadstore import AsyncThreadStore, History, Storage, ThreadStore
from threadstore._history import build_history
from threadstore._logic import CHAIN_DEPTH, Call, Logic, Op

from . import backends
from .harness import OURS, PEER, Config, NotAvailable, Results, repeat, text_of

TTL = backends.TTL
BUDGETS = (1_000, 1_000_000)
SUBJECTS = [("threadstore", OURS), ("whole chain (before #11)", PEER)]
TICK_S = 0.005


def _shape(cfg: Config) -> tuple[int, int, int]:
    """(threads, turns per thread, characters per turn)."""
    return (4, 5, 50_000) if cfg.quick else (20, 50, 200_000)


def populate(storage: Storage, threads: int, turns: int, chars: int) -> tuple[str, str]:
    """The chain (its newest thread's id) and a one-turn thread to warm up on."""
    store = ThreadStore(storage, ttl_seconds=TTL, max_turns=turns + 1)
    parent = None
    for t in range(threads):
        tid = store.create_thread("bench", parent_thread_id=parent)
        for n in range(turns):
            role = "user" if n % 2 == 0 else "assistant"
            store.add_turn(tid, role, text_of(chars, t * turns + n), files=[f"src/f{n % 7}.py"])
        parent = tid
    warm = store.create_thread("bench")
    store.add_turn(warm, "user", "warm up")
    assert parent is not None
    return parent, warm


# -- the comparison subject: the whole chain read, then fitted ---------------------------------
def _before_sync(store: ThreadStore, leaf: str, budget: int) -> History:
    chain = store.get_thread_chain(leaf, CHAIN_DEPTH)
    return build_history(chain, budget)


async def _run_on_loop(storage: Storage, op: Op[Any]) -> Any:
    """An operation run as the async facade ran it before #11: every step on the event loop."""
    try:
        call: Call = next(op)
        while True:
            call = op.send(await storage.aio.call(call.method, *call.args, **call.kwargs))
    except StopIteration as done:
        return done.value


async def _before_async(store: AsyncThreadStore, leaf: str, budget: int) -> History:
    logic = Logic(ttl_seconds=TTL, max_turns=1000)
    chain = await _run_on_loop(store.storage, logic.get_thread_chain(leaf, CHAIN_DEPTH))
    return build_history(chain, budget)


def _call(subject: str, store: ThreadStore, leaf: str, budget: int) -> History:
    if subject == "threadstore":
        return store.build_history(leaf, max_tokens=budget)
    return _before_sync(store, leaf, budget)


def _acall(subject: str, store: AsyncThreadStore, leaf: str, budget: int) -> Awaitable[History]:
    if subject == "threadstore":
        return store.build_history(leaf, max_tokens=budget)
    return _before_async(store, leaf, budget)


# -- measurements --------------------------------------------------------------------------------
def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux keeps that across exec, so a
    child spawned by a large parent starts with the parent's peak and hides its own growth."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise NotAvailable("no VmHWM in /proc/self/status (not Linux)")


def peak_rss_growth(path: str, subject: str, leaf: str, warm: str, budget: int) -> float:
    """Runs in a fresh process: MB the peak RSS grew by during one call."""
    store = ThreadStore(backends.open_sqlite(Path(path)), ttl_seconds=TTL, max_turns=1000)
    _call(subject, store, warm, budget)
    before = peak_rss_kb()
    _call(subject, store, leaf, budget)
    after = peak_rss_kb()
    store.close()
    return (after - before) / 1024


async def _max_lag(calls: Callable[[], list[Awaitable[History]]]) -> float:
    """Worst lateness (ms) of a 5 ms ticker while ``calls`` run concurrently."""
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            worst = max(worst, loop.time() - due)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_S)  # the ticker is running before the calls start
    await asyncio.gather(*calls())
    stop.set()
    await tick
    return worst * 1000


def history_sqlite(cfg: Config) -> Results:
    res = Results("history_sqlite", cfg)
    threads, turns, chars = _shape(cfg)
    concurrent = cfg.pick(4, 2)
    reps = cfg.pick(3, 2)
    ctx = multiprocessing.get_context("spawn")
    with backends.temp_dir("history") as tmp:
        path = tmp / "history.db"
        storage = backends.open_sqlite(path)
        leaf, warm = populate(storage, threads, turns, chars)
        store = ThreadStore(storage, ttl_seconds=TTL, max_turns=1000)
        astore = AsyncThreadStore(storage, ttl_seconds=TTL, max_turns=1000)
        shape = {
            "threads": threads,
            "turns": threads * turns,
            "turn_chars": chars,
            "stored_mb": round(threads * turns * chars / 1e6, 1),
        }
        for subject, role in SUBJECTS:
            for budget in BUDGETS:
                tag = f"max_tokens={budget:,}"
                got = _call(subject, store, leaf, budget)
                included = {"turns_included": got.turns_included, **shape}

                def once(subject: str = subject, budget: int = budget) -> float:
                    t0 = time.perf_counter_ns()
                    _call(subject, store, leaf, budget)
                    return (time.perf_counter_ns() - t0) / 1e6

                res.add(subject, role, f"time, {tag}", "ms", repeat(once, reps), **included)
                growth = []
                for _ in range(1 if cfg.quick else 2):
                    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
                        job = pool.submit(peak_rss_growth, str(path), subject, leaf, warm, budget)
                        growth.append(job.result())
                res.add(subject, role, f"peak RSS growth, {tag}", "MB", growth, **included)

                def calls(subject: str = subject, budget: int = budget) -> list[Any]:
                    return [_acall(subject, astore, leaf, budget) for _ in range(concurrent)]

                lags = [asyncio.run(_max_lag(calls)) for _ in range(reps)]
                res.add(
                    subject,
                    role,
                    f"event-loop max lag, {concurrent} concurrent, {tag}",
                    "ms",
                    lags,
                    concurrent=concurrent,
                    **included,
                )
        storage.close()
    return res
