"""Redis topologies: add_turn and get_thread on a single node, on a 3-master Cluster, and with
``wait_replicas=1`` (a master with one replica: every write also waits for the replica's
acknowledgement), plus the bytes a thread takes in Redis (MEMORY USAGE of real threads).

Subjects (all threadstore, 1 KB turns, threads of 10 turns built untimed beforehand):

- single node: the reference (``redis://``);
- cluster: ``redis+cluster://`` over 3 masters and 3 replicas (the tagged, partitioned layout);
- wait_replicas=1: ``redis://...?wait_replicas=1`` on a master with one replica.

The three run interleaved, rep by rep, so background load hits them alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from . import backends
from .harness import FLOOR, OURS, Config, NotAvailable, Results, interleaved, per_op_us, text_of

UNIT = "µs/op"
TURNS = 10
TURN_SIZE = 1024
OPS = ["add_turn, 10 turns", "get_thread, 10 turns"]
SIZING = [(10, 1024), (50, 1024), (50, 4096)]
"""(turns, bytes per turn) of the threads whose MEMORY USAGE is measured."""


@contextlib.contextmanager
def _setups() -> Iterator[dict[str, str]]:
    """URLs of a single node, a cluster and a master with one replica (wait_replicas=1)."""
    from threadstore.testing import ClusterSetup, RedisServer, SentinelSetup, redis_binary

    if redis_binary() is None:
        raise NotAvailable("redis-server not installed")
    with contextlib.ExitStack() as stack:
        single = stack.enter_context(RedisServer())
        master = stack.enter_context(RedisServer())
        stack.enter_context(RedisServer(args=["--replicaof", "127.0.0.1", str(master.port)]))
        SentinelSetup.wait_replication(master, 1)
        cluster = stack.enter_context(ClusterSetup())
        yield {
            "threadstore redis, single node": single.url,
            "threadstore redis cluster, 3 masters": cluster.url,
            "threadstore redis, wait_replicas=1": master.url + "?wait_replicas=1",
        }


def _thread_store(url: str) -> Any:
    storage = backends.open_redis(url)
    return backends.thread_store(storage, max_turns=100_000)


def redis_topologies(cfg: Config) -> Results:
    res = Results("redis_topologies", cfg)
    per_rep = cfg.pick(400, 40)
    names = list(_names())
    try:
        with _setups() as urls:
            stores = {name: _thread_store(url) for name, url in urls.items()}
            contents = [text_of(TURN_SIZE, i, cfg.rng(i)) for i in range(TURNS + 1)]
            batches: dict[str, list[list[str]]] = {}
            for name, ts in stores.items():
                batches[name] = []
                for _ in range(cfg.reps + 1):
                    ids = [ts.create_thread("bench") for _ in range(per_rep)]
                    for tid in ids:
                        for i in range(TURNS):
                            ts.add_turn(tid, "user", contents[i])
                    batches[name].append(ids)

            def adder(name: str) -> Callable[[], float]:
                ts, it = stores[name], iter(batches[name])
                return lambda: per_op_us(
                    lambda tid: ts.add_turn(tid, "assistant", contents[TURNS]), next(it)
                )

            def getter(name: str) -> Callable[[], float]:
                ts, it = stores[name], iter(batches[name])
                return lambda: per_op_us(ts.get_thread, next(it))

            for op, make in ((OPS[1], getter), (OPS[0], adder)):
                samples = interleaved({n: make(n) for n in names}, cfg.reps)
                for name in names:
                    role = FLOOR if "single" in name else OURS
                    res.add(name, role, op, UNIT, samples[name], threads_per_rep=per_rep)
            _sizing(res, stores[names[0]], urls[names[0]])
            for ts in stores.values():
                ts.close()
    except NotAvailable as exc:
        for name in names:
            res.na(name, OURS, OPS, UNIT, str(exc))
    return res


def _names() -> Iterator[str]:
    yield "threadstore redis, single node"
    yield "threadstore redis cluster, 3 masters"
    yield "threadstore redis, wait_replicas=1"


def _sizing(res: Results, ts: Any, url: str) -> None:
    """Bytes per thread in Redis: MEMORY USAGE (SAMPLES 0: every element) of the thread's list,
    and the growth of used_memory per thread over 200 threads (index entries included)."""
    import redis

    client = redis.Redis.from_url(url)
    namespace = ts.storage.namespace
    for turns, size in SIZING:
        text = text_of(size, 7)
        before = int(client.info("memory")["used_memory"])
        ids = []
        for _ in range(200):
            tid = ts.create_thread("bench", {"prompt": "sizing"})
            for _ in range(turns):
                ts.add_turn(tid, "user", text)
            ids.append(tid)
        after = int(client.info("memory")["used_memory"])
        usage = [
            float(client.memory_usage(f"{namespace}:thread:{tid}", samples=0) or 0)
            for tid in ids[:20]
        ]
        label = f"{turns} turns of {size} B"
        res.add("threadstore redis, single node", FLOOR, f"MEMORY USAGE of a thread, {label}",
                "bytes", usage, payload=turns * size)  # fmt: skip
        res.add("threadstore redis, single node", FLOOR, f"used_memory per thread, {label}",
                "bytes", [(after - before) / len(ids)], payload=turns * size)  # fmt: skip
    client.close()
