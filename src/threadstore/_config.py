"""Settings from the environment. This is the only module in threadstore that reads os.environ."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

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
    auth_tokens_file: Path | None = None
    """THREADSTORE_AUTH_TOKENS_FILE: one principal per line (see _auth.py)."""
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_jwks: str | None = None
    """THREADSTORE_OAUTH_JWKS: an http(s) URL or the path of a local JWKS file."""
    oauth_admin_scope: str = "admin"
    oauth_resource: str | None = None
    """THREADSTORE_OAUTH_RESOURCE: this server's public URL (…/mcp) for the protected-resource
    metadata; default: the audience when it is a URL, else the address served."""
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/threadstore")

    @property
    def oauth_enabled(self) -> bool:
        return self.oauth_issuer is not None

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


def _http_url(value: str, var: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("https", "http") or not rest.strip("/"):
        raise _bad(var, value, "an https:// URL")
    return value


class _OAuth(TypedDict):
    oauth_issuer: str | None
    oauth_audience: str | None
    oauth_jwks: str | None
    oauth_resource: str | None
    oauth_admin_scope: str


def _oauth(val: Callable[[str], str | None]) -> _OAuth:
    names = ("THREADSTORE_OAUTH_ISSUER", "THREADSTORE_OAUTH_AUDIENCE", "THREADSTORE_OAUTH_JWKS")
    issuer, audience, jwks = (val(name) for name in names)
    given = [name for name, value in zip(names, (issuer, audience, jwks), strict=True) if value]
    if given and len(given) != len(names):
        missing = ", ".join(n for n in names if n not in given)
        raise ConfigError(f"OAuth needs all three of {', '.join(names)}: {missing} is not set")
    if issuer is not None:
        _http_url(issuer, "THREADSTORE_OAUTH_ISSUER")
    if jwks is not None and "://" in jwks:
        _http_url(jwks, "THREADSTORE_OAUTH_JWKS")
    resource = val("THREADSTORE_OAUTH_RESOURCE")
    if resource is not None:
        _http_url(resource, "THREADSTORE_OAUTH_RESOURCE")
    scope = val("THREADSTORE_OAUTH_ADMIN_SCOPE")
    if scope is not None and (len(scope.split()) != 1 or len(scope) > 200):
        raise _bad("THREADSTORE_OAUTH_ADMIN_SCOPE", scope, "one scope name without spaces")
    return {
        "oauth_issuer": issuer,
        "oauth_audience": audience,
        "oauth_jwks": jwks,
        "oauth_resource": resource,
        "oauth_admin_scope": scope or "admin",
    }


@dataclass(frozen=True, slots=True)
class CompatSettings:
    """The original conversation-memory module's two settings, read the way it read them: a bad
    value is not an error but a warning (in ``warnings``) and the default."""

    max_turns: int = DEFAULT_MAX_TURNS
    timeout_hours: int | float = 3
    warnings: tuple[str, ...] = ()


def load_compat_settings(environ: Mapping[str, str] | None = None) -> CompatSettings:
    """MAX_CONVERSATION_TURNS and CONVERSATION_TIMEOUT_HOURS for ``threadstore.compat``.

    Unset or blank means the default. Unlike the original, a fractional number of hours is
    honoured (1.5 is ninety minutes); whole numbers stay ints, as the original's were."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []

    raw_turns = (env.get("MAX_CONVERSATION_TURNS") or "").strip()
    max_turns = DEFAULT_MAX_TURNS
    if raw_turns:
        try:
            max_turns = int(raw_turns)
        except ValueError:
            max_turns = 0
        if not 1 <= max_turns <= 1 << 40:
            warnings.append(
                f"Invalid MAX_CONVERSATION_TURNS value ({raw_turns!r}): expected a whole number"
                f" of turns from 1 to 2**40; using the default of {DEFAULT_MAX_TURNS} turns"
            )
            max_turns = DEFAULT_MAX_TURNS

    raw_hours = (env.get("CONVERSATION_TIMEOUT_HOURS") or "").strip()
    default_hours = int(DEFAULT_TIMEOUT_HOURS)
    hours: int | float = default_hours
    if raw_hours:
        try:
            hours = parse_timeout_hours(raw_hours)
        except ConfigError:
            warnings.append(
                f"Invalid CONVERSATION_TIMEOUT_HOURS value ({raw_hours!r}): expected a positive"
                f" number of hours up to 87600, e.g. 3 or 1.5; using the default of"
                f" {default_hours} hours"
            )
            hours = default_hours
        else:
            hours = int(hours) if float(hours).is_integer() else hours
    return CompatSettings(max_turns=max_turns, timeout_hours=hours, warnings=tuple(warnings))


def load_settings(
    environ: Mapping[str, str] | None = None, *, conversation_limits: bool = True
) -> Settings:
    """Read and validate every threadstore variable. Raises ConfigError naming the bad one.

    With ``conversation_limits=False`` CONVERSATION_TIMEOUT_HOURS and MAX_CONVERSATION_TURNS are
    not read (the defaults stand): ``threadstore.compat`` reads those two itself, forgivingly,
    and must still open the store when they hold something it warned about."""
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
    if conversation_limits and (raw := val("CONVERSATION_TIMEOUT_HOURS")) is not None:
        hours = parse_timeout_hours(raw)

    max_turns = DEFAULT_MAX_TURNS
    if conversation_limits and (raw := val("MAX_CONVERSATION_TURNS")) is not None:
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

    tokens_file = None
    if (raw := val("THREADSTORE_AUTH_TOKENS_FILE")) is not None:
        tokens_file = Path(os.path.expanduser(raw))

    return Settings(
        url=url,
        ttl_seconds=hours * 3600,
        max_turns=max_turns,
        namespace=namespace,
        fallback=fallback,
        auth_token=val("THREADSTORE_AUTH_TOKEN"),
        auth_tokens_file=tokens_file,
        state_dir=state_dir,
        **_oauth(val),
    )
