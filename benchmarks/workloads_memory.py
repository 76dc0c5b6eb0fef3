"""Memory per key: 100k keys of 4 KB values, bytes held beyond the payload.

Each measurement runs in its own fresh process (so freed memory of one subject never flatters the
next): build the empty store, note the memory in use, insert N keys (``thread:<uuid>``, 43
characters) with distinct 4096-character ASCII values, collect garbage, note again. The overhead
per key is (after - before - payload) / N where payload = len(key) + len(value) summed (ASCII:
one byte per character). So a str object's own header, the dict slots, tuples, timestamps,
expiry bookkeeping and allocator rounding all count as overhead.

Two instruments, in separate processes (tracemalloc's own bookkeeping would inflate RSS):
``tracemalloc`` (bytes Python allocated) and the resident set size from /proc/self/statm (what
the OS sees, allocator slack included).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import tracemalloc
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import backends, peers
from .harness import FLOOR, OURS, PEER, SEED, Config, Results, text_of

VALUE_SIZE = 4096
TTL = backends.TTL
OPS = ["overhead (tracemalloc)", "overhead (RSS)"]
SUBJECTS = [
    ("floor", peers.FloorDictLock.name, FLOOR),
    ("ttlcache", peers.TTLCacheLock.name, PEER),
    ("original", peers.OriginalKV.name, PEER),
    ("memory", "threadstore memory", OURS),
]


def _rss() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def _make(kind: str) -> Any:
    if kind == "floor":
        return peers.FloorDictLock()
    if kind == "ttlcache":
        return peers.TTLCacheLock()
    if kind == "original":
        return peers.OriginalKV()
    return backends.open_memory()


def measure_once(kind: str, n: int, instrument: str) -> dict[str, float]:
    """Runs in a fresh child process. Returns overhead bytes per key and the payload."""
    import random

    rng = random.Random(SEED)
    store = _make(kind)
    if instrument == "tracemalloc":
        tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0] if instrument == "tracemalloc" else _rss()
    payload = 0
    for i in range(n):
        key = f"thread:{uuid.UUID(int=rng.getrandbits(128))}"
        value = text_of(VALUE_SIZE, i)
        payload += len(key) + len(value)
        store.set_with_ttl(key, TTL, value)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if instrument == "tracemalloc" else _rss()
    if instrument == "tracemalloc":
        tracemalloc.stop()
    accounted = store.stats()["bytes"] if kind == "memory" else None
    store.close()
    return {
        "overhead": (after - before - payload) / n,
        "payload_per_key": payload / n,
        "accounted_per_key": accounted / n if accounted is not None else -1.0,
    }


def memory_per_key(cfg: Config) -> Results:
    res = Results("memory_per_key", cfg)
    n = cfg.pick(100_000, 2_000)
    reps = 1 if cfg.quick else cfg.reps
    ctx = multiprocessing.get_context("spawn")
    for kind, subject, role in SUBJECTS:
        with res.subject(subject, role, OPS, "bytes/key"):
            for op, instrument in zip(OPS, ("tracemalloc", "rss"), strict=True):
                runs = []
                for _ in range(reps):
                    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
                        runs.append(pool.submit(measure_once, kind, n, instrument).result())
                extra: dict[str, Any] = {"keys": n, "payload_per_key": runs[0]["payload_per_key"]}
                if runs[0]["accounted_per_key"] >= 0:
                    extra["store_accounted_bytes_per_key"] = runs[0]["accounted_per_key"]
                res.add(subject, role, op, "bytes/key", [r["overhead"] for r in runs], **extra)
    return res
