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

Every operation touches one hash slot. Keys filed in the activity index (notes/index.md) bring
a membership hash and two sorted sets per scope along, named with the same hash tag as the list
in the Cluster layout (``tagged``), so one script still does each write in one round trip;
``index_page`` and ``index_count`` run one script per index partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

from redis.client import NEVER_DECODE
from redis.connection import parse_url as _untyped_parse_url
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._config import check_namespace
from ._errors import ConfigError, CorruptData, StorageUnavailable, WrongType
from ._redact import redact_text, redact_url
from ._redis_net import DEADLINE, Topology
from ._storage import (
    TRIM_ON_READ,
    TRIM_ON_WRITE,
    ListEnds,
    Storage,
    check_key,
    check_max_items,
    check_page,
    check_prefix,
    check_range,
    check_scope,
    check_scopes,
    check_score,
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

DEFAULT_DEADLINE = 5.0
"""Seconds one whole operation may take, retries included (URL option ``deadline``): past it
StorageUnavailable, and the connection is dropped. socket_timeout alone bounds each read, so a
link trickling a byte at a time would otherwise hold a call for as long as the reply is long."""
DEFAULT_WAIT_TIMEOUT_MS = 1000
"""Milliseconds WAIT gives the replicas to confirm a write (URL option ``wait_timeout_ms``)."""
SENTINEL_PORT = 26379
DEFAULT_CLUSTER_PARTITIONS = 16
"""Hash-tag partitions of a namespace on Redis Cluster (URL option ``partitions``): its threads
and activity index spread over this many slots; listing runs one small script per partition."""

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
_OWN_OPTIONS = frozenset({"retries", "deadline", "wait_replicas", "wait_timeout_ms"})
_SENTINEL_OPTIONS = frozenset({"sentinel_password", "sentinel_username"})
_CLUSTER_OPTIONS = frozenset({"partitions"})
TOPOLOGY_SCHEMES = {
    "redis": ("single", False), "rediss": ("single", True), "unix": ("single", False),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
}  # fmt: skip
"""URL scheme -> (topology, TLS)."""


# -- Lua: one round trip each, atomic, one key ------------------------------------------------
class _Script(NamedTuple):
    source: str
    sha: str


def _script(source: str) -> _Script:
    return _Script(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


# The activity index (notes/index.md). Per partition (hash tag T): a hash M of filed key -> its
# scopes joined by NUL, and per scope a sorted set A (score = activity) and E (score = expiry,
# ms on the server's clock). Members are the caller's keys. Scripts get the prefixes of the A and
# E names (ABASE, EBASE: everything but the scope) to reach the sets of a key's scopes.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
_INDEX_LIB = (
    _NOW_MS
    + f"""
local function unfile(m, member, abase, ebase)
  local scopes = redis.call('HGET', m, member)
  if not scopes then return end
  for scope in string.gmatch(scopes, '[^%z]+') do
    redis.call('ZREM', abase .. scope, member)
    redis.call('ZREM', ebase .. scope, member)
  end
  redis.call('HDEL', m, member)
end
local function trim(m, ekey, now, abase, ebase, budget)
  local dead = redis.call('ZRANGEBYSCORE', ekey, '-inf', '(' .. now, 'LIMIT', 0, budget)
  for _, member in ipairs(dead) do unfile(m, member, abase, ebase) end
end
local TRIM_ON_WRITE = {TRIM_ON_WRITE}
local TRIM_ON_READ = {TRIM_ON_READ}
"""
)

# KEYS: list, M, then A and E of each scope; ARGV: ttl ms, first item, score, scopes joined,
# member, ABASE, EBASE. 1 when created, 0 when the key was taken.
_LIST_CREATE = _script(
    _INDEX_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local member = ARGV[5]
unfile(KEYS[2], member, ARGV[6], ARGV[7])  -- left by an earlier list of that name
if #KEYS > 2 then
  local now = now_ms()
  trim(KEYS[2], KEYS[4], now, ARGV[6], ARGV[7], TRIM_ON_WRITE)
  local expires = now + tonumber(ARGV[1])
  redis.call('HSET', KEYS[2], member, ARGV[4])
  for i = 3, #KEYS, 2 do
    redis.call('ZADD', KEYS[i], ARGV[3], member)
    redis.call('ZADD', KEYS[i + 1], expires, member)
  end
end
return 1
"""
)

# Activity only grows: an append whose score is lower than the one filed (two writers whose
# turns were stamped in one order and landed in the other) leaves it, so a cursor that has gone
# past a thread never meets it again. (ZADD GT does this from Redis 6.2 on.)
_RAISE_LIB = """
local function raise_score(set, score, member)
  local current = redis.call('ZSCORE', set, member)
  if not current or tonumber(score) > tonumber(current) then
    redis.call('ZADD', set, score, member)
  end
end
"""

# KEYS: list, M; ARGV: item, max items, ttl ms, score ('' = keep), member, ABASE, EBASE.
# New length, 0 when missing, -1 when full. Lists are never empty in Redis, so LLEN = 0 means
# missing; on a string LLEN raises WRONGTYPE. No trimming here: every filed key was created
# once, and each creation removes more expired entries than it adds.
_LIST_APPEND = _script(
    _NOW_MS
    + _RAISE_LIB
    + """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return 0 end
if n >= tonumber(ARGV[2]) then return -1 end
n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local scopes = redis.call('HGET', KEYS[2], ARGV[5])
if scopes then
  local expires = now_ms() + tonumber(ARGV[3])
  for scope in string.gmatch(scopes, '[^%z]+') do
    if ARGV[4] ~= '' then raise_score(ARGV[6] .. scope, ARGV[4], ARGV[5]) end
    redis.call('ZADD', ARGV[7] .. scope, expires, ARGV[5])
  end
end
return n
"""
)

# KEYS: list, M; ARGV: member, ABASE, EBASE. Keys removed (0 or 1).
_DELETE = _script(
    _INDEX_LIB
    + """
local n = redis.call('DEL', KEYS[1])
unfile(KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return n
"""
)

# KEYS: list, M; ARGV: ttl ms, member, EBASE. 1 when the key exists.
_EXPIRE = _script(
    _INDEX_LIB
    + """
local r = redis.call('PEXPIRE', KEYS[1], ARGV[1])
if r == 1 then
  local scopes = redis.call('HGET', KEYS[2], ARGV[2])
  if scopes then
    local expires = now_ms() + tonumber(ARGV[1])
    for scope in string.gmatch(scopes, '[^%z]+') do
      redis.call('ZADD', ARGV[3] .. scope, 'XX', expires, ARGV[2])
    end
  end
end
return r
"""
)

# KEYS: list, M, then A and E of each scope; ARGV: score, member, scopes joined, ABASE, EBASE.
# 1 when filed, 0 when the key is missing.
_INDEX_PUT = _script(
    _INDEX_LIB
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'list' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
local member = ARGV[2]
local pttl = redis.call('PTTL', KEYS[1])
local expires = pttl < 0 and 9007199254740991 or now_ms() + pttl
local old = redis.call('HGET', KEYS[2], member) or ''
local have = {}
for scope in string.gmatch(old, '[^%z]+') do
  have[scope] = true
  redis.call('ZADD', ARGV[4] .. scope, ARGV[1], member)
end
local all = old
for scope in string.gmatch(ARGV[3], '[^%z]+') do
  if not have[scope] then
    all = (all == '' and scope) or (all .. '\0' .. scope)
  end
end
redis.call('HSET', KEYS[2], member, all)
for i = 3, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], ARGV[1], member)
  redis.call('ZADD', KEYS[i + 1], expires, member)
end
return 1
"""
)

# KEYS: A, E, M of one scope and partition; ARGV: limit, after score ('' = from the start),
# after member, '1' for ascending, ABASE, EBASE, data key prefix. Returns member, score, ...
# for up to limit live entries past the position. Candidates are checked against E and against
# the list itself (a string written over it, or an eviction); up to TRIM_ON_READ dead ones are
# unfiled, the rest skipped.
_INDEX_PAGE = _script(
    _INDEX_LIB
    + """
local limit = tonumber(ARGV[1])
local asc = ARGV[4] == '1'
local now = now_ms()
local out, dead = {}, {}
local bound = ARGV[2] ~= '' and ARGV[2] or (asc and '-inf' or '+inf')
local bscore = ARGV[2] ~= '' and tonumber(ARGV[2]) or nil
local bmember = ARGV[3]
local batch = limit + 8
while #out < 2 * limit do
  local rows
  if asc then
    rows = redis.call('ZRANGEBYSCORE', KEYS[1], bound, '+inf', 'WITHSCORES', 'LIMIT', 0, batch)
  else
    rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], bound, '-inf', 'WITHSCORES', 'LIMIT', 0, batch)
  end
  local fresh = 0
  for i = 1, #rows, 2 do
    local member, score = rows[i], rows[i + 1]
    local s = tonumber(score)
    local past
    if bscore == nil or s ~= bscore then past = true
    elseif asc then past = member > bmember
    else past = member < bmember end
    if past then
      fresh = fresh + 1
      local e = redis.call('ZSCORE', KEYS[2], member)
      local live = e and tonumber(e) >= now
        and redis.call('TYPE', ARGV[7] .. member)['ok'] == 'list'
      if live then
        out[#out + 1] = member
        out[#out + 1] = score
        if #out >= 2 * limit then break end
      elseif #dead < TRIM_ON_READ then
        dead[#dead + 1] = member
      end
      bound, bscore, bmember = score, s, member
    end
  end
  if #rows < 2 * batch then break end
  if fresh == 0 then batch = batch * 2 end  -- a run of equal scores longer than the batch
end
for _, member in ipairs(dead) do unfile(KEYS[3], member, ARGV[5], ARGV[6]) end
return out
"""
)

# KEYS: A, E of one scope and partition. Live entries.
_INDEX_COUNT = _script(
    _INDEX_LIB
    + """
local now = now_ms()
return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. now)
"""
)

# Keep a filed list's index entries in step after a write that changed its TTL (and, unless
# score is '', its activity): as the tail of _LIST_APPEND.
_REFILE_LIB = (
    _RAISE_LIB
    + """
local function refile(m, member, score, ttl, abase, ebase)
  local scopes = redis.call('HGET', m, member)
  if not scopes then return end
  local now = now_ms()
  local expires = now + tonumber(ttl)
  local first = nil
  for scope in string.gmatch(scopes, '[^%z]+') do
    if score ~= '' then raise_score(abase .. scope, score, member) end
    redis.call('ZADD', ebase .. scope, expires, member)
    first = first or scope
  end
  trim(m, ebase .. first, now, abase, ebase, TRIM_ON_WRITE)
end
"""
)

# KEYS: list, M; ARGV: max items, ttl ms, score ('' = keep), member, ABASE, EBASE, the items.
# As _LIST_APPEND, for all items or none (RPUSH in chunks: Lua's unpack has a small stack).
_LIST_APPEND_MANY = _script(
    _INDEX_LIB
    + _REFILE_LIB
    + """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return 0 end
if n + #ARGV - 6 > tonumber(ARGV[1]) then return -1 end
for i = 7, #ARGV, 1000 do
  n = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
refile(KEYS[2], ARGV[4], ARGV[3], ARGV[2], ARGV[5], ARGV[6])
return n
"""
)

# KEYS: list, M; ARGV: ttl ms, member, ABASE, EBASE. The last item (nil when missing or a
# single item is left); the activity score is kept.
_LIST_POP = _script(
    _INDEX_LIB
    + _REFILE_LIB
    + """
if redis.call('LLEN', KEYS[1]) < 2 then return false end
local v = redis.call('RPOP', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
refile(KEYS[2], ARGV[2], '', ARGV[1], ARGV[3], ARGV[4])
return v
"""
)

# KEYS: list. {length, first item, last item, PTTL} in one step; nil when missing.
_LIST_ENDS = _script(
    """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return false end
return {n, redis.call('LINDEX', KEYS[1], 0), redis.call('LINDEX', KEYS[1], -1),
        redis.call('PTTL', KEYS[1])}
"""
)


def _list_ends(reply: Any) -> ListEnds | None:
    if reply is None:
        return None
    left = _seconds_left(reply[3])
    return None if left is None else (int(reply[0]), reply[1], reply[2], left)


def _pipelines(store: RedisStorage, cmds: list[Cmd]) -> bool:
    """Whether several reads go in one pipeline (one round trip): a single node or a Sentinel
    master; Cluster and a closed store take the one-by-one path."""
    return len(cmds) > 1 and store._target.topology != "cluster" and not store._closed


def _parsed(store: RedisStorage, cmds: list[Cmd], replies: list[Any]) -> list[Any]:
    for _ in cmds:
        store._counters.sent()
    return [cmd.parse(reply) for cmd, reply in zip(cmds, replies, strict=True)]


_SCRIPTS = {
    s.sha: s.source
    for s in (
        _LIST_CREATE, _LIST_APPEND, _DELETE, _EXPIRE, _INDEX_PUT, _INDEX_PAGE, _INDEX_COUNT,
        _LIST_APPEND_MANY, _LIST_POP, _LIST_ENDS,
    )
}  # fmt: skip


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
    write: bool = False
    """It may change data: followed by WAIT when the store waits for replicas."""
    node: Any = None
    """The cluster node to send it to (SCAN of one master); None: routed by its key."""

    @property
    def nskey(self) -> str:
        """The namespaced key it touches (scripts name it after the script and key count)."""
        return str(self.args[3] if self.args[0] in ("EVALSHA", "EVAL") else self.args[1])


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


def _page_entries(reply: Any) -> list[tuple[int, str]]:
    return [(_score(reply[i + 1]), reply[i]) for i in range(0, len(reply), 2)]


def _score(raw: Any) -> int:
    try:
        return int(raw)
    except ValueError:
        return int(float(raw))  # a double Redis printed in exponent form


class Fanout(NamedTuple):
    """Several commands (one per index partition) and how to combine their parsed replies."""

    cmds: list[Cmd]
    combine: Callable[[list[Any]], Any]


class Commands:
    """The Redis form of every contract operation. Pure: no I/O, no state but the key layout.

    Layout (notes/index.md): ``partitions`` index partitions, key ``k`` in partition
    ``crc32(k) % partitions``; with ``tagged`` (for Redis Cluster) data keys carry their
    partition's hash tag too, so a list and its index entries share a slot.
    """

    __slots__ = ("namespace", "partitions", "prefix", "tagged")

    # Operations the async side may call by name (scan and the lifecycle are handled apart).
    NAMES = frozenset(
        {"get", "set_with_ttl", "setex", "delete", "exists", "ttl", "expire", "list_create",
         "list_append", "list_range", "list_length", "index_put", "list_append_many",
         "list_pop", "list_ends"}
    )  # fmt: skip
    FANOUT = frozenset({"index_page", "index_count"})

    def __init__(self, namespace: str, *, partitions: int = 1, tagged: bool = False) -> None:
        if type(partitions) is not int or not 1 <= partitions <= 1024:
            raise ConfigError(f"index partitions must be an int from 1 to 1024, got {partitions!r}")
        self.namespace = namespace
        self.prefix = namespace + ":"
        self.partitions = partitions
        self.tagged = tagged

    # -- key layout ------------------------------------------------------------------------------
    def partition(self, key: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(key.encode("utf-8")) % self.partitions

    def _tag(self, part: int) -> str:
        return "{" + self.namespace + "#" + str(part) + "}"

    def data_prefix(self, part: int) -> str:
        """What comes before a key of partition ``part`` in its Redis name."""
        return self.prefix + self._tag(part) if self.tagged else self.prefix

    def key(self, key: str) -> str:
        """The Redis name of a (checked) contract key."""
        if self.tagged:
            return self.data_prefix(self.partition(key)) + key
        return self.prefix + key

    def index_names(self, part: int) -> tuple[str, str, str]:
        """(membership hash, prefix of activity sets, prefix of expiry sets) of a partition."""
        tag = self._tag(part)
        # Under the namespace's prefix (so ACL key patterns like ~ns:* cover them), with a NUL
        # no contract key holds: they never collide with a key, and scan() leaves them out.
        base = self.prefix + "\x00"
        return base + "m" + tag, base + "a" + tag, base + "e" + tag

    # -- strings ---------------------------------------------------------------------------------
    def get(self, key: str) -> Cmd:
        return Cmd(("GET", self.key(check_key(key))), _same, key, True)

    def set_with_ttl(self, key: str, ttl_seconds: float, value: str) -> Cmd:
        check_value(value)
        args = ("SET", self.key(check_key(key)), value, "PX", ttl_ms(ttl_seconds))
        return Cmd(args, _none, key, True, write=True)

    setex = set_with_ttl

    def delete(self, key: str) -> Cmd:
        # Retried after a lost reply, the key is gone all the same but the answer may be False.
        m, abase, ebase = self.index_names(self.partition(check_key(key)))
        args = ("EVALSHA", _DELETE.sha, 2, self.key(key), m, key, abase, ebase)
        return Cmd(args, _positive, key, True, write=True)

    def exists(self, key: str) -> Cmd:
        return Cmd(("EXISTS", self.key(check_key(key))), _positive, key, True)

    def ttl(self, key: str) -> Cmd:
        return Cmd(("PTTL", self.key(check_key(key))), _seconds_left, key, True)

    def expire(self, key: str, ttl_seconds: float) -> Cmd:
        m, _, ebase = self.index_names(self.partition(check_key(key)))
        args = ("EVALSHA", _EXPIRE.sha, 2, self.key(key), m, ttl_ms(ttl_seconds), key, ebase)
        return Cmd(args, _positive, key, True, write=True)

    # -- lists -----------------------------------------------------------------------------------
    def list_create(
        self,
        key: str,
        ttl_seconds: float,
        first: str,
        *,
        scopes: tuple[str, ...] | list[str] = (),
        score: int = 0,
    ) -> Cmd:
        nskey = self.key(check_key(key))
        check_value(first, "first")
        ms = ttl_ms(ttl_seconds)
        scopes = check_scopes(scopes)
        check_score(score)
        m, abase, ebase = self.index_names(self.partition(key))
        sets = [name for scope in scopes for name in (abase + scope, ebase + scope)]
        args = (
            "EVALSHA", _LIST_CREATE.sha, 2 + len(sets), nskey, m, *sets,
            ms, first, score, "\0".join(scopes), key, abase, ebase,
        )  # fmt: skip
        return Cmd(args, _positive, key, False, write=True)

    def list_append(
        self,
        key: str,
        value: str,
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> Cmd:
        nskey = self.key(check_key(key))
        check_value(value)
        check_max_items(max_items)
        ms = ttl_ms(ttl_seconds)
        shown = "" if score is None else check_score(score)
        m, abase, ebase = self.index_names(self.partition(key))
        args = (
            "EVALSHA", _LIST_APPEND.sha, 2, nskey, m,
            value, max_items, ms, shown, key, abase, ebase,
        )  # fmt: skip
        return Cmd(args, int, key, False, write=True)

    def list_append_many(
        self,
        key: str,
        values: list[str],
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> Cmd:
        nskey = self.key(check_key(key))
        values = check_values(values)
        check_max_items(max_items)
        ms = ttl_ms(ttl_seconds)
        shown = "" if score is None else check_score(score)
        m, abase, ebase = self.index_names(self.partition(key))
        args = (
            "EVALSHA", _LIST_APPEND_MANY.sha, 2, nskey, m,
            max_items, ms, shown, key, abase, ebase, *values,
        )  # fmt: skip
        return Cmd(args, int, key, False, write=True)

    def list_pop(self, key: str, *, ttl_seconds: float) -> Cmd:
        nskey = self.key(check_key(key))
        ms = ttl_ms(ttl_seconds)
        m, abase, ebase = self.index_names(self.partition(key))
        args = ("EVALSHA", _LIST_POP.sha, 2, nskey, m, ms, key, abase, ebase)
        return Cmd(args, _same, key, False, write=True)

    def list_range(self, key: str, start: int = 0, stop: int | None = None) -> Cmd:
        nskey = self.key(check_key(key))
        start, stop = check_range(start, stop)
        if stop is None:
            last = -1
        elif stop > start:
            last = stop - 1
        else:  # an empty slice; LRANGE 1 0 is empty for every list and still checks the type
            start, last = 1, 0
        return Cmd(("LRANGE", nskey, start, last), _same, key, True)

    def list_length(self, key: str) -> Cmd:
        return Cmd(("LLEN", self.key(check_key(key))), int, key, True)

    def list_ends(self, key: str) -> Cmd:
        args = ("EVALSHA", _LIST_ENDS.sha, 1, self.key(check_key(key)))
        return Cmd(args, _list_ends, key, True)

    def list_ends_many(self, keys: list[str]) -> list[Cmd]:
        """One list_ends per key, to be sent as one pipeline."""
        return [self.list_ends(key) for key in keys]

    # -- activity index ----------------------------------------------------------------------------
    def index_put(self, key: str, scopes: tuple[str, ...] | list[str], score: int) -> Cmd:
        nskey = self.key(check_key(key))
        scopes = check_scopes(scopes)
        check_score(score)
        m, abase, ebase = self.index_names(self.partition(key))
        sets = [name for scope in scopes for name in (abase + scope, ebase + scope)]
        args = (
            "EVALSHA", _INDEX_PUT.sha, 2 + len(sets), nskey, m, *sets,
            score, key, "\0".join(scopes), abase, ebase,
        )  # fmt: skip
        return Cmd(args, _positive, key, True, write=True)

    def index_page(
        self,
        scope: str,
        limit: int,
        after: tuple[int, str] | None = None,
        *,
        ascending: bool = False,
    ) -> Fanout:
        check_scope(scope)
        limit, after = check_page(limit, after)
        score, member = ("", "") if after is None else after
        cmds = []
        for part in range(self.partitions):
            m, abase, ebase = self.index_names(part)
            args = (
                "EVALSHA", _INDEX_PAGE.sha, 3, abase + scope, ebase + scope, m,
                limit, score, member, "1" if ascending else "0", abase, ebase,
                self.data_prefix(part),
            )  # fmt: skip
            cmds.append(Cmd(args, _page_entries, scope, True))

        def merge(pages: list[list[tuple[int, str]]]) -> list[tuple[int, str]]:
            if len(pages) == 1:
                return pages[0]
            entries = [entry for page in pages for entry in page]
            entries.sort(reverse=not ascending)
            return entries[:limit]

        return Fanout(cmds, merge)

    def index_count(self, scope: str) -> Fanout:
        check_scope(scope)
        cmds = []
        for part in range(self.partitions):
            _, abase, ebase = self.index_names(part)
            args = ("EVALSHA", _INDEX_COUNT.sha, 2, abase + scope, ebase + scope)
            cmds.append(Cmd(args, int, scope, True))
        return Fanout(cmds, sum)

    def scan_match(self, prefix: str = "") -> str:
        check_prefix(prefix)
        if self.tagged:
            tag = _glob_escape("{" + self.namespace + "#") + "*}"
            return _glob_escape(self.prefix) + tag + _glob_escape(prefix) + "*"
        return _glob_escape(self.prefix + prefix) + "*"

    def scan_page(self, match: str, cursor: int, node: Any = None) -> Cmd:
        """One SCAN step (of one cluster ``node``); the reply parses to (next cursor, keys
        without the namespace)."""
        cut = len(self.prefix)
        tagged = self.tagged

        def parse(reply: Any) -> tuple[int, list[str]]:
            next_cursor, raw_keys = reply
            if isinstance(next_cursor, dict):  # the sync cluster client: {node: cursor}
                next_cursor = next(iter(next_cursor.values()), 0)
            keys = []
            for raw in raw_keys:
                try:
                    name = raw.decode("utf-8")
                except UnicodeDecodeError:
                    continue  # not UTF-8, so not a key threadstore wrote: skip it
                if "\x00" in name:
                    continue  # the activity index (see index_names)
                keys.append(name[name.index("}", cut) + 1 :] if tagged else name[cut:])
            return int(next_cursor), keys

        args = ("SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT)
        return Cmd(args, parse, match, True, True, node=node)


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
    deadline: float = DEFAULT_DEADLINE
    wait_replicas: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS
    topology: str = "single"
    partitions: int = DEFAULT_CLUSTER_PARTITIONS
    """Activity index partitions on Cluster (URL option ``partitions``)."""
    secrets: tuple[str, ...] = ()
    """Every password the URL holds (the Sentinels' too), for redaction."""

    def backoff(self, attempt: int) -> float:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)  # "equal jitter"

    def reason(self, exc: BaseException) -> str:
        return redact_text(str(exc) or type(exc).__name__, self.secret, *self.secrets)

    def translate(self, exc: BaseException, key: str) -> Exception:
        """The threadstore error for a driver error."""
        if isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc):
            return WrongType(f"key {key!r} holds the wrong type of value for this operation")
        if isinstance(exc, UnicodeDecodeError):
            return CorruptData(f"key {key!r} holds bytes that are not UTF-8 text")
        if isinstance(exc, AuthenticationError | NoPermissionError):
            return StorageUnavailable(f"redis at {self.url} refused access: {self.reason(exc)}")
        if isinstance(exc, RedisTimeoutError):
            if time.monotonic() >= DEADLINE.get():
                return self.past_deadline()
            return StorageUnavailable(
                f"redis at {self.url} did not answer within {self.socket_timeout:g} s:"
                f" {self.reason(exc)}"
            )
        return StorageUnavailable(f"redis at {self.url} is unavailable: {self.reason(exc)}")

    def past_deadline(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"redis at {self.url} did not complete the call within its {self.deadline:g} s"
            " deadline (URL option deadline); the connection was dropped"
        )

    def too_few_replicas(self, acked: int) -> StorageUnavailable:
        return StorageUnavailable(
            f"redis at {self.url}: the write reached the master but only {acked} of"
            f" {self.wait_replicas} replicas confirmed it within {self.wait_timeout_ms} ms;"
            " it may or may not survive a failover"
        )


# Refused before running (cluster reconfiguring, a replica without its master, a slot without
# a node): safe to send again whatever the operation.
_REFUSED = (BusyLoadingError, ClusterDownError, TryAgainError, SlotNotCoveredError)


def _decide(target: _Target, cmd: Cmd, exc: Exception, attempt: int) -> tuple[Cmd, float]:
    """After failure number ``attempt``: what to send next and how long to wait first.

    Raises the translated error when the call should give up (also when waiting would cross
    the call's deadline).
    """
    if isinstance(exc, NoScriptError) and cmd.args[0] == "EVALSHA":
        return cmd._replace(args=("EVAL", _SCRIPTS[cmd.args[1]], *cmd.args[2:])), 0.0
    retryable = isinstance(exc, _REFUSED) or (
        cmd.idempotent
        and isinstance(exc, RedisConnectionError)
        and not isinstance(exc, AuthenticationError)
    )
    if retryable and attempt <= target.retries:
        delay = target.backoff(attempt)
        if time.monotonic() + delay < DEADLINE.get():
            return cmd, delay
    raise target.translate(exc, cmd.key) from exc


def _topology_check(facts: dict[str, Any], target: _Target) -> list[str]:
    """["ok" or "warn", one line] describing where the data lives, for ``doctor``."""
    status = "ok"
    if target.topology == "cluster":
        nodes = facts["cluster_nodes"]
        masters = sum(" master" in n for n in nodes)
        text = (
            f"cluster {facts['cluster_state']}: {masters} masters, {len(nodes) - masters}"
            f" replicas, {facts['slots_covered']} of {facts['slots_total']} slots served"
        )
        if facts["cluster_state"] != "ok" or facts["slots_covered"] < facts["slots_total"]:
            status = "warn"
        if any("failing" in n for n in nodes):
            status = "warn"
            text += "; failing: " + ", ".join(n for n in nodes if "failing" in n)
        replicas = min((sum(1 for n in nodes if " replica" in n) // max(masters, 1),), default=0)
    else:
        replicas = len(facts["replicas"])
        where = (
            f"master {facts['master']} (service {facts['service']})"
            if (target.topology == "sentinel")
            else f"{facts['role']}"
        )
        text = f"{where} with {replicas} replica(s): " + (", ".join(facts["replicas"]) or "none")
        if facts["role"] != "master":
            status = "warn"
            text += "; this server is not a master, writes will be refused"
    if target.wait_replicas > replicas:
        status = "warn"
        text += (
            f"; wait_replicas={target.wait_replicas} but only {replicas} replica(s):"
            " every write will report StorageUnavailable"
        )
    elif target.wait_replicas:
        text += f"; every write waits for {target.wait_replicas} replica(s)"
    return [status, text]


def _cluster_nodes(reply: Any) -> list[str]:
    """CLUSTER NODES (as redis-py parses it) as "address role [slots]" lines."""
    out = []
    for address, node in sorted(reply.items() if isinstance(reply, dict) else ()):
        flags = str(node.get("flags", ""))
        role = "master" if "master" in flags else "replica" if "slave" in flags else flags
        if "fail" in flags:
            role += " (failing)"
        slots = sum(int(r[1]) - int(r[0]) + 1 if len(r) > 1 else 1 for r in node.get("slots", []))
        out.append(f"{address.split('@')[0]} {role}" + (f" {slots} slots" if slots else ""))
    return out


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


_DRIVER_ERRORS = (RedisError, RedisClusterException, UnicodeDecodeError)
_parse_url: Callable[[str], dict[str, Any]] = _untyped_parse_url


# -- URL -> topology and client options ----------------------------------------------------
def _hosts(netloc: str, default_port: int, shown: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (IPv6 in brackets) as a tuple of (host, port)."""
    out = []
    for item in netloc.split(","):
        item = item.strip()
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            port = -1
        if not host or not 0 < port < 65536:
            raise ConfigError(f"{shown}: {item!r} is not a host:port")
        out.append((host, port))
    return tuple(out)


def _split_multi_host(url: str, scheme: str, kind: str, shown: str) -> tuple[str, str, list[str]]:
    """A multi-host URL as (single-node URL for redis-py's parser, service, hosts)."""
    rest = url[len(scheme) + 3 :].partition("#")[0]
    # The user info may hold '/' (percent-encoding recommended): it ends at the last '@' before
    # the query.
    query_at = rest.find("?")
    at = rest.rfind("@", 0, query_at if query_at >= 0 else len(rest))
    userinfo, after = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    end = min((i for i in (after.find("/"), after.find("?")) if i >= 0), default=len(after))
    hosts, tail = after[:end], after[end:]
    path, _, query = tail.partition("?")
    segments = [unquote(p) for p in path.split("/")[1:]] if path else []
    service = ""
    if kind == "sentinel":
        if not segments or not segments[0]:
            raise ConfigError(
                f"{shown}: name the monitored master after the Sentinels,"
                " like redis+sentinel://host:26379/mymaster/0"
            )
        service, segments = segments[0], segments[1:]
    db = segments[0] if segments else ""
    if len(segments) > 1 or (db and not db.isdigit()):
        raise ConfigError(f"{shown}: the path after the hosts must be a database number, like /0")
    if kind == "cluster" and db not in ("", "0"):
        raise ConfigError(f"{shown}: Redis Cluster has only database 0")
    base = "rediss" if scheme.startswith("rediss") else "redis"
    first = hosts.split(",")[0] or "localhost"
    single = f"{base}://{userinfo + '@' if at >= 0 else ''}{first}/{db}" + (
        f"?{query}" if query else ""
    )
    return single, service, hosts.split(",") if hosts else []


def _client_options(url: str) -> tuple[Topology, _Target]:
    """Parse a redis URL (any topology) into how to reach the servers and how to behave."""
    shown = redact_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme not in TOPOLOGY_SCHEMES:
        raise ConfigError(f"{shown}: not a redis URL; schemes: {', '.join(TOPOLOGY_SCHEMES)}")
    kind, tls = TOPOLOGY_SCHEMES[scheme]
    service = ""
    hosts: list[str] = []
    single = scheme + url[len(scheme) :]
    if kind != "single":
        single, service, hosts = _split_multi_host(url, scheme, kind, shown)
    try:
        parts = urlsplit(single)
        parsed = _parse_url(single)
    except ValueError as exc:
        raise ConfigError(f"{shown} is not a valid redis URL: {redact_text(str(exc))}") from None
    accepted = _PLAIN_OPTIONS | _OWN_OPTIONS | (_TLS_OPTIONS if tls else set())
    if kind == "sentinel":
        accepted |= _SENTINEL_OPTIONS
    if kind == "cluster":
        accepted |= _CLUSTER_OPTIONS
    unknown = sorted(set(parsed) - accepted - {"host", "port", "path", "connection_class"})
    if unknown:
        hint = "" if tls else " (ssl_* options need rediss://)"
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
        options["ssl"] = tls
    for name in sorted(accepted - _OWN_OPTIONS - _SENTINEL_OPTIONS - _CLUSTER_OPTIONS):
        if name in parsed:
            options[name] = parsed[name]
    for name in _TIMEOUTS:
        value = options.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{shown}: {name} must be a positive number of seconds")
    if options.get("ssl_cert_reqs", "required") not in ("none", "optional", "required"):
        raise ConfigError(f"{shown}: ssl_cert_reqs must be none, optional or required")
    retries = _whole(parsed, "retries", DEFAULT_RETRIES, 0, 10, shown)
    wait_replicas = _whole(parsed, "wait_replicas", 0, 0, 100, shown)
    partitions = _whole(parsed, "partitions", DEFAULT_CLUSTER_PARTITIONS, 1, 1024, shown)
    wait_timeout_ms = _whole(parsed, "wait_timeout_ms", DEFAULT_WAIT_TIMEOUT_MS, 1, 600_000, shown)
    try:
        deadline = float(parsed.get("deadline", DEFAULT_DEADLINE))
    except ValueError:
        deadline = math.nan
    if not (math.isfinite(deadline) and 0 < deadline <= 3600):
        raise ConfigError(f"{shown}: deadline must be a number of seconds from 0 to 3600")
    options.setdefault("socket_timeout", min(DEFAULT_SOCKET_TIMEOUT, deadline))
    options.setdefault("socket_connect_timeout", min(DEFAULT_CONNECT_TIMEOUT, deadline))
    options["decode_responses"] = True
    seeds: tuple[tuple[str, int], ...] = ()
    sentinel_options: dict[str, Any] | None = None
    if kind != "single":
        default_port = SENTINEL_PORT if kind == "sentinel" else 6379
        seeds = _hosts(",".join(hosts) or "localhost", default_port, shown)
    if kind == "sentinel":
        sentinel_options = {
            name: options[name]
            for name in (*_TIMEOUTS, "ssl", *_TLS_OPTIONS)
            if name in options and (name != "ssl" or options[name])
        }
        for name in _SENTINEL_OPTIONS:
            if name in parsed:
                sentinel_options[name.removeprefix("sentinel_")] = str(parsed[name])
    secrets = tuple(str(v) for v in (options.get("password"), parsed.get("sentinel_password")) if v)
    topology = Topology(kind, options, seeds, service, sentinel_options)
    target = _Target(
        url=shown,
        secret=options.get("password"),
        retries=retries,
        socket_timeout=options["socket_timeout"],
        connect_timeout=options["socket_connect_timeout"],
        deadline=deadline,
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout_ms,
        topology=kind,
        partitions=partitions,
        secrets=secrets,
    )
    return topology, target


def _whole(parsed: dict[str, Any], name: str, default: int, low: int, high: int, shown: str) -> int:
    try:
        value = int(parsed.get(name, default))
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{shown}: {name} must be a whole number from {low} to {high}")
    return value


def _probe(topology: Topology, target: _Target) -> None:
    """PING once with short timeouts (for Sentinel: ask the Sentinels for the master first; for
    Cluster: read the slot map); raise if that fails."""
    client: Any = None
    token = DEADLINE.set(time.monotonic() + max(STARTUP_TIMEOUT, 3.0))
    try:
        client = topology.sync_client(short=True)
        client.ping()
    except (AuthenticationError, NoPermissionError) as exc:
        raise ConfigError(
            f"redis at {target.url} refused the credentials: {target.reason(exc)}"
        ) from None
    except ResponseError as exc:  # e.g. a password sent to a server that has none
        raise ConfigError(
            f"redis at {target.url} refused the login: {target.reason(exc)}"
        ) from None
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StorageUnavailable(
            f"cannot reach redis at {target.url}: {target.reason(exc)}"
        ) from None
    finally:
        DEADLINE.reset(token)
        if client is not None:
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

    def __init__(
        self,
        topology: Topology,
        target: _Target,
        namespace: str,
        *,
        partitions: int = 1,
        tagged: bool = False,
    ) -> None:
        """Use from_url(); this constructor does not check that the server answers.

        ``partitions`` and ``tagged`` choose the key layout (notes/index.md): the defaults suit
        one server and keep the key names of earlier releases; from_url() picks the Cluster
        layout for ``redis+cluster://``.
        """
        self.namespace = check_namespace(namespace, "namespace")
        self._topology = topology
        self._target = target
        self._commands = Commands(self.namespace, partitions=partitions, tagged=tagged)
        self._counters = _Counters()
        self._redis: Any = topology.sync_client()
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
        topology, target = _client_options(url)
        if check:
            _probe(topology, target)
        cluster = target.topology == "cluster"
        try:
            # Cluster: data keys and the activity index share per-partition hash tags, so each
            # script touches one slot and the index spreads over `partitions` slots.
            return cls(
                topology,
                target,
                namespace,
                partitions=target.partitions if cluster else 1,
                tagged=cluster,
            )
        except (RedisError, RedisClusterException) as exc:  # a cluster reads its map at once
            raise StorageUnavailable(
                f"cannot reach redis at {target.url}: {target.reason(exc)}"
            ) from None

    @property
    def url(self) -> str:
        return self._target.url

    @property
    def aio(self) -> RedisAsyncOps:
        """The native async side (redis.asyncio), used by AsyncThreadStore."""
        return self._aio

    # -- executor ---------------------------------------------------------------------------------
    def _run(self, cmd: Cmd) -> Any:
        token = DEADLINE.set(time.monotonic() + self._target.deadline)
        try:
            attempt = 0
            while True:
                try:
                    reply = self._send(cmd)
                    break
                except _DRIVER_ERRORS as exc:
                    attempt += 1
                    cmd, delay = self._next_attempt(cmd, exc, attempt)
                    if delay:
                        time.sleep(delay)
        finally:
            DEADLINE.reset(token)
        self._counters.sent()
        return cmd.parse(reply)

    def _send(self, cmd: Cmd) -> Any:
        options = _RAW_REPLY if cmd.raw else _DECODED_REPLY
        if cmd.node is not None:
            return self._client.execute_command(*cmd.args, target_nodes=cmd.node, **options)
        if cmd.write and self._target.wait_replicas:
            return self._send_and_wait(cmd)
        return self._client.execute_command(*cmd.args, **options)

    def _send_and_wait(self, cmd: Cmd) -> Any:
        """The write, then WAIT, on one connection (WAIT counts that connection's writes)."""
        target = self._target
        if self._closed:
            self._client.execute_command(*cmd.args)  # raises "closed"
        client = self._redis
        asking: Any = None
        for _ in range(8):
            if target.topology == "cluster":
                node = asking or client.get_node_from_key(cmd.nskey)
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
            else:
                pipe = client.pipeline(transaction=False)
            if asking is not None:
                pipe.execute_command("ASKING")
            pipe.execute_command(*cmd.args)
            pipe.execute_command("WAIT", target.wait_replicas, target.wait_timeout_ms)
            try:
                *_, reply, acked = pipe.execute()
            except AskError as exc:  # MovedError is an AskError too
                if type(exc) is AskError:
                    asking = client.get_node(host=exc.host, port=exc.port)
                else:
                    asking = None
                    client.nodes_manager.initialize()
                continue
            except (RedisConnectionError, RedisTimeoutError):
                if target.topology == "cluster":
                    self._refresh_cluster_map()
                raise
            if int(acked) < target.wait_replicas:
                self._counters.add("errors")
                raise target.too_few_replicas(int(acked))
            return reply
        raise StorageUnavailable(f"redis at {target.url}: the cluster kept redirecting {cmd.key!r}")

    def _refresh_cluster_map(self) -> None:
        with contextlib.suppress(RedisError, RedisClusterException):  # the next call tries
            self._redis.nodes_manager.initialize()

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
        for node in self._scan_nodes():
            cursor = 0
            while True:
                cursor, keys = self._run(self._commands.scan_page(match, cursor, node))
                for key in keys:
                    if key not in seen:
                        seen.add(key)
                        yield key
                if cursor == 0:
                    break

    def _scan_nodes(self) -> list[Any]:
        """Every master of a cluster; [None] (the one server) otherwise."""
        if self._target.topology != "cluster":
            return [None]
        if self._closed:
            self._client.execute_command("SCAN")  # raises "closed"
        return list(self._redis.get_primaries())

    # -- lists -------------------------------------------------------------------------------------
    def list_create(
        self,
        key: str,
        ttl_seconds: float,
        first: str,
        *,
        scopes: tuple[str, ...] | list[str] = (),
        score: int = 0,
    ) -> bool:
        cmd = self._commands.list_create(key, ttl_seconds, first, scopes=scopes, score=score)
        return bool(self._run(cmd))

    def list_append(
        self,
        key: str,
        value: str,
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        cmd = self._commands.list_append(
            key, value, max_items=max_items, ttl_seconds=ttl_seconds, score=score
        )
        return int(self._run(cmd))

    def list_append_many(
        self,
        key: str,
        values: list[str],
        *,
        max_items: int,
        ttl_seconds: float,
        score: int | None = None,
    ) -> int:
        cmd = self._commands.list_append_many(
            key, values, max_items=max_items, ttl_seconds=ttl_seconds, score=score
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

    def list_ends(self, key: str) -> ListEnds | None:
        result: ListEnds | None = self._run(self._commands.list_ends(key))
        return result

    def list_ends_many(self, keys: list[str]) -> list[ListEnds | None]:
        cmds = self._commands.list_ends_many(keys)
        if _pipelines(self, cmds):
            token = DEADLINE.set(time.monotonic() + self._target.deadline)
            try:
                pipe = self._redis.pipeline(transaction=False)
                for cmd in cmds:
                    pipe.execute_command(*cmd.args)
                return _parsed(self, cmds, pipe.execute())
            except RedisTimeoutError as exc:  # the deadline passed: no second try
                self._counters.add("errors")
                raise self._target.translate(exc, cmds[0].key) from exc
            except _DRIVER_ERRORS:
                pass  # sent one by one below: retries, NOSCRIPT and error translation as usual
            finally:
                DEADLINE.reset(token)
        return [self._run(cmd) for cmd in cmds]

    # -- activity index --------------------------------------------------------------------------
    def index_put(self, key: str, scopes: tuple[str, ...] | list[str], score: int) -> bool:
        return bool(self._run(self._commands.index_put(key, scopes, score)))

    def index_page(
        self,
        scope: str,
        limit: int,
        after: tuple[int, str] | None = None,
        *,
        ascending: bool = False,
    ) -> list[tuple[int, str]]:
        fan = self._commands.index_page(scope, limit, after, ascending=ascending)
        result: list[tuple[int, str]] = fan.combine([self._run(cmd) for cmd in fan.cmds])
        return result

    def index_count(self, scope: str) -> int:
        fan = self._commands.index_count(scope)
        return int(fan.combine([self._run(cmd) for cmd in fan.cmds]))

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
        out["topology"] = self._target.topology
        if self._target.wait_replicas:
            out["wait_replicas"] = self._target.wait_replicas
            out["wait_timeout_ms"] = self._target.wait_timeout_ms
        out["deadline"] = self._target.deadline
        if self._target.topology == "cluster":
            out["partitions"] = self._commands.partitions
        if self._closed:
            out["error"] = "closed"
            return out
        token = DEADLINE.set(time.monotonic() + self._target.deadline)
        try:
            out.update(self._server_facts())
        except (*_DRIVER_ERRORS, OSError) as exc:
            out["error"] = str(self._target.translate(exc, ""))
            return out
        finally:
            DEADLINE.reset(token)
        out["reachable"] = True
        return out

    def _server_facts(self) -> dict[str, Any]:
        """Version, memory, keys and where the data lives: the master and its replicas, or the
        cluster's nodes and how many of the 16384 slots are served."""
        client = self._redis
        kind = self._target.topology
        out: dict[str, Any] = {}
        if kind == "cluster":
            primaries = client.get_primaries()
            nodes = [client.get_redis_connection(n) for n in primaries]
            server = nodes[0].info("server")
            out["used_memory"] = sum(int(n.info("memory")["used_memory"]) for n in nodes)
            out["db_keys"] = sum(int(n.dbsize()) for n in nodes)
            info = nodes[0].execute_command("CLUSTER INFO")
            info = info if isinstance(info, dict) else {}
            out["cluster_state"] = info.get("cluster_state")
            out["slots_covered"] = int(info.get("cluster_slots_ok", 0))
            out["slots_total"] = 16384
            out["cluster_nodes"] = _cluster_nodes(nodes[0].execute_command("CLUSTER NODES"))
        else:
            server = client.info("server")
            out["used_memory"] = client.info("memory").get("used_memory")
            out["db_keys"] = client.dbsize()  # the whole database, not only this namespace
            replication = client.info("replication")
            out["role"] = replication.get("role")
            out["replicas"] = [
                f"{v['ip']}:{v['port']} {v.get('state', '')}".strip()
                for k, v in sorted(replication.items())
                if k.startswith("slave") and isinstance(v, dict)
            ]
            if kind == "sentinel":
                sentinel: Any = self._topology.sentinel(short=True)
                try:
                    host, port = sentinel.discover_master(self._topology.service)
                finally:
                    for s in sentinel.sentinels:
                        s.close()
                out["service"] = self._topology.service
                out["master"] = f"{host}:{port}"
                out["sentinels"] = [f"{h}:{p}" for h, p in self._topology.seeds]
        out["server_version"] = server.get("redis_version")
        out["topology_check"] = _topology_check(out, self._target)
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
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closing: set[asyncio.Future[None]] = set()

    def _client(self) -> Any:
        store = self._store
        if store._closed:
            raise StorageUnavailable(f"the redis store at {store.url} is closed")
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            with self._lock:
                client = self._clients.get(loop)
                if client is None:
                    client = store._topology.async_client()
                    self._clients[loop] = client
        return client

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        store = self._store
        if method in Commands.NAMES:
            return await self._run(getattr(store._commands, method)(*args, **kwargs))
        if method in Commands.FANOUT:
            fan = getattr(store._commands, method)(*args, **kwargs)
            return fan.combine(list(await asyncio.gather(*(self._run(c) for c in fan.cmds))))
        if method == "list_ends_many":
            return await self._list_ends_many(store._commands.list_ends_many(*args, **kwargs))
        if method == "scan":
            return await self._scan(store._commands.scan_match(*args, **kwargs))
        if method in ("close", "shutdown"):
            return await store.aclose()
        if method == "stats":
            return await asyncio.to_thread(store.stats)
        raise AttributeError(f"{type(store).__name__} has no operation {method!r}")

    async def _run(self, cmd: Cmd) -> Any:
        store = self._store
        target = store._target
        if cmd.write and target.wait_replicas:
            # The write and its WAIT must share a connection: the blocking client does that
            # (and follows the cluster's redirections), in a worker thread.
            return await asyncio.to_thread(store._run, cmd)
        client = self._client()
        token = DEADLINE.set(time.monotonic() + target.deadline)
        try:
            async with asyncio.timeout(target.deadline):
                attempt = 0
                while True:
                    try:
                        reply = await self._send(client, cmd)
                        break
                    except _DRIVER_ERRORS as exc:
                        attempt += 1
                        cmd, delay = store._next_attempt(cmd, exc, attempt)
                        if delay:
                            await asyncio.sleep(delay)
        except TimeoutError:  # asyncio.timeout's: redis.asyncio dropped the connection
            store._counters.add("errors")
            raise target.past_deadline() from None
        finally:
            DEADLINE.reset(token)
        store._counters.sent()
        return cmd.parse(reply)

    async def _list_ends_many(self, cmds: list[Cmd]) -> list[ListEnds | None]:
        store = self._store
        if _pipelines(store, cmds):
            client = self._client()
            token = DEADLINE.set(time.monotonic() + store._target.deadline)
            try:
                async with asyncio.timeout(store._target.deadline):
                    pipe = client.pipeline(transaction=False)
                    for cmd in cmds:
                        pipe.execute_command(*cmd.args)
                    return _parsed(store, cmds, await pipe.execute())
            except (TimeoutError, RedisTimeoutError):  # the deadline passed: no second try
                store._counters.add("errors")
                raise store._target.past_deadline() from None
            except _DRIVER_ERRORS:
                pass  # sent one by one below: retries, NOSCRIPT and error translation as usual
            finally:
                DEADLINE.reset(token)
        return [await self._run(cmd) for cmd in cmds]

    @staticmethod
    async def _send(client: Any, cmd: Cmd) -> Any:
        options = _RAW_REPLY if cmd.raw else _DECODED_REPLY
        if cmd.node is not None:
            return await client.execute_command(*cmd.args, target_nodes=cmd.node, **options)
        return await client.execute_command(*cmd.args, **options)

    async def _scan(self, match: str) -> list[str]:
        seen: dict[str, None] = {}
        nodes: list[Any] = [None]
        if self._store._target.topology == "cluster":
            client = self._client()
            try:
                await client.initialize()
            except _DRIVER_ERRORS as exc:
                raise self._store._target.translate(exc, match) from None
            nodes = list(client.get_primaries())
        for node in nodes:
            cursor = 0
            while True:
                cmd = self._store._commands.scan_page(match, cursor, node)
                cursor, keys = await self._run(cmd)
                seen.update(dict.fromkeys(keys))
                if cursor == 0:
                    break
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
