"""Every benchmark by name: the module and function that run it, and one line saying what it is.

Modules are imported only in the process that runs the benchmark (each runs in its own).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .harness import Config, Results


@dataclass(frozen=True)
class Benchmark:
    name: str
    target: str  # "module:function" inside the benchmarks package
    title: str
    about: str

    def load(self) -> Callable[[Config], Results]:
        module, _, function = self.target.partition(":")
        fn: Callable[[Config], Results] = getattr(
            importlib.import_module(f"benchmarks.{module}"), function
        )
        return fn


BENCHMARKS: list[Benchmark] = [
    Benchmark(
        "kv_memory",
        "workloads_kv:kv_memory",
        "Strings in memory",
        "get hit / get miss / set, 2 KB values, 100k keys, 1 and 4 threads",
    ),
    Benchmark(
        "kv_sqlite",
        "workloads_kv:kv_sqlite",
        "Strings on SQLite",
        "get hit / get miss / set, 2 KB values, 100k keys, 1 and 4 threads;"
        " WAL, synchronous=NORMAL",
    ),
    Benchmark(
        "kv_redis",
        "workloads_kv:kv_redis",
        "Strings on Redis",
        "get hit / get miss / set, 2 KB values, 100k keys, 1 and 4 threads; round trips per call",
    ),
    Benchmark(
        "lists_memory",
        "workloads_lists:lists_memory",
        "Lists in memory",
        "append one 1 KB item to a 25-item list; read a whole list",
    ),
    Benchmark(
        "lists_sqlite",
        "workloads_lists:lists_sqlite",
        "Lists on SQLite",
        "append one 1 KB item to a 25-item list; read a whole list",
    ),
    Benchmark(
        "lists_redis",
        "workloads_lists:lists_redis",
        "Lists on Redis",
        "append one 1 KB item to a 25-item list; read a whole list; round trips per append",
    ),
    Benchmark(
        "threads_memory",
        "workloads_threads:threads_memory",
        "Conversations in memory",
        "add_turn on threads of 1, 10, 25 and 49 turns (1 KB turns); get_thread",
    ),
    Benchmark(
        "threads_sqlite",
        "workloads_threads:threads_sqlite",
        "Conversations on SQLite",
        "add_turn on threads of 1, 10, 25 and 49 turns (1 KB turns); get_thread",
    ),
    Benchmark(
        "threads_redis",
        "workloads_threads:threads_redis",
        "Conversations on Redis",
        "add_turn on threads of 1, 10, 25 and 49 turns (1 KB turns); get_thread; round trips",
    ),
    Benchmark(
        "redis_topologies",
        "workloads_topology:redis_topologies",
        "Redis: single node, Cluster, wait_replicas=1",
        "add_turn and get_thread (10 turns of 1 KB) on one node, a 3-master Cluster and with"
        " wait_replicas=1; bytes per thread in Redis",
    ),
    Benchmark(
        "listing_memory",
        "workloads_listing:listing_memory",
        "Listing and counting in memory",
        "list_threads(limit=20), next page, count_threads at 1k, 10k, 100k and 1M threads;"
        " the index against the full-scan ranking it replaced",
    ),
    Benchmark(
        "listing_sqlite",
        "workloads_listing:listing_sqlite",
        "Listing and counting on SQLite",
        "list_threads(limit=20), next page, count_threads at 1k, 10k and 100k threads;"
        " the index against the full-scan ranking it replaced",
    ),
    Benchmark(
        "listing_redis",
        "workloads_listing:listing_redis",
        "Listing and counting on Redis",
        "list_threads(limit=20), next page, count_threads at 1k, 10k and 100k threads;"
        " the index against the full-scan ranking it replaced",
    ),
    Benchmark(
        "index_add_turn",
        "workloads_listing:index_add_turn",
        "What the index costs add_turn",
        "add_turn (1 KB) on threads filed in the index against threads not filed (the work"
        " before the index), interleaved, 10k threads in the store, each backend",
    ),
    Benchmark(
        "writers_threads",
        "workloads_concurrency:writers_threads",
        "Concurrent writers, threads",
        "4 threads x 500 appends to one thread, in memory: appends lost",
    ),
    Benchmark(
        "writers_processes",
        "workloads_concurrency:writers_processes",
        "Concurrent writers, processes",
        "4 processes x 500 appends to one thread, on Redis and SQLite: appends lost",
    ),
    Benchmark(
        "async_redis",
        "workloads_concurrency:async_redis",
        "Async concurrency on Redis",
        "64 coroutines vs 1: get and add_turn, wall time per operation",
    ),
    Benchmark(
        "expiry_100k",
        "workloads_expiry:expiry_100k",
        "Expiry pause, 100k keys",
        "half of 100k keys expired: longest reader op and longest lock hold while they go",
    ),
    Benchmark(
        "expiry_1m",
        "workloads_expiry:expiry_1m",
        "Expiry pause, 1M keys",
        "half of 1,000,000 keys expired: longest reader op and longest lock hold while they go",
    ),
    Benchmark(
        "memory_per_key",
        "workloads_memory:memory_per_key",
        "Memory per key",
        "100k keys x 4 KB values: bytes per key beyond the payload (tracemalloc and RSS)",
    ),
    Benchmark(
        "mcp_latency",
        "workloads_mcp:mcp_latency",
        "MCP tool-call latency",
        "in-process client: p50 and p99 of thread_append and thread_get",
    ),
    Benchmark(
        "kv_adapter",
        "workloads_integrations:kv_adapter",
        "py-key-value stores",
        "put 1 KB / get hit / get miss / ttl through py-key-value's API: its MemoryStore and"
        " DiskStore vs ThreadstoreStore on memory, SQLite, Redis",
    ),
    Benchmark(
        "agents_session",
        "workloads_integrations:agents_session",
        "OpenAI Agents sessions",
        "add_items / get_items / pop_item: the SDK's SQLiteSession vs ThreadstoreSession on"
        " memory, SQLite, Redis",
    ),
    Benchmark(
        "history_sqlite",
        "workloads_history:history_sqlite",
        "History of a long chain on SQLite",
        "build_history on 20 threads x 50 turns of 200 KB, small and large budget: time, peak RSS"
        " growth in a fresh process, event-loop max lag under 4 concurrent async calls",
    ),
]

BY_NAME = {b.name: b for b in BENCHMARKS}
