"""Lists: append one 1 KB item to a 25-item list, and read a whole 25-item list.

The contract's lists are what a thread is made of (item 0 the metadata, then one item per turn).
Floors: a Python list under a lock; one autocommit INSERT in raw sqlite3; RPUSHX + PEXPIRE in one
pipeline on raw redis-py. In memory the original design is shown too: its only way to grow a
sequence was to rewrite a JSON array (GET, parse, append, dump, SETEX).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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

ITEM_SIZE = 1024
START_ITEMS = 25
MAX_ITEMS = 1000
TTL = backends.TTL
UNIT = "µs/op"
OPS = ["list_append, 1 KB item", "list_range, whole 25-item list"]
TRIPS = ["round trips per list_append", "round trips per list_range"]


@dataclass
class ListOps:
    create: Callable[[str, str], object]
    append: Callable[[str, str], object]
    read: Callable[[str], list[str]]
    close: Callable[[], object]


def contract_ops(store: Any) -> ListOps:
    """A threadstore backend through the Storage contract."""

    def append(key: str, value: str) -> int:
        n: int = store.list_append(key, value, max_items=MAX_ITEMS, ttl_seconds=TTL)
        return n

    return ListOps(
        create=lambda k, v: store.list_create(k, TTL, v),
        append=append,
        read=store.list_range,
        close=store.close,
    )


def peer_ops(store: Any) -> ListOps:
    return ListOps(
        create=lambda k, v: store.list_create(k, TTL, v),
        append=store.list_append,
        read=store.list_range,
        close=store.close,
    )


def json_array_ops(kv: peers.OriginalKV) -> ListOps:
    """The original design's way: one JSON array per key, rewritten on every append."""

    def append(key: str, value: str) -> int:
        raw = kv.get(key)
        items = json.loads(raw) if raw is not None else []
        items.append(value)
        kv.setex(key, TTL, json.dumps(items))
        return len(items)

    def read(key: str) -> list[str]:
        raw = kv.get(key)
        items: list[str] = json.loads(raw) if raw is not None else []
        return items

    return ListOps(
        create=lambda k, v: kv.setex(k, TTL, json.dumps([v])),
        append=append,
        read=read,
        close=kv.close,
    )


class Data:
    def __init__(self, cfg: Config, n_lists: int) -> None:
        rng = cfg.rng(2)
        self.items = [text_of(ITEM_SIZE, i) for i in range(START_ITEMS + 8)]
        self.append_keys = [f"list:a:{i:06d}" for i in range(n_lists)]
        self.read_keys = [f"list:r:{i:06d}" for i in range(n_lists)]
        self.append_order = self.append_keys[:]
        rng.shuffle(self.append_order)
        self.read_order = self.read_keys[:]
        rng.shuffle(self.read_order)
        self.new_item = text_of(ITEM_SIZE, 999_999)


def measure(res: Results, subject: str, role: str, ops: ListOps, data: Data) -> None:
    for key in data.append_keys + data.read_keys:
        ops.create(key, data.items[0])
        for item in data.items[1:START_ITEMS]:
            ops.append(key, item)
    if len(ops.read(data.read_keys[0])) != START_ITEMS:
        raise RuntimeError(f"{subject}: a list does not hold {START_ITEMS} items")
    append, item = ops.append, data.new_item
    samples = repeat(lambda: per_op_us(lambda k: append(k, item), data.append_order), res.cfg.reps)
    res.add(subject, role, OPS[0], UNIT, samples, ops_per_rep=len(data.append_order))
    samples = repeat(lambda: per_op_us(ops.read, data.read_order), res.cfg.reps)
    res.add(subject, role, OPS[1], UNIT, samples, ops_per_rep=len(data.read_order))


def lists_memory(cfg: Config) -> Results:
    res = Results("lists_memory", cfg)
    data = Data(cfg, cfg.pick(5_000, 300))
    makers: list[tuple[str, str, Callable[[], ListOps]]] = [
        (peers.FloorDictLock.name, FLOOR, lambda: peer_ops(peers.FloorDictLock())),
        (peers.OriginalKV.name, PEER, lambda: json_array_ops(peers.OriginalKV())),
        ("threadstore memory", OURS, lambda: contract_ops(backends.open_memory())),
    ]
    for name, role, make in makers:
        with res.subject(name, role, OPS, UNIT):
            ops = make()
            measure(res, name, role, ops, data)
            ops.close()
    return res


def lists_sqlite(cfg: Config) -> Results:
    res = Results("lists_sqlite", cfg)
    data = Data(cfg, cfg.pick(500, 40))
    with backends.temp_dir("lists-sqlite") as tmp:
        with res.subject(peers.RawSQLite.name, FLOOR, OPS, UNIT):
            ops = peer_ops(peers.RawSQLite(tmp / "raw.db"))
            measure(res, peers.RawSQLite.name, FLOOR, ops, data)
            ops.close()
        with res.subject("threadstore sqlite", OURS, OPS, UNIT):
            ops = contract_ops(backends.open_sqlite(tmp / "threadstore.db"))
            measure(res, "threadstore sqlite", OURS, ops, data)
            ops.close()
    return res


def lists_redis(cfg: Config) -> Results:
    res = Results("lists_redis", cfg)
    data = Data(cfg, cfg.pick(500, 40))
    subjects = [(peers.RawRedis.name, FLOOR), ("threadstore redis", OURS)]
    try:
        with backends.redis_server() as url:
            for name, role in subjects:
                with res.subject(name, role, OPS + TRIPS, UNIT):
                    store: Any = peers.RawRedis(url) if role == FLOOR else backends.open_redis(url)
                    ops = peer_ops(store) if role == FLOOR else contract_ops(store)
                    measure(res, name, role, ops, data)
                    count_round_trips(res, name, role, ops, data, url)
                    ops.close()
    except NotAvailable as exc:
        for name, role in subjects:
            res.na(name, role, OPS + TRIPS, UNIT, str(exc))
    return res


def count_round_trips(
    res: Results, name: str, role: str, ops: ListOps, data: Data, url: str
) -> None:
    keys = iter(data.append_keys * 2)
    trips, cmds = backends.per_call(url, lambda: ops.append(next(keys), data.new_item), 50)
    res.add(name, role, TRIPS[0], "round trips", [trips], server_commands=cmds)
    rkeys = iter(data.read_keys * 2)
    trips, cmds = backends.per_call(url, lambda: ops.read(next(rkeys)), 50)
    res.add(name, role, TRIPS[1], "round trips", [trips], server_commands=cmds)
