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
SCHEMES = (
    "memory", "sqlite", "redis", "rediss", "unix",
    "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster",
)  # fmt: skip
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


def parse_timeout_hours(value: str, var: str = "CONVERSATION_TIMEOUT_HOURS") -> float:
    try:
        hours = float(value)
    except ValueError:
        raise _bad(var, value, "a positive number of hours, e.g. 3 or 1.5") from None
    if not math.isfinite(hours) or hours <= 0 or hours > 24 * 365 * 10:
        raise _bad(var, value, "a positive number of hours up to 87600 (10 years), e.g. 3 or 1.5")
    return hours


def parse_max_turns(value: str, var: str = "MAX_CONVERSATION_TURNS") -> int:
    try:
        turns = int(value)
    except ValueError:
        raise _bad(var, value, "a whole number of turns from 1 to 100000") from None
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
