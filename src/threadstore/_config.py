"""Settings from the environment. This is the only module in threadstore that reads os.environ."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._errors import ConfigError
from ._redact import redact_url

DEFAULT_TIMEOUT_HOURS = 3.0
DEFAULT_MAX_TURNS = 50
DEFAULT_NAMESPACE = "threadstore"
SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Fallback = Literal["memory", "fail"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything threadstore takes from the environment, validated."""

    url: str | None = None
    ttl_seconds: float = DEFAULT_TIMEOUT_HOURS * 3600
    max_turns: int = DEFAULT_MAX_TURNS
    namespace: str = DEFAULT_NAMESPACE
    fallback: Fallback = "memory"
    auth_token: str | None = None
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/threadstore")

    @property
    def timeout_hours(self) -> float:
        return self.ttl_seconds / 3600

    @property
    def default_sqlite_url(self) -> str:
        """The CLI's and server's default backend: a SQLite file in the user's state directory."""
        return f"sqlite:///{self.state_dir / 'threads.db'}"


def _bad(var: str, value: str, accepted: str) -> ConfigError:
    shown = redact_url(value) if "://" in value else value
    return ConfigError(f"{var}={shown!r} is not valid: expected {accepted}")


MIN_TIMEOUT_HOURS = 0.001  # 3.6 seconds
MAX_TIMEOUT_HOURS = 24 * 365 * 10.0  # 10 years (the longest TTL a store accepts)
# Plain ASCII decimals only: float() and int() also take "1_000", "1e-7", "inf" and non-ASCII
# digits (full-width ones, say), none of which anyone means in an environment variable.
_DECIMAL_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_WHOLE_RE = re.compile(r"[0-9]+", re.ASCII)


def parse_timeout_hours(value: str, var: str = "CONVERSATION_TIMEOUT_HOURS") -> float:
    accepted = (
        f"a positive number of hours from {MIN_TIMEOUT_HOURS:g} to {MAX_TIMEOUT_HOURS:.0f}"
        " (10 years), written with digits and an optional decimal point, e.g. 3 or 1.5"
    )
    if not _DECIMAL_RE.fullmatch(value):
        raise _bad(var, value, accepted)
    hours = float(value)
    if not math.isfinite(hours) or not MIN_TIMEOUT_HOURS <= hours <= MAX_TIMEOUT_HOURS:
        raise _bad(var, value, accepted)
    return hours


def parse_max_turns(value: str, var: str = "MAX_CONVERSATION_TURNS") -> int:
    if not _WHOLE_RE.fullmatch(value):
        raise _bad(var, value, "a whole number of turns from 1 to 100000")
    turns = int(value)
    if not 1 <= turns <= 100_000:
        raise _bad(var, value, "a whole number of turns from 1 to 100000")
    return turns


def check_namespace(value: str, var: str = "THREADSTORE_NAMESPACE") -> str:
    if not _NAMESPACE_RE.fullmatch(value):
        raise _bad(var, value, "1 to 64 characters from A-Z a-z 0-9 _ . -")
    return value


def check_url(value: str, var: str = "THREADSTORE_URL") -> str:
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _bad(var, value, "a URL starting with " + ", ".join(f"{s}://" for s in SCHEMES))
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every threadstore variable. Raises ConfigError naming the bad one."""
    env = os.environ if environ is None else environ

    def val(name: str) -> str | None:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return None
        return raw.strip()

    url = None
    if (raw := val("THREADSTORE_URL")) is not None:
        url = check_url(raw, "THREADSTORE_URL")
    elif (raw := val("REDIS_URL")) is not None:
        url = check_url(raw, "REDIS_URL")

    hours = DEFAULT_TIMEOUT_HOURS
    if (raw := val("CONVERSATION_TIMEOUT_HOURS")) is not None:
        hours = parse_timeout_hours(raw)

    max_turns = DEFAULT_MAX_TURNS
    if (raw := val("MAX_CONVERSATION_TURNS")) is not None:
        max_turns = parse_max_turns(raw)

    namespace = DEFAULT_NAMESPACE
    if (raw := val("THREADSTORE_NAMESPACE")) is not None:
        namespace = check_namespace(raw)

    fallback: Fallback = "memory"
    if (raw := val("THREADSTORE_FALLBACK")) is not None:
        if raw.lower() not in ("memory", "fail"):
            raise _bad("THREADSTORE_FALLBACK", raw, "'memory' or 'fail'")
        fallback = "fail" if raw.lower() == "fail" else "memory"

    if (raw := val("XDG_STATE_HOME")) is not None and os.path.isabs(raw):
        state_dir = Path(raw) / "threadstore"
    else:
        home = val("HOME")
        base = Path(home) if home else Path.home()
        state_dir = base / ".local" / "state" / "threadstore"

    return Settings(
        url=url,
        ttl_seconds=hours * 3600,
        max_turns=max_turns,
        namespace=namespace,
        fallback=fallback,
        auth_token=val("THREADSTORE_AUTH_TOKEN"),
        state_dir=state_dir,
    )
