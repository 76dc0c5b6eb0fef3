"""Principals: who is calling, how their bearer tokens are checked, and the audit log.

Three ways to name the caller, all ending in a ``Principal`` (a name and an admin flag):

- a tokens file (THREADSTORE_AUTH_TOKENS_FILE): one ``PRINCIPAL TOKEN [admin]`` per line, the
  token in clear or as ``sha256:<hex>``; checked by ``TokenTable`` in constant time;
- the single shared token (THREADSTORE_AUTH_TOKEN): one admin principal, ``admin``;
- OAuth 2.1 access tokens (THREADSTORE_OAUTH_*): JWTs checked by ``JwtVerifier`` against the
  authorization server's JWKS; the principal is ``sub``, admin with the admin scope.

stdio, and HTTP on loopback without any token, is the single local principal ``local`` (admin).

Nothing here imports the MCP SDK or the JOSE library at module level: the library and the CLI use
the tokens-file parser without either installed. ``server.py`` wires ``ThreadstoreVerifier`` into
the SDK's auth settings.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import stat
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from mcp.server.auth.provider import AccessToken

audit = logging.getLogger("threadstore.audit")

MIN_TOKEN_LENGTH = 32
"""Shortest bearer token accepted for serving other machines (and in a tokens file)."""
MAX_OWNER_LENGTH = 190
"""Longest principal name (it becomes part of an index scope name)."""
LOCAL = "local"
"""The principal of stdio serving, and of HTTP on loopback without any token (an admin)."""
SHARED_TOKEN_PRINCIPAL = "admin"  # noqa: S105 - a principal's name, not a secret
"""The principal THREADSTORE_AUTH_TOKEN stands for (an admin)."""
ADMIN_FLAG = "admin"
_SHA256 = "sha256:"
_HEX = frozenset("0123456789abcdef")
JWT_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
"""Signature algorithms accepted on OAuth access tokens: asymmetric only (never ``none``, never
an HMAC keyed with a public key)."""


def check_owner(owner: object, what: str = "owner") -> str:
    """A principal name: a non-empty str of at most 190 printable characters."""
    if type(owner) is not str:
        raise InvalidInput(f"{what} must be a str, got {type(owner).__name__}")
    if not owner or len(owner) > MAX_OWNER_LENGTH:
        raise InvalidInput(f"{what} must be 1 to {MAX_OWNER_LENGTH} characters, got {len(owner)}")
    if (
        any(unicodedata.category(c)[0] in "CZ" and c != " " for c in owner)
        or owner.strip() != owner
    ):
        raise InvalidInput(
            f"{what} {owner[:40]!r} must be printable text without control characters, tabs,"
            " line breaks or surrounding spaces"
        )
    return owner


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: threads it creates are owned by ``name``; an admin sees every thread."""

    name: str
    admin: bool = False

    def __post_init__(self) -> None:
        check_owner(self.name, "principal")


LOCAL_PRINCIPAL = Principal(LOCAL, admin=True)


# -- audit ----------------------------------------------------------------------------------------
current_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "threadstore_current_call", default=None
)
"""(principal, tool) of the MCP tool call being served, for the audit lines of the layers below."""


def refused(owner: str | None, operation: str, thread_id: str) -> None:
    """Log a call refused because the thread belongs to someone else (never the token)."""
    call = current_call.get()
    principal, tool = call if call is not None else (owner or "-", operation)
    audit.info(
        "refused: principal=%r tool=%s thread=%s (owned by another principal)",
        principal,
        tool,
        thread_id,
    )


def deleted(principal: str, tool: str, thread_id: str, removed: bool) -> None:
    audit.info(
        "delete: principal=%r tool=%s thread=%s deleted=%s",
        principal,
        tool,
        thread_id,
        str(removed).lower(),
    )


def refused_request(method: str, path: str, client: str, status: int, reason: str) -> None:
    audit.info(
        "refused: principal=- tool=- request=%s %s client=%s status=%d (%s)",
        method,
        path,
        client,
        status,
        reason,
    )


# -- tokens ---------------------------------------------------------------------------------------
def token_digest(token: str | bytes) -> bytes:
    raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


def hash_token(token: str) -> str:
    """The ``sha256:<hex>`` form of a token, for a tokens file that must not hold the secret."""
    return _SHA256 + hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_token_strength(token: str, what: str) -> None:
    """Refuse tokens shorter than 32 characters (ConfigError naming ``what``, never the token)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{what} is {len(token)} characters long; a bearer token must be at least"
            f" {MIN_TOKEN_LENGTH} (generate one with: python -c"
            ' "import secrets; print(secrets.token_urlsafe(32))")'
        )


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: Principal
    digest: bytes = field(repr=False)
    line: int = 0


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Principals and the SHA-256 digests of their tokens.

    ``lookup`` hashes the presented token and compares it with every entry's digest using
    ``hmac.compare_digest``, without stopping at a match: the time taken depends on neither the
    token nor which principal it belongs to.
    """

    entries: tuple[TokenEntry, ...]

    def lookup(self, token: str | bytes) -> Principal | None:
        digest = token_digest(token)
        found: Principal | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(e.principal for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def single(cls, token: str, name: str = SHARED_TOKEN_PRINCIPAL) -> TokenTable:
        """THREADSTORE_AUTH_TOKEN: one admin principal."""
        return cls((TokenEntry(Principal(name, admin=True), token_digest(token)),))


def _parse_token(raw: str, number: int) -> bytes:
    if raw.lower().startswith(_SHA256):
        hexpart = raw[len(_SHA256) :].lower()
        if len(hexpart) != 64 or not set(hexpart) <= _HEX:
            raise ConfigError(
                f"line {number}: a hashed token must be sha256: followed by 64 hex digits"
            )
        return bytes.fromhex(hexpart)
    if len(raw) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"line {number}: the token is {len(raw)} characters long; tokens must be at least"
            f" {MIN_TOKEN_LENGTH} (generate one with: python -c"
            ' "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return token_digest(raw)


def parse_tokens(lines: Iterable[str], source: str = "tokens file") -> TokenTable:
    """Parse ``PRINCIPAL TOKEN [admin]`` lines (``#`` starts a comment; blank lines are skipped).

    Raises ConfigError naming the file and the line number of the first malformed line, a
    duplicate principal or a duplicate token. Messages never contain a token.
    """
    entries: list[TokenEntry] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        try:
            if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != ADMIN_FLAG):
                raise ConfigError(
                    f"line {number}: expected 'PRINCIPAL TOKEN' or 'PRINCIPAL TOKEN admin'"
                    f" ({len(fields)} fields found)"
                )
            name = fields[0]
            try:
                principal = Principal(name, admin=len(fields) == 3)
            except InvalidInput as exc:
                raise ConfigError(f"line {number}: {exc}") from None
            digest = _parse_token(fields[1], number)
            if name in names:
                raise ConfigError(
                    f"line {number}: principal {name!r} is already defined on line {names[name]}"
                )
            if digest in digests:
                raise ConfigError(
                    f"line {number}: the same token is already used on line {digests[digest]};"
                    " every principal needs its own token"
                )
        except ConfigError as exc:
            raise ConfigError(f"{source}, {exc}") from None
        names[name] = number
        digests[digest] = number
        entries.append(TokenEntry(principal, digest, number))
    if not entries:
        raise ConfigError(f"{source} defines no principals: add lines 'PRINCIPAL TOKEN [admin]'")
    return TokenTable(tuple(entries))


def file_mode_problem(path: Path) -> str | None:
    """Why a secrets file is unsafe (open to group or others), or None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (
            f"{path}: it is readable or writable by other users (mode {mode:04o});"
            f" run: chmod 600 {path}"
        )
    return None


def load_tokens_file(path: Path | str) -> TokenTable:
    """Read a tokens file, refusing one that group or others can read or write."""
    path = Path(path)
    var = "THREADSTORE_AUTH_TOKENS_FILE"
    try:
        if not path.is_file():
            raise ConfigError(f"{var}: {path} is not a file")
        problem = file_mode_problem(path)
        if problem is not None:
            raise ConfigError(f"{var}: refusing to use {problem}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{var}: {path} is not UTF-8 text") from None
    return parse_tokens(text.splitlines(), f"{var} {path}")


# -- OAuth ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OAuthSettings:
    issuer: str
    audience: str
    jwks: str
    """An https:// or http:// URL, or the path of a local JWKS file."""
    admin_scope: str = ADMIN_FLAG
    leeway_seconds: float = 30.0

    @property
    def jwks_is_url(self) -> bool:
        return self.jwks.startswith(("https://", "http://"))


class JwtVerifier:
    """Checks OAuth access tokens (JWTs): signature by a key of the JWKS (asymmetric algorithms
    only), ``iss``, ``aud``, ``exp`` and ``nbf``, and a ``sub``. Keys from a URL are fetched on
    first use and again (at most once a minute) when a token names an unknown ``kid``."""

    REFRESH_SECONDS = 60.0

    def __init__(self, settings: OAuthSettings) -> None:
        try:
            import jwt
        except ModuleNotFoundError:
            raise ConfigError(
                "THREADSTORE_OAUTH_* needs PyJWT with cryptography:"
                " pip install 'threadstore[oauth]'"
            ) from None

        self._jwt = jwt
        self.settings = settings
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        if not settings.jwks_is_url:
            self._keys = self._parse_jwks(self._read_file(settings.jwks))
            self._fetched_at = time.monotonic()

    @staticmethod
    def _read_file(path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"THREADSTORE_OAUTH_JWKS: cannot read {path}: {exc}") from None

    def _fetch(self) -> str:
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in _config
            self.settings.jwks, headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            body: bytes = response.read(1 << 20)
        return body.decode("utf-8")

    def _parse_jwks(self, text: str) -> dict[str | None, Any]:
        jwt = self._jwt
        try:
            data = json.loads(text)
            keyset = jwt.PyJWKSet.from_dict(data)
        except (ValueError, jwt.exceptions.PyJWKSetError) as exc:
            raise ConfigError(f"THREADSTORE_OAUTH_JWKS: not a usable JWKS ({exc})") from None
        keys: dict[str | None, Any] = {}
        for key in keyset.keys:  # public keys only: a symmetric ("oct") key is never used
            if key.key_type in ("RSA", "EC", "OKP") and key.algorithm_name in JWT_ALGORITHMS:
                keys[key.key_id] = key
        if not keys:
            raise ConfigError("THREADSTORE_OAUTH_JWKS: the JWKS holds no RSA, EC or OKP public key")
        return keys

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def refresh(self) -> None:
        """Fetch the JWKS from its URL now (the server does it once at start)."""
        self._keys = self._parse_jwks(self._fetch())
        self._fetched_at = time.monotonic()

    def _key_for(self, kid: str | None) -> Any | None:
        stale = self._fetched_at is None or (
            time.monotonic() - self._fetched_at >= self.REFRESH_SECONDS
        )
        if self.settings.jwks_is_url and kid not in self._keys and stale:
            try:  # an unknown kid may be a rotated key: refetch, at most once a minute
                self.refresh()
            except (OSError, ConfigError, UnicodeDecodeError) as exc:
                self._fetched_at = time.monotonic()
                logging.getLogger("threadstore.server").warning(
                    "threadstore: cannot fetch the OAuth JWKS: %s", exc
                )
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    def verify(self, token: str) -> tuple[Principal, dict[str, Any]] | None:
        """The principal a valid access token stands for, with its claims; None otherwise
        (logged at INFO with the reason, never the token)."""
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg not in JWT_ALGORITHMS:
                raise jwt.InvalidAlgorithmError(f"algorithm {alg!r} is not accepted")
            key = self._key_for(header.get("kid"))
            if key is None:
                raise jwt.InvalidKeyError("no key of the JWKS matches the token's kid")
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_nbf": True},
            )
            principal = Principal(
                check_owner(claims["sub"], "sub"),
                admin=self.settings.admin_scope in scopes_of(claims),
            )
        except (jwt.PyJWTError, InvalidInput, ValueError) as exc:
            audit.info("refused: OAuth access token rejected (%s)", type(exc).__name__)
            return None
        return principal, claims


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """The token's scopes: ``scope`` (space separated, RFC 9068) or ``scp`` (a list)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [s for s in scp if isinstance(s, str)]
    if isinstance(scp, str):
        return scp.split()
    return []


# -- the SDK's token verifier ---------------------------------------------------------------------
class ThreadstoreVerifier:
    """The MCP SDK ``TokenVerifier``: static tokens (tokens file or THREADSTORE_AUTH_TOKEN) first,
    then OAuth access tokens. The principal travels in ``AccessToken.subject`` and the admin
    flag as the scope ``threadstore:admin``."""

    ADMIN = "threadstore:admin"

    def __init__(self, table: TokenTable | None, jwt_verifier: JwtVerifier | None) -> None:
        self.table = table
        self.jwt = jwt_verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        import anyio.to_thread
        from mcp.server.auth.provider import AccessToken

        principal: Principal | None = None
        claims: dict[str, Any] = {}
        if self.table is not None:
            principal = self.table.lookup(token)
        if principal is None and self.jwt is not None and token.count(".") == 2:
            result = await anyio.to_thread.run_sync(self.jwt.verify, token)
            if result is not None:
                principal, claims = result
        if principal is None:
            return None
        scopes = scopes_of(claims) if claims else []
        if principal.admin:
            scopes.append(self.ADMIN)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and self.jwt is not None:
            exp += self.jwt.settings.leeway_seconds  # the SDK checks it again, without leeway
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or principal.name),
            scopes=scopes,
            expires_at=int(exp) if isinstance(exp, int | float) else None,
            resource=None,
            subject=principal.name,
            claims={"iss": claims["iss"]} if "iss" in claims else None,
        )


def principal_of(access: AccessToken) -> Principal:
    """The principal of a request authenticated by ``ThreadstoreVerifier``."""
    name = access.subject or access.client_id
    return Principal(name, admin=ThreadstoreVerifier.ADMIN in access.scopes)


def describe(principals: Sequence[Principal]) -> str:
    admins = sum(p.admin for p in principals)
    return f"{len(principals)} principal{'s' if len(principals) != 1 else ''} ({admins} admin)"
