"""Redis Cluster (issue 16): three masters with a replica each, real servers on loopback.

One cluster serves the whole module (tests use their own namespaces); the test that kills a
master runs last and on the same cluster, since nothing after it needs every node.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

import threadstore
from contract import StorageContract
from threadstore import Storage, StorageUnavailable, ThreadStore
from threadstore._redis import RedisStorage
from threadstore.testing import ClusterSetup, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    from conftest import _need_redis

    _need_redis()
    setup = ClusterSetup().start()
    yield setup
    setup.cleanup()


def _open(cluster: ClusterSetup, options: str = "") -> RedisStorage:
    store = threadstore.open_storage(
        cluster.url + options, namespace="c" + uuid.uuid4().hex[:12], fallback="fail"
    )
    assert isinstance(store, RedisStorage)
    return store


class TestClusterContract(StorageContract):
    @pytest.fixture
    def store(self, cluster: ClusterSetup) -> Iterator[Storage]:
        s = _open(cluster)
        yield s
        s.close()


def _node_of(store: RedisStorage, key: str) -> str:
    node = store._redis.get_node_from_key(store._commands.key(key))
    return str(node.name)


def _append_worker(ts: ThreadStore, thread_ids: list[str], n: int, tag: str,
                   errors: list[BaseException]) -> None:  # fmt: skip
    try:
        for i in range(n):
            for tid in thread_ids:
                ts.add_turn(tid, "user", f"{tag}-{i}")
    except BaseException as exc:
        errors.append(exc)


def test_threads_spread_and_four_writers_lose_nothing(cluster: ClusterSetup) -> None:
    store = _open(cluster)
    ts = ThreadStore(store, max_turns=10_000)
    try:
        ids = [ts.create_thread("tool") for _ in range(40)]
        nodes = {_node_of(store, "thread:" + i) for i in ids}
        assert len(nodes) >= 2, f"every thread on {nodes}"
        shared = ids[:8]
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=_append_worker, args=(ts, shared, 60, f"w{w}", errors))
            for w in range(4)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert not errors, errors
        for tid in shared:
            thread = ts.get_thread(tid)
            assert thread is not None
            contents = [turn.content for turn in thread.turns]
            assert len(contents) == 4 * 60 and len(set(contents)) == 4 * 60
            for w in range(4):
                mine = [int(c.split("-")[1]) for c in contents if c.startswith(f"w{w}-")]
                assert mine == list(range(60)), f"writer {w} lost or reordered turns"
        assert ts.count_threads() == 40
        seen: list[str] = []
        cursor = None
        while True:
            page = ts.list_threads(limit=7, cursor=cursor)
            seen += [t.thread_id for t in page.threads]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids)
    finally:
        ts.close()


def test_async_on_cluster(cluster: ClusterSetup) -> None:
    store = _open(cluster)

    async def main() -> None:
        ts = threadstore.AsyncThreadStore(store)
        ids = [await ts.create_thread("tool") for _ in range(12)]
        await asyncio.gather(*(ts.add_turn(i, "user", "hi") for i in ids))
        assert await ts.count_threads() == 12
        for i in ids:
            thread = await ts.get_thread(i)
            assert thread is not None and [t.content for t in thread.turns] == ["hi"]
        await store.aclose()

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_wait_replicas_on_cluster(cluster: ClusterSetup) -> None:
    store = _open(cluster, "?wait_replicas=1&wait_timeout_ms=2000")
    try:
        ts = ThreadStore(store)
        tid = ts.create_thread("tool")
        ts.add_turn(tid, "user", "durable")
        thread = ts.get_thread(tid)
        assert thread is not None and thread.turns[0].content == "durable"
        # Asking for more replicas than exist: the write happened but is not confirmed.
        strict = RedisStorage.from_url(
            cluster.url + "?wait_replicas=2&wait_timeout_ms=50", namespace=store.namespace
        )
        with pytest.raises(StorageUnavailable, match="may or may not survive a failover"):
            strict.set_with_ttl("k", 60, "v")
        assert store.get("k") == "v"
        strict.close()
    finally:
        store.close()


def test_stats_show_every_node_and_slot_coverage(cluster: ClusterSetup) -> None:
    store = _open(cluster)
    try:
        stats = store.stats()
        assert stats["reachable"] and stats["topology"] == "cluster"
        assert stats["cluster_state"] == "ok"
        assert stats["slots_covered"] == stats["slots_total"] == 16384
        assert len(stats["cluster_nodes"]) == 6
        assert sum("master" in n for n in stats["cluster_nodes"]) == 3
    finally:
        store.close()


def _node_client(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), decode_responses=True)


def _move_slot(slot: int, src: str, dst: str) -> None:
    """Migrate one slot by hand, as redis-cli --cluster reshard does: IMPORTING/MIGRATING,
    MIGRATE the keys in batches, then assign the slot to its new owner on every master."""
    a, b = _node_client(src), _node_client(dst)
    src_id, dst_id = a.execute_command("CLUSTER MYID"), b.execute_command("CLUSTER MYID")
    b.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    a.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    host, port = dst.rsplit(":", 1)
    while keys := a.execute_command("CLUSTER GETKEYSINSLOT", slot, 10):
        a.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)
    for c in (b, a):
        c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    a.close()
    b.close()


def test_live_reshard_under_a_running_writer(cluster: ClusterSetup) -> None:
    store = _open(cluster)
    ts = ThreadStore(store, max_turns=100_000)
    try:
        ids = [ts.create_thread("tool") for _ in range(6)]
        stop = threading.Event()
        acked: dict[str, list[int]] = {i: [] for i in ids}
        errors: list[BaseException] = []

        def writer() -> None:
            n = 0
            try:
                while not stop.is_set():
                    for tid in ids:
                        ts.add_turn(tid, "user", str(n))
                        acked[tid].append(n)
                    n += 1
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_until("the writer to start", lambda: len(acked[ids[-1]]) >= 20)
            moved: dict[int, str] = {}  # threads of one partition share a slot: move each once
            for tid in ids:
                key = store._commands.key("thread:" + tid)
                slot = redis.cluster.key_slot(key.encode())
                if slot in moved or len(moved) == 3:
                    continue
                src = _node_of(store, "thread:" + tid)
                dst = next(a for a in (f"127.0.0.1:{s.port}" for s in cluster.masters_now())
                           if a != src)  # fmt: skip
                before = len(acked[tid])
                _move_slot(slot, src, dst)
                moved[slot] = dst
                c = _node_client(dst)
                assert c.exists(key) == 1  # the thread itself moved
                c.close()
                wait_until("appends after the move", lambda t=tid, b=before: len(acked[t]) > b + 5)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        for slot, dst in moved.items():
            c = _node_client(dst)
            owner = {s[0]: s for s in c.cluster("SLOTS")}
            c.close()
            assert any(r[0] <= slot <= r[1] and r[2][1] == int(dst.rsplit(":")[1])
                       for r in owner.values())  # fmt: skip
        for tid in ids:
            thread = ts.get_thread(tid)
            assert thread is not None
            assert [int(x.content) for x in thread.turns] == acked[tid]
    finally:
        ts.close()


def test_doctor_shows_the_cluster(cluster: ClusterSetup) -> None:
    import json

    from typer.testing import CliRunner

    from threadstore.cli import app

    result = CliRunner().invoke(app, ["--url", cluster.url, "doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["topology"]["status"] == "ok", checks
    assert "3 masters, 3 replicas, 16384 of 16384 slots" in checks["topology"]["detail"]
    result = CliRunner().invoke(
        app, ["--url", cluster.url + "?wait_replicas=2", "doctor", "--json"]
    )
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["topology"]["status"] == "warn"


Counts = dict[str, list[int]]


@contextmanager
def _writing(ts: ThreadStore, ids: list[str]) -> Iterator[tuple[Counts, Counts]]:
    """A thread appending numbered turns to every thread in ``ids``, round after round, until
    the block ends: yields (acknowledged, failed) turn numbers per thread, filled as it goes."""
    acked: Counts = {i: [] for i in ids}
    failures: Counts = {i: [] for i in ids}
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            for tid in ids:
                try:
                    ts.add_turn(tid, "user", str(n))
                    acked[tid].append(n)
                except StorageUnavailable:
                    failures[tid].append(n)
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        yield acked, failures
    finally:
        stop.set()
        t.join()


def _check_stored(ts: ThreadStore, ids: list[str], acked: Counts, failures: Counts) -> int:
    """Every thread holds only turns that were sent, none duplicated or reordered; returns how
    many acknowledged turns are missing."""
    lost = 0
    for tid in ids:
        thread = ts.get_thread(tid)
        assert thread is not None
        stored = [int(x.content) for x in thread.turns]
        assert stored == sorted(set(stored)), "duplicated or reordered"
        assert set(stored) <= set(acked[tid]) | set(failures[tid])
        lost += len(set(acked[tid]) - set(stored))
    return lost


def test_master_paused_under_a_writer(cluster: ClusterSetup) -> None:
    """SIGSTOP one master: calls on its slots fail within the deadline (the others go on),
    and after SIGCONT (or the failover the pause may trigger) every thread takes appends again,
    nothing duplicated or reordered."""
    store = _open(cluster, "?socket_timeout=0.3&deadline=1")
    ts = ThreadStore(store, max_turns=100_000)
    try:
        ids = [ts.create_thread("tool") for _ in range(9)]
        with _writing(ts, ids) as (acked, failures):
            wait_until("the writer to start", lambda: len(acked[ids[-1]]) >= 10)
            address = _node_of(store, "thread:" + ids[0])
            victim = next(s for s in cluster.servers if f"127.0.0.1:{s.port}" == address)
            victim.pause()
            try:
                wait_until("a call to fail", lambda: len(failures[ids[0]]) >= 1)
            finally:
                victim.resume()
            before = {i: len(acked[i]) for i in ids}
            wait_until(
                "every thread to take appends again",
                lambda: all(len(acked[i]) > before[i] + 5 for i in ids),
                timeout=60,
            )
        _check_stored(ts, ids, acked, failures)
        cluster.wait_ok()
    finally:
        ts.close()


def test_master_killed_replica_promoted(cluster: ClusterSetup) -> None:
    """Last in the module: SIGKILL a master under a writer; its replica takes over and the same
    store keeps writing. Reads-your-writes of acknowledged turns hold for keys on the other
    masters; on the failed shard, turns acknowledged without WAIT may be lost (async
    replication), and none is duplicated or reordered."""
    store = _open(cluster)
    ts = ThreadStore(store, max_turns=100_000)
    try:
        ids = [ts.create_thread("tool") for _ in range(9)]
        with _writing(ts, ids) as (acked, failures):
            wait_until("the writer to start", lambda: len(acked[ids[-1]]) >= 20)
            victim_address = _node_of(store, "thread:" + ids[0])
            victim = next(s for s in cluster.servers if f"127.0.0.1:{s.port}" == victim_address)
            before = {i: len(acked[i]) for i in ids}
            victim.kill()
            wait_until(
                "every thread to take appends again",
                lambda: all(len(acked[i]) > before[i] + 10 for i in ids),
                timeout=60,
            )
        lost = _check_stored(ts, ids, acked, failures)
        print(f"\ncluster master SIGKILL without wait_replicas: {lost} acknowledged turns lost")
        stats: dict[str, Any] = store.stats()
        assert any("failing" in n for n in stats["cluster_nodes"]), stats["cluster_nodes"]
    finally:
        ts.close()
