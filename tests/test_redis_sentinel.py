"""Redis Sentinel (issue 16): a master, two replicas and three Sentinels, all real servers.

Writers append continuously; the master is SIGKILLed; the Sentinels promote a replica; the same
store object writes to the new master by itself. With ``wait_replicas=1`` no acknowledged turn
is lost; without it, the loss is measured and printed (the README reports it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import threadstore
from threadstore import ConfigError, StorageUnavailable
from threadstore._redis import RedisStorage
from threadstore.testing import SentinelSetup, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PASSWORD = "s3ntinel-pa55"


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    from conftest import _need_redis

    _need_redis()
    setup = SentinelSetup().start()
    yield setup
    setup.cleanup()


@dataclass
class Writer:
    """Appends "n" = 0, 1, 2, ... to one list, recording which appends were acknowledged."""

    store: RedisStorage
    key: str
    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    first_ack_after: dict[float, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                self.store.list_append(self.key, str(n), max_items=1_000_000, ttl_seconds=600)
                self.acked.append(n)
            except StorageUnavailable as exc:
                self.failed.append(n)
                if len(self.errors) < 5:
                    self.errors.append(str(exc))
                time.sleep(0.005)  # pacing while the master is away, not a wait for an event
            n += 1

    def acked_count(self) -> int:
        return len(self.acked)


def _run_failover(setup: SentinelSetup, url: str, writers: int) -> tuple[list[Writer], float]:
    """Start writers, SIGKILL the master after each has acknowledged 30 turns, wait until each
    has acknowledged 30 more on the new master. Returns the writers and the recovery time."""
    store = threadstore.open_storage(url, fallback="fail")
    assert isinstance(store, RedisStorage)
    ws = [Writer(store, f"t{i}") for i in range(writers)]
    for w in ws:
        assert store.list_create(w.key, 600, "meta")
    threads = [threading.Thread(target=w.run) for w in ws]
    for t in threads:
        t.start()
    try:
        wait_until("30 acknowledged turns each", lambda: all(w.acked_count() >= 30 for w in ws))
        before = [w.acked_count() for w in ws]
        old = setup.kill_master()
        killed_at = time.monotonic()
        wait_until(
            "writes to succeed again",
            lambda: all(w.acked_count() >= b + 30 for w, b in zip(ws, before, strict=True)),
            timeout=60,
        )
        recovered = time.monotonic() - killed_at
    finally:
        for w in ws:
            w.stop.set()
        for t in threads:
            t.join()
    setup.wait_for_failover(old.port)
    return ws, recovered


def _check_no_duplicate_no_reorder(stored: list[int], w: Writer) -> set[int]:
    assert len(stored) == len(set(stored)), "a turn was stored twice"
    assert stored == sorted(stored), "turns out of order"
    assert set(stored) <= set(w.acked) | set(w.failed), "a turn nobody sent"
    return set(w.acked) - set(stored)


def test_failover_loses_no_acknowledged_turn_with_wait_replicas(
    sentinel_setup: SentinelSetup,
) -> None:
    url = sentinel_setup.url + "?wait_replicas=1&wait_timeout_ms=2000"
    ws, recovered = _run_failover(sentinel_setup, url, writers=2)
    assert recovered < 15, f"writes resumed only after {recovered:.1f} s"
    store = threadstore.open_storage(url, fallback="fail")
    try:
        for w in ws:
            stored = [int(x) for x in store.list_range(w.key)[1:]]
            lost = _check_no_duplicate_no_reorder(stored, w)
            assert not lost, f"acknowledged turns lost: {sorted(lost)[:10]}"
        print(f"\nsentinel failover with wait_replicas=1: writes resumed after {recovered:.1f} s")
        stats = store.stats()
        assert stats["topology"] == "sentinel"
        assert stats["master"] == f"127.0.0.1:{sentinel_setup.master_port()}"
        assert len(stats["replicas"]) == 1

        async def more() -> None:  # the async side follows the new master too
            assert await store.aio.call("list_append", "t0", "async", max_items=10**6,
                                        ttl_seconds=60) > 0  # fmt: skip
            await store.aclose()

        asyncio.run(more())
    finally:
        store.close()


def test_failover_loss_without_wait_replicas(sentinel_setup: SentinelSetup) -> None:
    """The honest number: acknowledged turns missing after a failover without WAIT."""
    ws, recovered = _run_failover(sentinel_setup, sentinel_setup.url, writers=4)
    store = threadstore.open_storage(sentinel_setup.url, fallback="fail")
    try:
        lost = 0
        acked = 0
        for w in ws:
            stored = [int(x) for x in store.list_range(w.key)[1:]]
            lost += len(_check_no_duplicate_no_reorder(stored, w))
            acked += len(w.acked)
        print(
            f"\nsentinel failover without wait_replicas: {lost} of {acked} acknowledged turns"
            f" lost; writes resumed after {recovered:.1f} s"
        )
    finally:
        store.close()


@pytest.mark.parametrize("scheme", ["redis+sentinel", "rediss+sentinel"])
def test_sentinel_urls(scheme: str) -> None:
    s = RedisStorage.from_url(
        f"{scheme}://u:{PASSWORD}@h1:1,[::1]:2/svc/3?sentinel_password={PASSWORD}&deadline=2",
        namespace="x",
        check=False,
    )
    assert s.url == f"{scheme}://u:***@h1:1,[::1]:2/svc/3?sentinel_password=***&deadline=2"
    topology = s._topology
    assert topology.seeds == (("h1", 1), ("::1", 2))
    assert topology.service == "svc"
    assert topology.options["db"] == 3 and topology.options["password"] == PASSWORD
    assert topology.sentinel_options is not None
    assert topology.sentinel_options["password"] == PASSWORD  # the Sentinels' own password
    assert topology.sentinel_options.get("ssl", False) == scheme.startswith("rediss")
    stats = s.stats()  # unreachable: still answers, without secrets
    assert stats["topology"] == "sentinel" and stats["deadline"] == 2
    assert PASSWORD not in repr(s) + str(stats)
    s.close()
    for bad in (
        "redis+sentinel://h:1",  # no service
        "redis+sentinel://h:1/svc/x",  # db not a number
        "redis+sentinel://h:x/svc",  # port
        "redis+sentinel://h:1/svc?wait_replicas=-1",
        "redis+sentinel://h:1/svc?wait_timeout_ms=0",
        "redis+cluster://h:1/2",  # cluster has database 0 only
        "redis://h:1/0?sentinel_password=x",  # a Sentinel option without Sentinels
    ):
        with pytest.raises(ConfigError):
            RedisStorage.from_url(bad, namespace="x", check=False)
