"""The Redis backend (``redis://``, ``rediss://``, ``unix://``), also for Valkey.

Layout. Each contract operation is described once, by ``Commands``: it validates the arguments,
builds the one command to send (namespaced key, millisecond TTL, Lua script call) and names the
pure function that turns the reply into the answer. Two small executors run those descriptions:
``RedisStorage`` over a blocking ``redis.Redis`` and ``RedisAsyncOps`` over ``redis.asyncio``
(one client per event loop). Both share the retry decision and the error translation, so the
sync and async paths cannot drift apart.

Failure policy. redis-py's own retries are switched off; ``_decide`` is the whole policy:

- a script missing from the server's cache (NOSCRIPT) is re-sent as EVAL at once, whatever the
  operation (the script did not run);
- a server still loading its data set (LOADING) refused the command: every operation retries;
- a connection error (refused, reset, closed) is retried with exponential backoff only by the
  operations whose effect is idempotent: get, set_with_ttl, delete, exists, ttl, expire,
  list_range, list_length, scan. list_append is never re-sent (a lost reply would append the
  turn twice) and neither is list_create (a re-run would answer False to its own creation);
- a timeout is never retried: the server is alive but stuck (paused, swapping, blocked), so a
  call fails within one socket timeout instead of several.

What is left is raised as StorageUnavailable naming the redacted URL; WRONGTYPE becomes
WrongType. The connection pool reconnects by itself, so calls succeed again as soon as the
server is back: no restart of the process.

Every operation touches exactly one key, so every one of them is safe on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.connection import parse_url as _untyped_parse_url
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ._config import check_namespace
from ._errors import ConfigError, CorruptData, StorageUnavailable, WrongType
from ._redact import redact_text, redact_url
from ._storage import (
    Storage,
    check_key,
    check_max_items,
    check_prefix,
    check_range,
    check_value,
    check_values,
    ttl_ms,
)

DEFAULT_SOCKET_TIMEOUT = 2.0
"""Seconds to wait for a reply before StorageUnavailable (URL option ``socket_timeout``)."""
DEFAULT_CONNECT_TIMEOUT = 1.0
"""Seconds to wait for a TCP/TLS connection (URL option ``socket_connect_timeout``)."""
STARTUP_TIMEOUT = 1.0
"""The PING at start waits at most this long (or the smaller configured timeouts)."""
DEFAULT_RETRIES = 3
"""Extra attempts for idempotent operations after a connection error (URL option ``retries``)."""
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
"""Backoff before retry n: about BACKOFF_BASE * 2**(n-1) (half of it random), at most the cap.
With the defaults a stopped server is reported within 0.2 to 0.35 s."""
SCAN_COUNT = 1000
"""Keys the server looks at per SCAN step."""

# URL query options passed to redis-py as they are (it already parsed the numeric ones).
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
_PLAIN_OPTIONS = frozenset(
    {*_TIMEOUTS, "db", "username", "password", "socket_keepalive", "max_connections",
     "health_check_interval", "client_name"}
)  # fmt: skip
_TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password",
     "ssl_cert_reqs", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers"}
)  # fmt: skip
_OWN_OPTIONS = frozenset({"retries"})


# -- Lua: one round trip each, atomic, one key ------------------------------------------------
class _Script(NamedTuple):
    source: str
    sha: str


def _script(source: str) -> _Script:
    return _Script(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


# KEYS[1] list; ARGV: ttl ms, first item. 1 when created, 0 when the key was taken.
_LIST_CREATE = _script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
""")

# KEYS[1] list; ARGV: item, max items, ttl ms. New length, 0 when missing, -1 when full.
# Lists are never empty in Redis, so LLEN = 0 means missing; on a string LLEN raises WRONGTYPE.
_LIST_APPEND = _script("""
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return 0 end
if n >= tonumber(ARGV[2]) then return -1 end
n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
""")

# KEYS[1] list; ARGV: max items, ttl ms, the items. As _LIST_APPEND, for all items or none
# (RPUSH in chunks: Lua's unpack has a small stack).
_LIST_APPEND_MANY = _script("""
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return 0 end
if n + #ARGV - 2 > tonumber(ARGV[1]) then return -1 end
for i = 3, #ARGV, 1000 do
  n = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
""")

# KEYS[1] list; ARGV: ttl ms. The last item (nil when missing or a single item is left).
_LIST_POP = _script("""
if redis.call('LLEN', KEYS[1]) < 2 then return false end
local v = redis.call('RPOP', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v
""")

_SCRIPTS = {s.sha: s.source for s in (_LIST_CREATE, _LIST_APPEND, _LIST_APPEND_MANY, _LIST_POP)}


# -- each operation once: validate, build the command, parse the reply -------------------------
class Cmd(NamedTuple):
    """One command ready to send, and how to read its reply."""

    args: tuple[Any, ...]
    parse: Callable[[Any], Any]
    key: str
    """The caller's key (no namespace), for error messages."""
    idempotent: bool
    """True when sending it twice leaves the same state: safe to retry after a lost reply."""
    raw: bool = False
    """Read the reply as bytes (the parser decodes what it can): for SCAN, whose reply may
    hold key names that other clients wrote in another encoding."""


_RAW_REPLY: dict[str, Any] = {NEVER_DECODE: True}
_DECODED_REPLY: dict[str, Any] = {}


def _same(reply: Any) -> Any:
    return reply


def _none(reply: Any) -> None:
    return None


def _positive(reply: Any) -> bool:
    return int(reply) > 0


def _seconds_left(pttl: Any) -> float | None:
    # -2: missing or expired. -1: a key without expiry, which threadstore never writes (some
    # other client put it in our namespace): it will not expire, so say so.
    if pttl == -2:
        return None
    return math.inf if pttl == -1 else pttl / 1000


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Commands:
    """The Redis form of every contract operation. Pure: no I/O, no state but the namespace."""

    __slots__ = ("prefix",)

    # Operations the async side may call by name (scan and the lifecycle are handled apart).
    NAMES = frozenset(
        {"get", "set_with_ttl", "setex", "delete", "exists", "ttl", "expire", "list_create",
         "list_append", "list_range", "list_length", "list_append_many", "list_pop"}
    )  # fmt: skip

    def __init__(self, namespace: str) -> None:
        self.prefix = namespace + ":"

    def get(self, key: str) -> Cmd:
        return Cmd(("GET", self.prefix + check_key(key)), _same, key, True)

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> Cmd:
        check_value(value)
        args = ("SET", self.prefix + check_key(key), value, "PX", ttl_ms(ttl_seconds))
        return Cmd(args, _none, key, True)

    setex = set_with_ttl

    def delete(self, key: str) -> Cmd:
        # Retried after a lost reply, the key is gone all the same but the answer may be False.
        return Cmd(("DEL", self.prefix + check_key(key)), _positive, key, True)

    def exists(self, key: str) -> Cmd:
        return Cmd(("EXISTS", self.prefix + check_key(key)), _positive, key, True)

    def ttl(self, key: str) -> Cmd:
        return Cmd(("PTTL", self.prefix + check_key(key)), _seconds_left, key, True)

    def expire(self, key: str, ttl_seconds: float) -> Cmd:
        args = ("PEXPIRE", self.prefix + check_key(key), ttl_ms(ttl_seconds))
        return Cmd(args, _positive, key, True)

    def list_create(self, key: str, ttl_seconds: float, first: str) -> Cmd:
        nskey = self.prefix + check_key(key)
        check_value(first, "first")
        args = ("EVALSHA", _LIST_CREATE.sha, 1, nskey, ttl_ms(ttl_seconds), first)
        return Cmd(args, _positive, key, False)

    def list_append(self, key: str, value: str, *, max_items: int, ttl_seconds: float) -> Cmd:
        nskey = self.prefix + check_key(key)
        check_value(value)
        check_max_items(max_items)
        args = ("EVALSHA", _LIST_APPEND.sha, 1, nskey, value, max_items, ttl_ms(ttl_seconds))
        return Cmd(args, int, key, False)

    def list_append_many(
        self, key: str, values: list[str], *, max_items: int, ttl_seconds: float
    ) -> Cmd:
        nskey = self.prefix + check_key(key)
        values = check_values(values)
        check_max_items(max_items)
        sha = _LIST_APPEND_MANY.sha
        args = ("EVALSHA", sha, 1, nskey, max_items, ttl_ms(ttl_seconds), *values)
        return Cmd(args, int, key, False)

    def list_pop(self, key: str, *, ttl_seconds: float) -> Cmd:
        nskey = self.prefix + check_key(key)
        return Cmd(("EVALSHA", _LIST_POP.sha, 1, nskey, ttl_ms(ttl_seconds)), _same, key, False)

    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> Cmd:
        nskey = self.prefix + check_key(key)
        start, stop = check_range(start, stop)
        if stop is None:
            last = -1
        elif stop > start:
            last = stop - 1
        else:  # an empty slice; LRANGE 1 0 is empty for every list and still checks the type
            start, last = 1, 0
        return Cmd(("LRANGE", nskey, start, last), _same, key, True)

    def list_length(self, key: str) -> Cmd:
        return Cmd(("LLEN", self.prefix + check_key(key)), int, key, True)

    def scan_match(self, prefix: str = "") -> str:
        return _glob_escape(self.prefix + check_prefix(prefix)) + "*"

    def scan_page(self, match: str, cursor: int) -> Cmd:
        """One SCAN step; the reply parses to (next cursor, keys without the namespace)."""
        cut = len(self.prefix)

        def parse(reply: Any) -> tuple[int, list[str]]:
            next_cursor, raw_keys = reply
            keys = []
            for raw in raw_keys:
                try:
                    keys.append(raw.decode("utf-8")[cut:])
                except UnicodeDecodeError:
                    continue  # not UTF-8, so not a key threadstore wrote: skip it
            return int(next_cursor), keys

        return Cmd(("SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT), parse, match, True, True)


# -- failure policy, shared by both executors -------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Target:
    """Where the store points and how it behaves when the server is away. Holds the secret."""

    url: str
    """Redacted."""
    secret: str | None
    retries: int
    socket_timeout: float
    connect_timeout: float

    def backoff(self, attempt: int) -> float:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)  # "equal jitter"

    def reason(self, exc: BaseException) -> str:
        return redact_text(str(exc) or type(exc).__name__, self.secret)

    def translate(self, exc: BaseException, key: str) -> Exception:
        """The threadstore error for a driver error."""
        if isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc):
            return WrongType(f"key {key!r} holds the wrong type of value for this operation")
        if isinstance(exc, UnicodeDecodeError):
            return CorruptData(f"key {key!r} holds bytes that are not UTF-8 text")
        if isinstance(exc, AuthenticationError | NoPermissionError):
            return StorageUnavailable(f"redis at {self.url} refused access: {self.reason(exc)}")
        if isinstance(exc, TimeoutError):
            return StorageUnavailable(
                f"redis at {self.url} did not answer within {self.socket_timeout:g} s:"
                f" {self.reason(exc)}"
            )
        return StorageUnavailable(f"redis at {self.url} is unavailable: {self.reason(exc)}")


def _decide(target: _Target, cmd: Cmd, exc: Exception, attempt: int) -> tuple[Cmd, float]:
    """After failure number ``attempt``: what to send next and how long to wait first.

    Raises the translated error when the call should give up.
    """
    if isinstance(exc, NoScriptError) and cmd.args[0] == "EVALSHA":
        return cmd._replace(args=("EVAL", _SCRIPTS[cmd.args[1]], *cmd.args[2:])), 0.0
    retryable = isinstance(exc, BusyLoadingError) or (
        cmd.idempotent
        and isinstance(exc, RedisConnectionError)
        and not isinstance(exc, AuthenticationError)
    )
    if retryable and attempt <= target.retries:
        return cmd, target.backoff(attempt)
    raise target.translate(exc, cmd.key) from exc


class _Counters:
    """For stats(): commands answered, errors raised to callers, commands re-sent."""

    __slots__ = ("commands", "errors", "lock", "retries")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands = self.errors = self.retries = 0

    def sent(self) -> None:
        with self.lock:
            self.commands += 1

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


_DRIVER_ERRORS = (RedisError, UnicodeDecodeError)
_parse_url: Callable[[str], dict[str, Any]] = _untyped_parse_url


# -- URL -> client options ------------------------------------------------------------------
def _client_options(url: str) -> tuple[dict[str, Any], _Target]:
    """Parse a redis URL into keyword arguments for redis.Redis / redis.asyncio.Redis."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        parsed = _parse_url(scheme + url[len(scheme) :])
    except ValueError as exc:
        raise ConfigError(f"{shown} is not a valid redis URL: {redact_text(str(exc))}") from None
    accepted = _PLAIN_OPTIONS | _OWN_OPTIONS | (_TLS_OPTIONS if scheme == "rediss" else set())
    unknown = sorted(set(parsed) - accepted - {"host", "port", "path", "connection_class"})
    if unknown:
        hint = "" if scheme == "rediss" else " (ssl_* options need rediss://)"
        raise ConfigError(
            f"{shown}: unknown option {unknown[0]!r}{hint}; accepted: {', '.join(sorted(accepted))}"
        )
    path = unquote(parts.path)
    if scheme == "unix":
        if not path:
            raise ConfigError(f"{shown}: a unix URL needs a socket path, unix:///path/redis.sock")
        options: dict[str, Any] = {"unix_socket_path": path}
    else:
        if path not in ("", "/") and not path[1:].isdigit():
            raise ConfigError(f"{shown}: the path must be a database number, like /0")
        options = {"host": parsed.get("host", "localhost"), "port": parsed.get("port", 6379)}
        options["ssl"] = scheme == "rediss"
    for name in sorted(accepted - _OWN_OPTIONS):
        if name in parsed:
            options[name] = parsed[name]
    for name in _TIMEOUTS:
        value = options.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{shown}: {name} must be a positive number of seconds")
    if options.get("ssl_cert_reqs", "required") not in ("none", "optional", "required"):
        raise ConfigError(f"{shown}: ssl_cert_reqs must be none, optional or required")
    try:
        retries = int(parsed.get("retries", DEFAULT_RETRIES))
    except ValueError:
        retries = -1
    if not 0 <= retries <= 10:
        raise ConfigError(f"{shown}: retries must be a whole number from 0 to 10")
    options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    options["decode_responses"] = True
    target = _Target(
        url=shown,
        secret=options.get("password"),
        retries=retries,
        socket_timeout=options["socket_timeout"],
        connect_timeout=options["socket_connect_timeout"],
    )
    return options, target


def _probe(options: dict[str, Any], target: _Target) -> None:
    """PING once on a throwaway connection with short timeouts; raise if that fails."""
    short = {
        **options,
        "socket_timeout": min(STARTUP_TIMEOUT, target.socket_timeout),
        "socket_connect_timeout": min(STARTUP_TIMEOUT, target.connect_timeout),
        "retry": Retry(NoBackoff(), 0),
    }
    client = redis.Redis(**short)
    try:
        client.ping()
    except (AuthenticationError, NoPermissionError) as exc:
        raise ConfigError(
            f"redis at {target.url} refused the credentials: {target.reason(exc)}"
        ) from None
    except ResponseError as exc:  # e.g. a password sent to a server that has none
        raise ConfigError(
            f"redis at {target.url} refused the login: {target.reason(exc)}"
        ) from None
    except (RedisError, OSError) as exc:
        raise StorageUnavailable(
            f"cannot reach redis at {target.url}: {target.reason(exc)}"
        ) from None
    finally:
        client.close()


# -- the sync executor -----------------------------------------------------------------------
class _Sends(Protocol):
    def execute_command(self, *args: Any, **options: Any) -> Any: ...


class _SendsAsync(Protocol):
    async def execute_command(self, *args: Any, **options: Any) -> Any: ...


class _ClosedClient:
    """Stands in for the client after close(): every call says so (no check on the hot path)."""

    def __init__(self, url: str) -> None:
        self._message = f"the redis store at {url} is closed"

    def execute_command(self, *args: Any, **options: Any) -> Any:
        raise StorageUnavailable(self._message)


class RedisStorage(Storage):
    """Threads in Redis or Valkey: shared by every process and machine that reaches the server."""

    kind = "redis"

    def __init__(self, options: dict[str, Any], target: _Target, namespace: str) -> None:
        """Use from_url(); this constructor does not check that the server answers."""
        self.namespace = check_namespace(namespace, "namespace")
        self._options = options
        self._target = target
        self._commands = Commands(self.namespace)
        self._counters = _Counters()
        self._redis = redis.Redis(**options, retry=Retry(NoBackoff(), 0))
        self._client: _Sends = self._redis  # swapped for a _ClosedClient by close()
        self._aio = RedisAsyncOps(self)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, namespace: str, check: bool = True) -> RedisStorage:
        """Open ``url`` and PING it (at most STARTUP_TIMEOUT seconds, skipped with check=False).

        Raises ConfigError for a bad URL or refused credentials, StorageUnavailable (with the
        password redacted) when the server cannot be reached.
        """
        check_namespace(namespace, "namespace")
        options, target = _client_options(url)
        if check:
            _probe(options, target)
        return cls(options, target, namespace)

    @property
    def url(self) -> str:
        return self._target.url

    @property
    def aio(self) -> RedisAsyncOps:
        """The native async side (redis.asyncio), used by AsyncThreadStore."""
        return self._aio

    # -- executor ---------------------------------------------------------------------------------
    def _run(self, cmd: Cmd) -> Any:
        attempt = 0
        while True:
            try:
                reply = self._client.execute_command(
                    *cmd.args, **(_RAW_REPLY if cmd.raw else _DECODED_REPLY)
                )
                break
            except _DRIVER_ERRORS as exc:
                attempt += 1
                cmd, delay = self._next_attempt(cmd, exc, attempt)
                if delay:
                    time.sleep(delay)
        self._counters.sent()
        return cmd.parse(reply)

    def _next_attempt(self, cmd: Cmd, exc: Exception, attempt: int) -> tuple[Cmd, float]:
        """Count a failure and decide (both executors): raises the translated error, or says
        what to send next after how long a pause."""
        try:
            cmd, delay = _decide(self._target, cmd, exc, attempt)
        except Exception:
            self._counters.add("errors")
            raise
        self._counters.add("retries")
        return cmd, delay

    # -- strings -----------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        result: str | None = self._run(self._commands.get(key))
        return result

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> None:
        self._run(self._commands.set_with_ttl(key, ttl_seconds, value))

    def delete(self, key: str) -> bool:
        return bool(self._run(self._commands.delete(key)))

    def exists(self, key: str) -> bool:
        return bool(self._run(self._commands.exists(key)))

    def ttl(self, key: str) -> float | None:
        result: float | None = self._run(self._commands.ttl(key))
        return result

    def expire(self, key: str, ttl_seconds: float) -> bool:
        return bool(self._run(self._commands.expire(key, ttl_seconds)))

    def scan(self, prefix: str = "") -> Iterator[str]:
        """SCAN with a cursor to the end (never KEYS); a key seen twice is yielded once."""
        match = self._commands.scan_match(prefix)  # checked now, not at the first next()
        return self._scan(match)

    def _scan(self, match: str) -> Iterator[str]:
        seen: set[str] = set()
        cursor = 0
        while True:
            cursor, keys = self._run(self._commands.scan_page(match, cursor))
            for key in keys:
                if key not in seen:
                    seen.add(key)
                    yield key
            if cursor == 0:
                return

    # -- lists -------------------------------------------------------------------------------------
    def list_create(self, key: str, ttl_seconds: float, first: str) -> bool:
        return bool(self._run(self._commands.list_create(key, ttl_seconds, first)))

    def list_append(self, key: str, value: str, *, max_items: int, ttl_seconds: float) -> int:
        cmd = self._commands.list_append(key, value, max_items=max_items, ttl_seconds=ttl_seconds)
        return int(self._run(cmd))

    def list_append_many(
        self, key: str, values: list[str], *, max_items: int, ttl_seconds: float
    ) -> int:
        cmd = self._commands.list_append_many(
            key, values, max_items=max_items, ttl_seconds=ttl_seconds
        )
        return int(self._run(cmd))

    def list_pop(self, key: str, *, ttl_seconds: float) -> str | None:
        result: str | None = self._run(self._commands.list_pop(key, ttl_seconds=ttl_seconds))
        return result

    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> list[str]:
        result: list[str] = self._run(self._commands.list_range(key, start, stop))
        return result

    def list_length(self, key: str) -> int:
        return int(self._run(self._commands.list_length(key)))

    # -- lifecycle ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Facts and counters, safe to print. Never raises for an unreachable server."""
        counters = self._counters
        out: dict[str, Any] = {
            "backend": self.kind,
            "url": self.url,
            "namespace": self.namespace,
            "socket_timeout": self._target.socket_timeout,
            "connect_timeout": self._target.connect_timeout,
            "retries": self._target.retries,
            "commands": counters.commands,
            "errors": counters.errors,  # raised to the caller
            "retried": counters.retries,  # re-sent: connection retries and script reloads
            "reachable": False,
        }
        client = self._redis
        if self._closed:
            out["error"] = "closed"
            return out
        try:
            server = client.info("server")
            memory = client.info("memory")
            out["db_keys"] = client.dbsize()  # the whole database, not only this namespace
        except _DRIVER_ERRORS as exc:
            out["error"] = str(self._target.translate(exc, ""))
            return out
        out["reachable"] = True
        out["server_version"] = server.get("redis_version")
        out["used_memory"] = memory.get("used_memory")
        return out

    def close(self) -> None:
        """Disconnect every pool (the async clients best-effort: use aclose() from async code)."""
        if self._closed:
            return
        self._closed = True
        self._client = _ClosedClient(self.url)
        self._redis.close()
        self._aio.drop_all()

    async def aclose(self) -> None:
        """close(), awaiting the async client of the running event loop."""
        await self._aio.aclose()
        self.close()


# -- the async executor ----------------------------------------------------------------------
class RedisAsyncOps:
    """The store's native async side: the same Commands, run on ``redis.asyncio``.

    An asyncio client belongs to the event loop it was first used in, so there is one client
    (and pool) per loop, made on first use and forgotten when the loop is collected.
    """

    def __init__(self, store: RedisStorage) -> None:
        self._store = store
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closing: set[asyncio.Future[None]] = set()

    def _client(self) -> _SendsAsync:
        store = self._store
        if store._closed:
            raise StorageUnavailable(f"the redis store at {store.url} is closed")
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            with self._lock:
                client = self._clients.get(loop)
                if client is None:
                    retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
                    client = redis.asyncio.Redis(**store._options, retry=retry)
                    self._clients[loop] = client
        return client

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        store = self._store
        if method in Commands.NAMES:
            return await self._run(getattr(store._commands, method)(*args, **kwargs))
        if method == "scan":
            return await self._scan(store._commands.scan_match(*args, **kwargs))
        if method in ("close", "shutdown"):
            return await store.aclose()
        if method == "stats":
            return await asyncio.to_thread(store.stats)
        raise AttributeError(f"{type(store).__name__} has no operation {method!r}")

    async def _run(self, cmd: Cmd) -> Any:
        client = self._client()
        attempt = 0
        while True:
            try:
                reply = await client.execute_command(
                    *cmd.args, **(_RAW_REPLY if cmd.raw else _DECODED_REPLY)
                )
                break
            except _DRIVER_ERRORS as exc:
                attempt += 1
                cmd, delay = self._store._next_attempt(cmd, exc, attempt)
                if delay:
                    await asyncio.sleep(delay)
        self._store._counters.sent()
        return cmd.parse(reply)

    async def _scan(self, match: str) -> list[str]:
        seen: dict[str, None] = {}
        cursor = 0
        while True:
            cursor, keys = await self._run(self._store._commands.scan_page(match, cursor))
            seen.update(dict.fromkeys(keys))
            if cursor == 0:
                return list(seen)

    async def aclose(self) -> None:
        """Close the running loop's client and wait for it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def drop_all(self) -> None:
        """Close every loop's client as well as can be done from synchronous code."""
        with self._lock:
            clients = list(self._clients.items())
            self._clients.clear()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, client in clients:
            if loop.is_closed():
                continue  # its sockets went with it
            if loop is running:
                task = loop.create_task(client.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            # else a stopped loop: nothing can run there now; the sockets go with the client
