"""Redis connections that honour an overall deadline per call, and the clients of each topology.

The deadline. redis-py's ``socket_timeout`` bounds each read, not the call: a link that trickles
one byte per second keeps a call alive for as long as the reply is long. The executor sets the
call's deadline (a monotonic instant) in ``DEADLINE`` before it sends; the sockets of every
connection threadstore makes are wrapped so that each send and receive waits at most until that
instant. Past it the read times out, redis-py drops the connection (it never reuses one after
a timeout) and the executor raises StorageUnavailable. The async side uses ``asyncio.timeout``
around the call instead, and redis.asyncio drops a connection whose command was cancelled.

Topologies. One node (``redis://``, ``rediss://``, ``unix://``), Sentinel (``redis+sentinel://``:
the master is asked of the Sentinels at each new connection, so a failover is followed by
itself) and Cluster (``redis+cluster://``: redis-py's cluster client routes each command to its
slot and follows MOVED/ASK). ``Topology`` holds what was parsed from the URL and makes the sync
and async clients.
"""

from __future__ import annotations

import math
import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

# redis-py's Sentinel and Cluster modules are not typed.
_sentinel: Any = redis.sentinel
_asentinel: Any = redis.asyncio.sentinel
_cluster: Any = redis.cluster
_acluster: Any = redis.asyncio.cluster

DEADLINE: ContextVar[float] = ContextVar("threadstore_redis_deadline", default=math.inf)
"""The monotonic instant by which the current call must be done (inf: no deadline)."""


def _within_deadline(sock: Any, method: Any, args: tuple[Any, ...]) -> Any:
    """``method(sock, *args)``, a send or receive, waiting no longer than the call's deadline."""
    deadline = DEADLINE.get()
    if deadline == math.inf:
        return method(sock, *args)
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the call's deadline passed")  # socket.timeout is TimeoutError
    current = sock.gettimeout()
    if current is not None and (current == 0 or current <= left):  # 0: a non-blocking poll
        return method(sock, *args)
    sock.settimeout(left)
    try:
        return method(sock, *args)
    finally:
        sock.settimeout(current)


_plain = socket.socket


class DeadlineSocket(socket.socket):
    """A plain TCP or Unix socket whose sends and receives honour DEADLINE.

    A connected ``socket.socket`` becomes one by changing its class (the layout is the same), so
    every other method stays the C one: redis-py calls ``fileno``, ``gettimeout`` and friends on
    each command, and a wrapper would add a Python call to each."""

    __slots__ = ()

    def recv(self, *args: Any) -> Any:
        return _within_deadline(self, _plain.recv, args)

    def recv_into(self, *args: Any) -> Any:
        return _within_deadline(self, _plain.recv_into, args)

    def send(self, *args: Any) -> Any:
        return _within_deadline(self, _plain.send, args)

    def sendall(self, *args: Any) -> Any:
        return _within_deadline(self, _plain.sendall, args)


class DeadlineWrapper:
    """Any other socket (TLS) whose sends and receives honour DEADLINE, by delegation."""

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def recv(self, *args: Any) -> Any:
        return _within_deadline(self._sock, type(self._sock).recv, args)

    def recv_into(self, *args: Any) -> Any:
        return _within_deadline(self._sock, type(self._sock).recv_into, args)

    def send(self, *args: Any) -> Any:
        return _within_deadline(self._sock, type(self._sock).send, args)

    def sendall(self, *args: Any) -> Any:
        return _within_deadline(self._sock, type(self._sock).sendall, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _deadline_socket(sock: Any) -> Any:
    if type(sock) is socket.socket:
        sock.__class__ = DeadlineSocket
        return sock
    return DeadlineWrapper(sock)


@cache
def with_deadline(base: type[Any]) -> type[Any]:
    """A subclass of a redis-py connection class whose socket honours DEADLINE."""

    def _connect(self: Any) -> Any:
        return _deadline_socket(base._connect(self))

    return type(f"Deadline{base.__name__}", (base,), {"_connect": _connect})


def _sync_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _async_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), 0)


@dataclass(frozen=True, slots=True)
class Topology:
    """Where the servers are and how to reach them (holds secrets: never print it)."""

    kind: str
    """"single", "sentinel" or "cluster"."""
    options: dict[str, Any]
    """Keyword arguments for one node's client (redis.Redis): credentials, timeouts, TLS."""
    seeds: tuple[tuple[str, int], ...] = ()
    """Sentinels, or cluster seed nodes."""
    service: str = ""
    """The Sentinel service name (the monitored master's name)."""
    sentinel_options: dict[str, Any] | None = None
    """Keyword arguments for the clients that talk to the Sentinels themselves."""

    # -- sync -----------------------------------------------------------------------------------
    def sync_client(self, *, short: bool = False) -> Any:
        """The blocking client; ``short`` for a throwaway probe (at most 1 s per step)."""
        options = self._node_options(short)
        if self.kind == "single":
            client = redis.Redis(**options, retry=_sync_retry())
            pool = client.connection_pool
            pool.connection_class = with_deadline(pool.connection_class)
            return client
        if self.kind == "sentinel":
            sentinel = self.sentinel(short=short)
            ssl = options.pop("ssl", False)
            base = (
                _sentinel.SentinelManagedSSLConnection
                if ssl
                else _sentinel.SentinelManagedConnection
            )
            return sentinel.master_for(
                self.service,
                redis_class=redis.Redis,
                connection_class=with_deadline(base),
                retry=_sync_retry(),
                **options,
            )
        return self._sync_cluster(options)

    def sentinel(self, *, short: bool = False) -> Any:
        """A client of the Sentinels (sync)."""
        sentinel_options = self._sentinel_options(short)
        sentinel = _sentinel.Sentinel(
            list(self.seeds), sentinel_kwargs={**sentinel_options, "retry": _sync_retry()}
        )
        for client in sentinel.sentinels:
            pool = client.connection_pool
            pool.connection_class = with_deadline(pool.connection_class)
        return sentinel

    def _sync_cluster(self, options: dict[str, Any]) -> Any:
        # Node clients are built from connection keyword arguments (the "from_url" path of
        # redis-py), so the connection class, TLS included, is ours.
        ssl = options.pop("ssl", False)
        base = redis.SSLConnection if ssl else redis.Connection
        host, port = self.seeds[0]
        nodes = [_cluster.ClusterNode(h, p) for h, p in self.seeds[1:]]
        options.pop("db", None)
        return _cluster.RedisCluster(
            url=f"redis://{host}:{port}",
            startup_nodes=nodes,
            connection_class=with_deadline(base),
            retry=_sync_retry(),
            require_full_coverage=False,
            **options,
        )

    # -- async ----------------------------------------------------------------------------------
    def async_client(self) -> Any:
        options = self._node_options(False)
        if self.kind == "single":
            return redis.asyncio.Redis(**options, retry=_async_retry())
        if self.kind == "sentinel":
            sentinel = _asentinel.Sentinel(
                list(self.seeds),
                sentinel_kwargs={**self._sentinel_options(False), "retry": _async_retry()},
            )
            return sentinel.master_for(
                self.service, redis_class=redis.asyncio.Redis, retry=_async_retry(), **options
            )
        options.pop("db", None)
        host, port = self.seeds[0]
        nodes = [_acluster.ClusterNode(h, p) for h, p in self.seeds[1:]]
        return _acluster.RedisCluster(
            host=host,
            port=port,
            startup_nodes=nodes,
            retry=_async_retry(),
            require_full_coverage=False,
            **options,
        )

    # -- helpers --------------------------------------------------------------------------------
    def _node_options(self, short: bool) -> dict[str, Any]:
        options = dict(self.options)
        if short:
            options["socket_timeout"] = min(1.0, options["socket_timeout"])
            options["socket_connect_timeout"] = min(1.0, options["socket_connect_timeout"])
        if self.kind != "single":
            options.pop("host", None)
            options.pop("port", None)
        return options

    def _sentinel_options(self, short: bool) -> dict[str, Any]:
        options = dict(self.sentinel_options or {})
        limit = 1.0 if short else 2.0
        options["socket_timeout"] = min(limit, options.get("socket_timeout", limit))
        options["socket_connect_timeout"] = min(limit, options.get("socket_connect_timeout", limit))
        return options
