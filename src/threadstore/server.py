"""The MCP server: threadstore's tools over stdio or streamable HTTP, on the official MCP SDK 2.x.

Wiring only. The tools themselves (input models, output models, domain calls) live in
``_tools.py``; this module registers them with their annotations, opens and closes the store in
the server's lifespan, turns every library error into a tool error that tells the model what to
do (``tool_error``, the one place that does), and guards the HTTP transport: loopback only unless
``allow_remote``, a bearer token (THREADSTORE_AUTH_TOKEN) required off loopback and checked on
every request whenever it is set, Host/Origin checks against DNS rebinding.

Principals (``_auth.py``): every tool call runs on a store scoped to its caller (``for_owner``):
the principal of the bearer token (tokens file, THREADSTORE_AUTH_TOKEN, or an OAuth access
token), or the local admin principal on stdio and on unauthenticated loopback HTTP.

In-process use (tests, embedding)::

    async with mcp.Client(build_server(url="memory://")) as client:
        await client.call_tool("thread_create", {"tool_name": "demo"})
"""

from __future__ import annotations

import errno
import hmac
import inspect
import ipaddress
import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError
from starlette.middleware.authentication import AuthenticationMiddleware

from . import _auth
from . import _tools as t
from ._arguments import argument_errors
from ._config import Fallback, Settings, load_settings
from ._errors import (
    ConfigError,
    CorruptData,
    InvalidInput,
    InvalidThreadId,
    StorageUnavailable,
    ThreadFull,
    ThreadNotFound,
    ThreadstoreError,
)
from ._factory import open_storage
from ._models import History, ThreadPage
from ._threads import AsyncThreadStore

log = logging.getLogger("threadstore.server")

Transport = Literal["stdio", "http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MCP_PATH = "/mcp"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MIN_REMOTE_TOKEN = 32
GENERATE_TOKEN = (  # how to make a secret, not a secret
    "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105
)
_ANNOTATED: Any = Annotated  # subscripted at run time with a field's type and constraints

INSTRUCTIONS = """\
threadstore keeps conversation threads alive between tool calls, processes and restarts.
Start one with thread_create and keep its thread_id (the continuation id). Record each message
with thread_append. Rebuild the context of a continued conversation with thread_history (give a
token budget), or page through the raw turns with thread_get. Threads expire after a period
without new turns (store_info shows it); a full thread is continued by a new thread created with
parent_thread_id set to it."""


# -- the tools ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input: type[BaseModel]
    output: type[BaseModel]
    run: Callable[[AsyncThreadStore, Any], Awaitable[BaseModel]]
    annotations: ToolAnnotations


def _hints(*, read_only: bool = False, destructive: bool = False, idempotent: bool = False) -> Any:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "thread_create",
        "Start a conversation thread",
        "Start a new conversation thread and return its thread_id (the continuation id to pass"
        " to the other tools, in this or any later call). Set parent_thread_id to continue a"
        " thread that is full or finished.",
        t.CreateInput,
        t.ThreadCreated,
        t.thread_create,
        _hints(),
    ),
    ToolSpec(
        "thread_append",
        "Add a turn to a thread",
        "Append one turn (a user or assistant message) to a thread; this also refreshes the"
        " thread's expiry.",
        t.AppendInput,
        t.TurnAdded,
        t.thread_append,
        _hints(),
    ),
    ToolSpec(
        "thread_get",
        "Read a thread",
        "A thread's details and a page of its turns, oldest first (offset/limit; next_offset is"
        " set while more turns follow).",
        t.GetInput,
        t.ThreadView,
        t.thread_get,
        _hints(read_only=True, idempotent=True),
    ),
    ToolSpec(
        "thread_history",
        "Conversation history within a token budget",
        "The conversation so far as one text that fits max_tokens: the newest turns of the"
        " thread and of its parent threads, presented oldest first, with the files they mention."
        " Use it to restore context when a conversation continues.",
        t.HistoryInput,
        History,
        t.thread_history,
        _hints(read_only=True, idempotent=True),
    ),
    ToolSpec(
        "thread_list",
        "List threads",
        "Live threads, most recent activity first, without their turns. Pass next_cursor back as"
        " cursor for the next page.",
        t.ListInput,
        ThreadPage,
        t.thread_list,
        _hints(read_only=True, idempotent=True),
    ),
    ToolSpec(
        "thread_delete",
        "Delete a thread",
        "Delete a thread and all its turns for good. deleted is false when no such thread was"
        " live.",
        t.DeleteInput,
        t.ThreadDeleted,
        t.thread_delete,
        _hints(destructive=True, idempotent=True),
    ),
    ToolSpec(
        "store_info",
        "About this thread store",
        "The backend (kind and URL with passwords redacted), namespace, thread expiry, turn"
        " limit, number of live threads and the backend's statistics.",
        t.InfoInput,
        t.StoreInfo,
        t.store_info,
        _hints(read_only=True, idempotent=True),
    ),
)


def tool_error(exc: ThreadstoreError, thread_id: str | None = None) -> ToolError:
    """The one translation of library errors into what the model reads: what happened, then what
    to do about it."""
    if isinstance(exc, InvalidThreadId):
        hint = (
            "Pass thread_id exactly as thread_create returned it (thread_list shows the live"
            " threads). Nothing was changed."
        )
    elif isinstance(exc, ThreadNotFound):
        hint = (
            "Nothing was changed."  # thread_create with a missing parent_thread_id
            if thread_id is None
            else "Use thread_create for that (thread_list shows the threads still live)."
        )
    elif isinstance(exc, ThreadFull):
        # The message already says to start a new thread with this one as its parent.
        hint = "Then append to the new thread; its thread_history includes this one's turns."
    elif isinstance(exc, InvalidInput):
        hint = "Nothing was changed; correct that argument and call again."
    elif isinstance(exc, StorageUnavailable):
        hint = (
            "The thread store is unreachable right now; retry later. If it persists, ask the"
            " user to run `threadstore doctor`."
        )
    elif isinstance(exc, CorruptData):
        hint = (
            "This thread's stored data is damaged: start a new thread with thread_create"
            " (thread_delete removes the damaged one)."
        )
    elif isinstance(exc, ConfigError):
        hint = "The threadstore server is misconfigured; ask the user to run `threadstore doctor`."
    else:
        hint = ""
    text = str(exc).strip()
    if hint and text and text[-1] not in ".!?":
        text += "."
    return ToolError(f"{text} {hint}".strip())


def _parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """The input model's fields as keyword parameters, constraints and descriptions included,
    so the SDK publishes the model's schema and validates against it."""
    params = []
    for name, field in model.model_fields.items():
        extra = Field(description=field.description)
        annotation = _ANNOTATED[(field.annotation, *field.metadata, extra)]
        default = inspect.Parameter.empty if field.is_required() else field.default
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def _caller(authenticated: bool) -> _auth.Principal:
    """The principal of the current tool call: from its access token when the server
    authenticates requests, else the local admin principal (stdio, open loopback HTTP)."""
    access = get_access_token()
    if access is not None:
        return _auth.principal_of(access)
    if authenticated:  # fail closed: an authenticating server never acts for nobody
        raise ToolError("this request carries no authenticated principal; send a bearer token")
    return _auth.LOCAL_PRINCIPAL


def _handler(spec: ToolSpec, authenticated: bool) -> Callable[..., Awaitable[BaseModel]]:
    async def handler(ctx: Context[Any, Any], **arguments: Any) -> BaseModel:
        store: AsyncThreadStore = ctx.request_context.lifespan_context
        principal = _caller(authenticated)
        try:
            args = spec.input.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(argument_errors(spec.name, spec.input, exc)) from None
        scoped = store.for_owner(principal.name, admin=principal.admin)
        call = _auth.current_call.set((principal.name, spec.name))
        try:
            return await spec.run(scoped, args)
        except ThreadstoreError as exc:
            raise tool_error(exc, getattr(args, "thread_id", None)) from None
        except Exception:
            log.exception("threadstore: tool %s failed unexpectedly", spec.name)
            raise ToolError(
                f"{spec.name} failed with an internal error (details are in the server log);"
                " retry once, then ask the user to run `threadstore doctor`."
            ) from None
        finally:
            _auth.current_call.reset(call)

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    signature = inspect.Signature(
        [ctx_param, *_parameters(spec.input)], return_annotation=spec.output
    )
    handler.__signature__ = signature  # type: ignore[attr-defined]
    handler.__annotations__ = {"ctx": Context, "return": spec.output}
    handler.__name__ = handler.__qualname__ = spec.name
    handler.__doc__ = spec.description
    return handler


# -- the server --------------------------------------------------------------------------------
@asynccontextmanager
async def open_store(
    url: str | None = None,
    *,
    namespace: str | None = None,
    ttl_seconds: float | None = None,
    max_turns: int | None = None,
    fallback: Fallback | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[AsyncThreadStore]:
    """An AsyncThreadStore on ``url`` (default THREADSTORE_URL, else the SQLite file in the
    state directory), closed on exit. Opening runs off the event loop."""
    settings = settings or load_settings()
    target = url or settings.url or settings.default_sqlite_url
    opener = partial(
        open_storage, target, namespace=namespace, fallback=fallback, settings=settings
    )
    storage = await anyio.to_thread.run_sync(opener)
    try:
        store = AsyncThreadStore(
            storage,
            ttl_seconds=settings.ttl_seconds if ttl_seconds is None else ttl_seconds,
            max_turns=settings.max_turns if max_turns is None else max_turns,
        )
        log.info(
            "threadstore: %s store at %s (namespace %r, threads expire %g h after their last"
            " turn, at most %d turns)",
            storage.kind,
            storage.url,
            storage.namespace,
            store.ttl_seconds / 3600,
            store.max_turns,
        )
        yield store
    finally:
        aclose = getattr(storage, "aclose", None)  # Redis: close the async pools on this loop
        if aclose is not None:
            await aclose()
        else:
            await anyio.to_thread.run_sync(storage.close)


def build_server(
    store: AsyncThreadStore | None = None,
    *,
    url: str | None = None,
    namespace: str | None = None,
    ttl_seconds: float | None = None,
    max_turns: int | None = None,
    fallback: Fallback | None = None,
    settings: Settings | None = None,
    log_level: LogLevel = "INFO",
    auth: ServerAuth | None = None,
) -> MCPServer[AsyncThreadStore]:
    """The MCP server with threadstore's seven tools.

    With ``store``, the tools use it and the caller closes it. Otherwise the server's lifespan
    opens a store on ``url`` (default THREADSTORE_URL, else the SQLite file in the user's state
    directory; never memory) when the server starts and closes it when the server stops.

    With ``auth`` (``load_auth``), every call acts as the principal of its bearer token (serve
    it with ``http_app``); without, as the local admin principal.
    """
    from . import __version__

    @asynccontextmanager
    async def lifespan(_: MCPServer[AsyncThreadStore]) -> AsyncIterator[AsyncThreadStore]:
        if store is not None:
            yield store
            return
        async with open_store(
            url,
            namespace=namespace,
            ttl_seconds=ttl_seconds,
            max_turns=max_turns,
            fallback=fallback,
            settings=settings,
        ) as opened:
            yield opened

    oauth = auth is not None and auth.oauth is not None
    server: MCPServer[AsyncThreadStore] = MCPServer(
        "threadstore",
        title="threadstore",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=log_level,
        token_verifier=auth.verifier if auth is not None and oauth else None,
        auth=auth.oauth if auth is not None else None,
    )
    if store is not None:
        ttl = store.ttl_seconds
    else:
        ttl = ttl_seconds if ttl_seconds is not None else (settings or load_settings()).ttl_seconds
    for spec in TOOLS:
        server.add_tool(
            _handler(spec, authenticated=auth is not None),
            name=spec.name,
            title=spec.title,
            description=_described(spec, ttl),
            annotations=spec.annotations,
            structured_output=True,
        )
        _validate_arguments_here(server, spec.name)
    return server


def _described(spec: ToolSpec, ttl_seconds: float) -> str:
    """thread_create states the lifetime of what it creates (the MCP guidance for stateful
    tools): the configured expiry, refreshed by every turn."""
    if spec.name != "thread_create":
        return spec.description
    hours = ttl_seconds / 3600
    return (
        f"{spec.description} The thread lives {hours:g} hour{'s' if hours != 1 else ''} after"
        " its last turn (every thread_append refreshes it); an expired or unknown thread_id is"
        " an error. Only you (and the server's admins) can see your threads."
    )


class _RawArguments(ArgModelBase):
    """Accepts any JSON object and hands it on unchanged, so the handler validates it against
    the tool's input model and words the errors (``_arguments.argument_errors``)."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def model_dump_one_level(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


def _validate_arguments_here(server: MCPServer[Any], name: str) -> None:
    """Publish the strict schema (``additionalProperties: false``, so a misspelt argument is an
    error, not silently dropped) but validate in the handler, not in the SDK, whose errors are a
    raw pydantic dump. FuncMetadata documents its fields as read live."""
    tool = server._tool_manager.get_tool(name)
    if tool is None:  # pragma: no cover - registered just above
        return
    loose = tool.fn_metadata.arg_model
    strict: type[BaseModel] = type(
        loose.__name__, (loose,), {"model_config": ConfigDict(extra="forbid")}
    )
    tool.parameters = strict.model_json_schema(by_alias=True)
    tool.fn_metadata.arg_model = _RawArguments


# -- HTTP ----------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_header(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def security_settings(
    host: str, port: int, allowed_hosts: Sequence[str] = ()
) -> TransportSecuritySettings:
    """DNS-rebinding protection: only Host headers naming this server are served (the loopback
    names, the bound address unless it is a wildcard, and ``allowed_hosts``), and only browser
    Origins on those names."""
    names = list(LOOPBACK_NAMES)
    if host not in ("0.0.0.0", "::") and _host_header(host) not in names:  # noqa: S104
        names.append(_host_header(host))
    hosts = [f"{name}:{port}" for name in names]
    for extra in allowed_hosts:
        hosts += (
            [extra, f"{extra}:{port}"] if not extra.endswith("]") and ":" not in extra else [extra]
        )
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


@dataclass(frozen=True, slots=True)
class ServerAuth:
    """How an HTTP server authenticates its callers (``load_auth``)."""

    verifier: _auth.ThreadstoreVerifier
    oauth: AuthSettings | None = None
    """OAuth resource-server settings for the SDK: protected-resource metadata (RFC 9728) and
    ``WWW-Authenticate: Bearer resource_metadata=...`` on 401."""

    @property
    def summary(self) -> str:
        parts = []
        if self.verifier.table is not None:
            parts.append(_auth.describe(self.verifier.table.principals) + " by bearer token")
        if self.oauth is not None:
            parts.append(f"OAuth access tokens from {self.oauth.issuer_url}")
        return ", ".join(parts)


def load_auth(
    settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> ServerAuth | None:
    """The principals the settings define; None when none is set (loopback-only serving).

    Raises ConfigError for a tokens file that others can read, a malformed line (by number), a
    duplicate principal or token, a token shorter than 32 characters, or a bad JWKS file."""
    entries: list[_auth.TokenEntry] = []
    if settings.auth_tokens_file is not None:
        entries += _auth.load_tokens_file(settings.auth_tokens_file).entries
    if settings.auth_token is not None:
        shared = _auth.TokenTable.single(settings.auth_token).entries[0]
        for entry in entries:
            if entry.principal.name == shared.principal.name or hmac.compare_digest(
                entry.digest, shared.digest
            ):
                raise ConfigError(
                    f"THREADSTORE_AUTH_TOKEN stands for the admin principal"
                    f" {shared.principal.name!r}, which THREADSTORE_AUTH_TOKENS_FILE line"
                    f" {entry.line} also defines (by name or token): keep one of them"
                )
        entries.append(shared)
    jwt = None
    oauth = None
    if settings.oauth_issuer and settings.oauth_audience and settings.oauth_jwks:
        jwt = _auth.JwtVerifier(
            _auth.OAuthSettings(
                issuer=settings.oauth_issuer,
                audience=settings.oauth_audience,
                jwks=settings.oauth_jwks,
                admin_scope=settings.oauth_admin_scope,
            )
        )
        resource = settings.oauth_resource
        if resource is None and settings.oauth_audience.startswith(("https://", "http://")):
            resource = settings.oauth_audience
        if resource is None:
            resource = f"http://{_host_header(host)}:{port}{MCP_PATH}"
        oauth = AuthSettings(
            issuer_url=AnyHttpUrl(settings.oauth_issuer),
            resource_server_url=AnyHttpUrl(resource),
            validate_token_resource=False,  # the verifier checks the audience itself
        )
    if not entries and jwt is None:
        return None
    table = _auth.TokenTable(tuple(entries)) if entries else None
    return ServerAuth(_auth.ThreadstoreVerifier(table, jwt), oauth)


class _RequireToken:
    """Bearer-token authentication without OAuth, from the SDK's own parts: the token is
    checked by the verifier, the principal reaches the tools through the SDK's auth context,
    and a request without a valid token gets 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, app: Any, verifier: _auth.ThreadstoreVerifier) -> None:
        self.app = app
        guarded = AuthContextMiddleware(RequireAuthMiddleware(app, []))
        self.http = AuthenticationMiddleware(guarded, backend=BearerAuthBackend(verifier))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)


class _AuditRefusals:
    """One INFO line (``threadstore.audit``) per request refused with 401 or 403."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watched(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                client = scope.get("client") or ("-", 0)
                has_token = any(
                    name.lower() == b"authorization" for name, _ in scope.get("headers", ())
                )
                if message["status"] == 403:
                    reason = "forbidden: insufficient scope or a foreign Origin"
                else:
                    reason = "invalid bearer token" if has_token else "no bearer token"
                method, path = scope.get("method", "-"), scope.get("path", "-")
                _auth.refused_request(method, path, f"{client[0]}", message["status"], reason)
            await send(message)

        await self.app(scope, receive, watched)


def http_app(
    server: MCPServer[AsyncThreadStore],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allowed_hosts: Sequence[str] = (),
    auth: ServerAuth | None = None,
) -> Any:
    """The ASGI app serving ``server`` over streamable HTTP at /mcp (build ``server`` with the
    same ``auth``): Host/Origin checks, bearer authentication, the audit of refusals."""
    app: Any = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=security_settings(host, port, allowed_hosts),
        host=host,
    )
    if auth is not None and auth.oauth is None:
        app = _RequireToken(app, auth.verifier)
    return _AuditRefusals(app)


def check_http_options(
    host: str, *, allow_remote: bool, token: str | None, principals: bool = False
) -> None:
    """Refuse unsafe HTTP settings before anything starts (ConfigError, exit code 2).
    ``principals``: a tokens file or OAuth authenticates the callers (instead of ``token``)."""
    if not host:
        raise ConfigError("--host must not be empty")
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"refusing to listen on {host}, which is not a loopback address: pass --allow-remote"
            " (and set THREADSTORE_AUTH_TOKEN) to serve other machines"
        )
    if not token and not principals:
        raise ConfigError(
            f"refusing to listen on {host} without authentication: set THREADSTORE_AUTH_TOKEN to"
            f" a long random secret ({GENERATE_TOKEN}); clients then send Authorization: Bearer"
            " <token>"
        )
    if token and len(token) < MIN_REMOTE_TOKEN:
        raise ConfigError(
            f"refusing --allow-remote with a THREADSTORE_AUTH_TOKEN of {len(token)} characters:"
            f" use at least {MIN_REMOTE_TOKEN} random characters ({GENERATE_TOKEN})"
        )


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before anything starts, so a port in use is a clear error (exit 2)
    rather than a server that never starts; uvicorn serves on this socket."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} is in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


# -- running -------------------------------------------------------------------------------------
def configure_logging(level: LogLevel = "INFO") -> None:
    """Log to stderr only: in stdio mode stdout carries the protocol."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def serve(
    url: str | None = None,
    *,
    transport: Transport = "stdio",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    allowed_hosts: Sequence[str] = (),
    namespace: str | None = None,
    log_level: LogLevel = "INFO",
    settings: Settings | None = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is interrupted (HTTP).

    The store is opened before the transport starts, so a bad URL or an unreachable backend
    fails at once with its ThreadstoreError, and closed when the transport stops.
    """
    settings = settings or load_settings()
    if transport not in ("stdio", "http"):
        raise ConfigError(f"unknown transport {transport!r}: expected 'stdio' or 'http'")
    auth = None
    sock = None
    if transport == "http":
        auth = load_auth(settings, host=host, port=port)
        check_http_options(
            host,
            allow_remote=allow_remote,
            token=settings.auth_token,
            principals=settings.auth_tokens_file is not None or settings.oauth_enabled,
        )
        sock = listen_socket(host, port)
    configure_logging(log_level)

    async def main() -> None:
        async with open_store(url, namespace=namespace, settings=settings) as store:
            server = build_server(store, log_level=log_level, auth=auth)
            if sock is None:
                await _serve_stdio(server)
            else:
                await _serve_http(server, host, port, allowed_hosts, auth, log_level, sock)

    try:
        anyio.run(main)
    finally:
        if sock is not None:
            sock.close()


class _StdinLines:
    """Lines from stdin when it is a terminal, pipe or socket, read on the event loop (no worker
    thread), so cancelling the server (Ctrl-C) stops it at once instead of waiting for Enter."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line.decode("utf-8", errors="replace")
            await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, 1 << 16)  # readable: returns what is there, never blocks
            if not chunk:
                if not self._buffer:
                    raise StopAsyncIteration
                line, self._buffer = self._buffer, b""
                return line.decode("utf-8", errors="replace")
            self._buffer += chunk


def _stdin_lines() -> _StdinLines | None:
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _StdinLines(fd)
    return None  # a regular file cannot be polled: the SDK's own reader


async def _serve_stdio(server: MCPServer[AsyncThreadStore]) -> None:
    lines: Any = _stdin_lines()
    async with stdio_server(stdin=lines) as (read_stream, write_stream):
        lowlevel = server._lowlevel_server
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


async def _serve_http(
    server: MCPServer[AsyncThreadStore],
    host: str,
    port: int,
    allowed_hosts: Sequence[str],
    auth: ServerAuth | None,
    log_level: LogLevel,
    sock: socket.socket,
) -> None:
    import uvicorn

    app = http_app(server, host=host, port=port, allowed_hosts=allowed_hosts, auth=auth)
    if (
        auth is not None
        and auth.verifier.jwt is not None
        and auth.verifier.jwt.settings.jwks_is_url
    ):
        try:  # fetch the keys now so a wrong URL shows at start (tokens retry it later)
            await anyio.to_thread.run_sync(auth.verifier.jwt.refresh)
        except (OSError, ConfigError, UnicodeDecodeError) as exc:
            log.warning("threadstore: cannot fetch the OAuth JWKS yet: %s", exc)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our stderr handler, not uvicorn's (its access log goes to stdout)
        log_level=log_level.lower(),
        lifespan="on",
        server_header=False,
    )
    web = uvicorn.Server(config)
    log.info(
        "threadstore: MCP over streamable HTTP at http://%s:%d%s (%s)",
        _host_header(host),
        port,
        MCP_PATH,
        auth.summary if auth is not None else "no token: loopback clients only",
    )
    await web.serve(sockets=[sock])
    if not web.started:
        raise StorageUnavailable(f"the HTTP server could not start on {_host_header(host)}:{port}")
