"""Conversations: add_turn on threads already holding 1, 10, 25 and 49 turns; get_thread.

Subjects, per backend:

- floor: the least work that stores a turn and reads a thread back: one JSON line per turn
  appended to a list (dict+Lock / one raw sqlite3 INSERT / RPUSHX+PEXPIRE in one redis-py
  pipeline), and get_thread = read the list and parse each line. No validation, no models.
- original design (memory and Redis, where it ran): the whole thread as one JSON blob, GET +
  parse + append + dump + SETEX on every turn, so its add_turn grows with the thread.
- threadstore: ``ThreadStore(storage).add_turn`` / ``.get_thread`` (n/a until it lands).

Each repetition works on a fresh batch of threads built beforehand (untimed) to exactly N turns;
every subject gets the same turn texts (1 KB) in the same order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import backends, peers
from .harness import (
    FLOOR,
    OURS,
    PEER,
    Config,
    NotAvailable,
    Results,
    per_op_us,
    repeat,
    text_of,
)

TURN_SIZE = 1024
SIZES = (1, 10, 25, 49)
MAX_TURNS = 50
TTL = backends.TTL
UNIT = "µs/op"
TRIPS = ["round trips per add_turn", "round trips per get_thread"]
ROLES = ("user", "assistant")


def op_names() -> list[str]:
    names = []
    for n in SIZES:
        label = "1 turn" if n == 1 else f"{n} turns"
        names += [f"get_thread, {label}", f"add_turn, {label}"]
    return names


@dataclass
class Conv:
    """One subject's conversation operations."""

    create: Callable[[], str]
    add: Callable[[str, str, str], object]  # (thread_id, role, content)
    get: Callable[[str], Any]
    turns: Callable[[Any], int]  # turns in what get returned
    close: Callable[[], object]
    seed: Callable[[str, int, list[str]], None] | None = None  # fast untimed build


def _now() -> str:
    return datetime.now(UTC).isoformat()


def floor_conv(store: Any) -> Conv:
    """The floor over any peer list store (FloorDictLock, RawSQLite, RawRedis)."""

    def create() -> str:
        tid = str(uuid.uuid4())
        meta = {"thread_id": tid, "tool_name": "bench", "created_at": _now()}
        store.list_create(f"thread:{tid}", TTL, json.dumps(meta))
        return tid

    def add(tid: str, role: str, content: str) -> object:
        turn = {"role": role, "content": content, "timestamp": _now()}
        return store.list_append(f"thread:{tid}", json.dumps(turn))

    def get(tid: str) -> list[Any]:
        return [json.loads(line) for line in store.list_range(f"thread:{tid}")]

    return Conv(create, add, get, lambda items: len(items) - 1, store.close)


def original_conv(kv: Any, close: Callable[[], object]) -> Conv:
    conv = peers.OriginalConversations(kv, ttl_seconds=TTL, max_turns=MAX_TURNS)

    def seed(tid: str, n: int, contents: list[str]) -> None:
        # The blob N add_turn calls would leave, written at once (the build is not timed).
        thread = conv.get_thread(tid)
        assert thread is not None
        for i in range(n):
            thread.turns.append(
                peers.OriginalTurn(role=ROLES[i % 2], content=contents[i], timestamp=_now())
            )
        kv.setex(f"thread:{tid}", TTL, thread.model_dump_json())

    return Conv(
        create=lambda: conv.create_thread("bench", {"prompt": "benchmark"}),
        add=lambda tid, role, content: conv.add_turn(tid, role, content),
        get=conv.get_thread,
        turns=lambda t: len(t.turns),
        close=close,
        seed=seed,
    )


def threadstore_conv(storage: Any) -> Conv:
    try:
        ts = backends.thread_store(storage, ttl_seconds=TTL, max_turns=MAX_TURNS)
    except NotAvailable:
        storage.close()
        raise
    return Conv(
        create=lambda: ts.create_thread("bench", {"prompt": "benchmark"}),
        add=lambda tid, role, content: ts.add_turn(tid, role, content),
        get=ts.get_thread,
        turns=lambda t: len(t.turns),
        close=storage.close,
    )


class Batches:
    """(reps + 1) batches of ``per_batch`` threads for each size, built before any timing."""

    def __init__(self, conv: Conv, cfg: Config, per_batch: int, workers: int) -> None:
        self.contents = [text_of(TURN_SIZE, i, cfg.rng(3 + i)) for i in range(MAX_TURNS + 1)]
        self.by_size: dict[int, list[list[str]]] = {}
        n_batches = cfg.reps + 1
        for n in SIZES:
            with ThreadPoolExecutor(workers) as pool:
                batches = [
                    list(pool.map(lambda _i, n=n: self._build(conv, n), range(per_batch)))
                    for _ in range(n_batches)
                ]
            self.by_size[n] = batches
        self.spare = [self._build(conv, 1) for _ in range(2 * 20)]

    def _build(self, conv: Conv, n: int) -> str:
        tid = conv.create()
        if conv.seed is not None:
            conv.seed(tid, n, self.contents)
        else:
            for i in range(n):
                conv.add(tid, ROLES[i % 2], self.contents[i])
        return tid


def measure(
    res: Results,
    subject: str,
    role: str,
    conv: Conv,
    cfg: Config,
    per_batch: int,
    workers: int = 1,
    url: str | None = None,
) -> None:
    batches = Batches(conv, cfg, per_batch, workers)
    for n in SIZES:
        label = "1 turn" if n == 1 else f"{n} turns"
        role_next, content = ROLES[n % 2], batches.contents[n]

        gets: Iterator[list[str]] = iter(batches.by_size[n])
        samples = repeat(lambda gets=gets: per_op_us(conv.get, next(gets)), cfg.reps)
        res.add(subject, role, f"get_thread, {label}", UNIT, samples, threads_per_rep=per_batch)

        adds: Iterator[list[str]] = iter(batches.by_size[n])

        def run(adds: Iterator[list[str]] = adds, r: str = role_next, c: str = content) -> float:
            return per_op_us(lambda tid: conv.add(tid, r, c), next(adds))

        samples = repeat(run, cfg.reps)
        res.add(subject, role, f"add_turn, {label}", UNIT, samples, threads_per_rep=per_batch)
        probe = batches.by_size[n][-1][0]
        got = conv.turns(conv.get(probe))
        if got != n + 1:
            raise RuntimeError(f"{subject}: a thread of {n} turns has {got} after add_turn")
    if url is not None:
        spare = iter(batches.spare)
        trips, cmds = backends.per_call(
            url, lambda: conv.add(next(spare), "assistant", batches.contents[1]), 20
        )
        res.add(subject, role, TRIPS[0], "round trips", [trips], server_commands=cmds)
        trips, cmds = backends.per_call(url, lambda: conv.get(next(spare)), 20)
        res.add(subject, role, TRIPS[1], "round trips", [trips], server_commands=cmds)


def threads_memory(cfg: Config) -> Results:
    res = Results("threads_memory", cfg)
    per_batch = cfg.pick(500, 20)
    makers: list[tuple[str, str, Callable[[], Conv]]] = [
        (peers.FloorDictLock.name, FLOOR, lambda: floor_conv(peers.FloorDictLock())),
        (peers.OriginalKV.name, PEER, lambda: _original_memory()),
        ("threadstore memory", OURS, lambda: threadstore_conv(backends.open_memory())),
    ]
    for name, role, make in makers:
        with res.subject(name, role, op_names(), UNIT):
            conv = make()
            measure(res, name, role, conv, cfg, per_batch)
            conv.close()
    return res


def _original_memory() -> Conv:
    kv = peers.OriginalKV()
    return original_conv(kv, kv.close)


def threads_sqlite(cfg: Config) -> Results:
    res = Results("threads_sqlite", cfg)
    per_batch = cfg.pick(150, 10)
    with backends.temp_dir("threads-sqlite") as tmp:
        with res.subject(peers.RawSQLite.name, FLOOR, op_names(), UNIT):
            conv = floor_conv(peers.RawSQLite(tmp / "raw.db"))
            measure(res, peers.RawSQLite.name, FLOOR, conv, cfg, per_batch, workers=2)
            conv.close()
        with res.subject("threadstore sqlite", OURS, op_names(), UNIT):
            conv = threadstore_conv(backends.open_sqlite(tmp / "threadstore.db"))
            measure(res, "threadstore sqlite", OURS, conv, cfg, per_batch, workers=2)
            conv.close()
    return res


def threads_redis(cfg: Config) -> Results:
    res = Results("threads_redis", cfg)
    per_batch = cfg.pick(150, 10)
    subjects = [
        (peers.RawRedis.name, FLOOR),
        (peers.OriginalKV.name, PEER),
        ("threadstore redis", OURS),
    ]
    ops = op_names() + TRIPS
    try:
        with backends.redis_server() as url:
            for name, role in subjects:
                with res.subject(name, role, ops, UNIT):
                    if role == FLOOR:
                        conv = floor_conv(peers.RawRedis(url))
                    elif role == PEER:
                        raw = peers.RawRedis(url)
                        conv = original_conv(raw, raw.close)
                    else:
                        conv = threadstore_conv(backends.open_redis(url))
                    measure(res, name, role, conv, cfg, per_batch, workers=4, url=url)
                    conv.close()
    except NotAvailable as exc:
        for name, role in subjects:
            res.na(name, role, ops, UNIT, str(exc))
    return res
