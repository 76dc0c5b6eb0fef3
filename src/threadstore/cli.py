"""The ``threadstore`` command line: run the MCP server and look after the stored threads.

    threadstore [--url URL] [--namespace NS] [--debug] COMMAND ...

    serve      run the MCP server (stdio; --transport http for streamable HTTP)
    list       live threads, most recent first                       (--json)
    show ID    a thread's turns: role, time, token estimate            (--json)
    history ID the token-budgeted history a model would get            (--json)
    delete ID  delete a thread
    stats      backend, counts and statistics                          (--json)
    doctor     check configuration, connectivity, schema, permissions  (--json)
    export     every live thread as JSON Lines (stdout or -o FILE)
    import     JSON Lines from FILE or stdin (--replace to overwrite)
    bench      how to run the benchmark suite

The backend is --url, else THREADSTORE_URL (or REDIS_URL), else the SQLite file in the user's
state directory. The command line never falls back to memory: an unreachable backend is an error.

Exit codes:
    0    success
    1    the command ran and the answer is no: no such thread, ``doctor`` found a problem,
         damaged stored data, an unexpected internal error
    2    usage or configuration error: unknown option, bad URL or setting, invalid thread id or
         input, an input file that cannot be read, unsafe ``serve`` options
    3    the storage backend is unreachable
    130  interrupted (Ctrl-C)

Errors are one line on stderr, ``threadstore: error: ...``, with the traceback only under
--debug. URLs are printed with their passwords redacted; the auth token is never printed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import os
import shlex
import stat
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from . import _auth
from ._config import Settings, load_settings
from ._errors import (
    ConfigError,
    InvalidInput,
    StorageUnavailable,
    ThreadNotFound,
    ThreadstoreError,
)
from ._factory import open_storage
from ._history import estimate_tokens
from ._ids import check_thread_id, thread_key
from ._redact import redact_text, redact_url
from ._storage import Storage
from ._threads import ThreadStore

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

BENCH_HELP = """\
The benchmark suite ships with the source checkout, not with the installed package:

    git clone <threadstore repository> && cd threadstore
    pip install -e '.[bench]'
    python -m benchmarks            # everything, side by side with the peers
    python -m benchmarks --quick    # the short form CI runs

Results go to benchmarks/results/<date>-<host>/ (JSON, Markdown and one PNG per benchmark);
see notes/benchmarks.md."""

app = typer.Typer(
    name="threadstore",
    help="Conversation threads for MCP servers and LLM apps: run the MCP server, inspect, back up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    url: str | None = None
    namespace: str | None = None
    debug: bool = False


def _options(ctx: typer.Context | None) -> Options:
    obj = ctx.find_object(Options) if ctx is not None else None
    return obj or Options()


def _out() -> Console:
    # Piped output (scripts, less, tests) gets wide lines rather than squeezed tables.
    wide = None if sys.stdout.isatty() else 160
    return Console(file=sys.stdout, highlight=False, width=wide)


def _err() -> Console:
    return Console(file=sys.stderr, highlight=False)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, StorageUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ConfigError | InvalidInput | OSError):
        return EXIT_USAGE
    return EXIT_NO  # ThreadNotFound, ThreadFull, CorruptData, anything unexpected


def _fail(message: str, code: int, *, debug: bool) -> typer.Exit:
    if debug:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"threadstore: error: {message}", err=True)
    return typer.Exit(code)


def _command(fn: F) -> F:
    """Run a command body, turning every error into one line on stderr and an exit code.
    The command takes the typer context as ``ctx`` (for --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = _options(kwargs.get("ctx")).debug
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ThreadstoreError as exc:
            raise _fail(str(exc), _exit_code(exc), debug=debug) from None
        except OSError as exc:
            raise _fail(redact_text(str(exc)), EXIT_USAGE, debug=debug) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", EXIT_INTERRUPTED, debug=debug) from None
        except Exception as exc:
            detail = redact_text(f"{type(exc).__name__}: {exc}")
            hint = "" if debug else " (run with --debug for the traceback)"
            raise _fail(f"internal error: {detail}{hint}", EXIT_NO, debug=debug) from None

    return wrapper  # type: ignore[return-value]


def _target(settings: Settings, url: str | None) -> tuple[str, str]:
    """The backend URL and where it came from."""
    if url:
        return url, "--url"
    if settings.url:
        return settings.url, "environment (THREADSTORE_URL or REDIS_URL)"
    return settings.default_sqlite_url, "default (SQLite file in the state directory)"


@contextmanager
def _store(ctx: typer.Context) -> Iterator[ThreadStore]:
    opts = _options(ctx)
    settings = load_settings()
    url, _ = _target(settings, opts.url)
    storage = open_storage(url, namespace=opts.namespace, fallback="fail", settings=settings)
    try:
        yield ThreadStore(storage, ttl_seconds=settings.ttl_seconds, max_turns=settings.max_turns)
    finally:
        storage.close()


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


# -- global options ------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"threadstore {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="Backend: memory://, sqlite:///PATH, redis://... "
            "Default: THREADSTORE_URL, else the SQLite file in the state directory.",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", metavar="NS", help="Key namespace (THREADSTORE_NAMESPACE)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks with errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = Options(url=url, namespace=namespace, debug=debug)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ThreadArg = Annotated[str, typer.Argument(metavar="ID", help="The thread id.")]


# -- serve ---------------------------------------------------------------------------------------
@app.command()
@_command
def serve(
    ctx: typer.Context,
    transport: Annotated[
        str,
        typer.Option("--transport", "-t", metavar="stdio|http", help="stdio (default) or http."),
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="HTTP: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP: port.", min=1, max=65535)] = 8765,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="HTTP: allow a non-loopback --host (requires THREADSTORE_AUTH_TOKEN).",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="HTTP: another Host header to accept, e.g. the server's DNS name (repeatable).",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (to stderr).")
    ] = "INFO",
) -> None:
    """Run the MCP server: stdio by default, streamable HTTP with --transport http.

    HTTP listens on 127.0.0.1:8765 at /mcp. When THREADSTORE_AUTH_TOKEN is set every request
    must send "Authorization: Bearer <token>"; a non-loopback --host needs --allow-remote and
    the token.
    """
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, got {transport!r}")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    try:
        from . import server
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"serve needs the MCP SDK ({exc.name} is missing): pip install 'threadstore[mcp]'"
        ) from exc
    opts = _options(ctx)
    server.serve(
        opts.url,
        transport="http" if transport == "http" else "stdio",
        host=host,
        port=port,
        allow_remote=allow_remote,
        allowed_hosts=allowed_host or (),
        namespace=opts.namespace,
        log_level=level,  # type: ignore[arg-type]
    )


# -- reading ----------------------------------------------------------------------------------
@app.command("list")
@_command
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="next_cursor of the previous page.")
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", metavar="PRINCIPAL", help="Only the threads this principal owns."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Live threads of every principal (or of --owner), most recent activity first."""
    with _store(ctx) as store:
        scoped = store if owner is None else store.for_owner(owner)
        page = scoped.list_threads(limit=limit, cursor=cursor)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    if not page.threads:
        typer.echo("no threads", err=True)
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("thread", no_wrap=True, min_width=36)
    table.add_column("owner")
    table.add_column("tool")
    table.add_column("turns", justify="right")
    table.add_column("last activity", no_wrap=True)
    table.add_column("expires in", justify="right", no_wrap=True)
    table.add_column("parent", no_wrap=True)
    for row in page.threads:
        table.add_row(
            row.thread_id,
            Text(row.owner or "-"),
            Text(row.tool_name),
            str(row.turn_count),
            _when(row.last_updated_at),
            _duration(row.expires_in_seconds),
            row.parent_thread_id[:8] + "…" if row.parent_thread_id else "-",
        )
    _out().print(table)
    if page.next_cursor:
        more = f" --owner {shlex.quote(owner)}" if owner is not None else ""
        typer.echo(f"more: threadstore list{more} --cursor {page.next_cursor}", err=True)


@app.command()
@_command
def show(ctx: typer.Context, thread_id: ThreadArg, as_json: JsonFlag = False) -> None:
    """A thread and its turns: role, time, token estimate, content."""
    check_thread_id(thread_id)
    with _store(ctx) as store:
        thread = store.require_thread(thread_id)
        left = store.storage.ttl(thread_key(thread_id))
    if as_json:
        data = json.loads(thread.model_dump_json())
        data["expires_in_seconds"] = None if left is None else round(left, 3)
        _echo_json(data)
        return
    out = _out()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("thread", thread.thread_id)
    head.add_row("owner", Text(thread.owner or "- (none: admins only)"))
    head.add_row("tool", Text(thread.tool_name))
    head.add_row("parent", thread.parent_thread_id or "-")
    head.add_row("created", _when(thread.created_at))
    head.add_row("last activity", _when(thread.last_updated_at))
    head.add_row("expires in", _duration(left))
    total = sum(estimate_tokens(turn.content) for turn in thread.turns)
    head.add_row("turns", f"{len(thread.turns)} (~{total} tokens)")
    if thread.initial_context:
        head.add_row("context", Text(json.dumps(thread.initial_context, ensure_ascii=False)))
    out.print(head)
    for number, turn in enumerate(thread.turns, 1):
        details = [
            f"#{number}",
            turn.role,
            _when(turn.timestamp),
            f"~{estimate_tokens(turn.content)} tokens",
        ]
        if turn.tool_name:
            details.append(f"tool {turn.tool_name}")
        if turn.model_name:
            model = turn.model_name
            details.append(f"{turn.model_provider}/{model}" if turn.model_provider else model)
        out.print()
        out.print(Text(" · ".join(details), style="bold cyan"))
        if turn.files:
            out.print(Text("files: " + ", ".join(turn.files), style="dim"))
        if turn.images:
            out.print(Text("images: " + ", ".join(turn.images), style="dim"))
        out.print(Text(turn.content))


@app.command()
@_command
def history(
    ctx: typer.Context,
    thread_id: ThreadArg,
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", min=0, help="Token budget (about 4 characters a token)."),
    ],
    as_json: JsonFlag = False,
) -> None:
    """The history a model would get: the newest turns of the thread (and its parents) that
    fit in --max-tokens, oldest first."""
    with _store(ctx) as store:
        result = store.build_history(thread_id, max_tokens=max_tokens)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(result.text)
    typer.echo(
        f"{result.turns_included} turns included, {result.turns_omitted} omitted,"
        f" {result.tokens} of {result.max_tokens} tokens",
        err=True,
    )


@app.command()
@_command
def delete(ctx: typer.Context, thread_id: ThreadArg) -> None:
    """Delete a thread and its turns (exit code 1 when there is no such thread)."""
    with _store(ctx) as store:
        if not store.delete_thread(thread_id):
            raise ThreadNotFound(f"thread {thread_id} not found: it never existed or it expired")
    typer.echo(f"deleted {thread_id}", err=True)


def _info(store: ThreadStore) -> dict[str, Any]:
    storage = store.storage
    return {
        "backend": storage.kind,
        "url": storage.url,
        "namespace": storage.namespace,
        "ttl_hours": store.ttl_seconds / 3600,
        "max_turns": store.max_turns,
        "threads": store.count_threads(),
        "stats": storage.stats(),
    }


@app.command()
@_command
def stats(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The backend (URL redacted), thread count, limits and the backend's statistics."""
    with _store(ctx) as store:
        info = _info(store)
    if as_json:
        _echo_json(info)
        return
    table = Table(box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if key != "stats":
            table.add_row(
                key.replace("_", " "), Text(f"{value:g}" if key == "ttl_hours" else str(value))
            )
    for key, value in info["stats"].items():
        if key not in ("backend", "url", "namespace"):
            table.add_row(key.replace("_", " "), Text(str(value)))
    _out().print(table)


# -- doctor --------------------------------------------------------------------------------------
Status = Literal["ok", "warn", "FAIL", "skip"]


@dataclasses.dataclass(slots=True)
class Check:
    name: str
    status: Status
    detail: str


def _mode_problem(path: str, wanted: int, what: str) -> Check:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return Check(what, "FAIL", f"{path}: {exc.strerror}")
    if mode & 0o077:
        return Check(
            what,
            "FAIL",
            f"{path} is open to other users (mode {mode:04o}); run: chmod {wanted:o} {path}",
        )
    return Check(what, "ok", f"{path} (mode {mode:04o})")


def _sqlite_checks(info: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    version = info.get("schema_version")
    if isinstance(version, int) and version >= 1:
        checks.append(Check("schema", "ok", f"version {version}"))
    else:
        checks.append(Check("schema", "FAIL", f"unexpected schema version {version!r}"))
    path = info.get("path")
    if isinstance(path, str) and path and path != ":memory:":
        checks.append(_mode_problem(os.path.dirname(os.path.abspath(path)), 0o700, "directory"))
        checks.append(_mode_problem(path, 0o600, "database file"))
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                checks.append(_mode_problem(path + suffix, 0o600, f"{suffix[1:]} file"))
    return checks


def _round_trip(storage: Storage) -> Check:
    key = f"doctor-probe:{uuid.uuid4()}"
    started = time.perf_counter()
    try:
        storage.set_with_ttl(key, 60, "probe")
        read = storage.get(key)
        removed = storage.delete(key)
    except ThreadstoreError as exc:
        return Check("round trip", "FAIL", str(exc))
    ms = (time.perf_counter() - started) * 1000
    if read != "probe" or not removed or storage.get(key) is not None:
        return Check("round trip", "FAIL", f"wrote 'probe', read back {read!r}")
    return Check("round trip", "ok", f"write, read, delete of a probe key in {ms:.1f} ms")


def _sdk_check() -> Check:
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return Check(
            "mcp SDK", "warn", "not installed: `serve` needs pip install 'threadstore[mcp]'"
        )
    if not version.startswith("2."):
        return Check("mcp SDK", "warn", f"mcp {version}; threadstore is built for mcp 2.x")
    return Check("mcp SDK", "ok", f"mcp {version}")


def _auth_checks(settings: Settings) -> list[Check]:
    """The tokens file (permissions, every line) and the OAuth keys, as `serve` would load them."""
    checks: list[Check] = []
    if settings.auth_tokens_file is not None:
        try:
            table = _auth.load_tokens_file(settings.auth_tokens_file)
        except ConfigError as exc:
            checks.append(Check("tokens file", "FAIL", str(exc)))
        else:
            detail = f"{settings.auth_tokens_file}: {_auth.describe(table.principals)}"
            checks.append(Check("tokens file", "ok", detail))
    if settings.oauth_issuer and settings.oauth_audience and settings.oauth_jwks:
        oauth = _auth.OAuthSettings(
            settings.oauth_issuer,
            settings.oauth_audience,
            settings.oauth_jwks,
            admin_scope=settings.oauth_admin_scope,
        )
        try:
            verifier = _auth.JwtVerifier(oauth)
            if oauth.jwks_is_url:
                verifier.refresh()
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            checks.append(Check("oauth", "FAIL", f"JWKS {oauth.jwks}: {exc}"))
        else:
            checks.append(
                Check(
                    "oauth",
                    "ok",
                    f"issuer {oauth.issuer}, audience {oauth.audience}, {verifier.key_count}"
                    f" signing keys from {oauth.jwks}, admin scope {oauth.admin_scope!r}",
                )
            )
    return checks


def _doctor_checks(opts: Options) -> list[Check]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        return [Check("settings", "FAIL", str(exc))]
    checks = [
        Check(
            "settings",
            "ok",
            f"threads expire {settings.timeout_hours:g} h after their last turn, at most"
            f" {settings.max_turns} turns, namespace {opts.namespace or settings.namespace!r}",
        )
    ]
    token = settings.auth_token
    if token is None:
        checks.append(Check("auth token", "ok", "not set: the HTTP server serves loopback only"))
    elif len(token) < 16:
        checks.append(Check("auth token", "warn", f"set but short ({len(token)} characters)"))
    else:
        checks.append(Check("auth token", "ok", f"set ({len(token)} characters)"))
    checks.extend(_auth_checks(settings))
    checks.append(_sdk_check())
    url, source = _target(settings, opts.url)
    checks.append(Check("backend URL", "ok", f"{redact_url(url)} from {source}"))
    try:
        storage = open_storage(url, namespace=opts.namespace, fallback="fail", settings=settings)
    except ThreadstoreError as exc:
        checks.append(Check("connect", "FAIL", str(exc)))
        return checks
    try:
        info = storage.stats()
        checks.append(Check("connect", "ok", f"{storage.kind} store at {storage.url}"))
        if storage.kind == "sqlite":
            checks.extend(_sqlite_checks(info))
        elif storage.kind == "memory":
            checks.append(Check("persistence", "warn", "memory:// keeps nothing between commands"))
        elif info.get("reachable") is False:
            checks.append(Check("server", "FAIL", str(info.get("error", "unreachable"))))
        elif "server_version" in info:
            checks.append(Check("server", "ok", f"version {info['server_version']}"))
            if "topology_check" in info:  # redis: master and replicas, or cluster nodes
                checks.append(Check("topology", *info["topology_check"]))
        checks.append(_round_trip(storage))
        live = ThreadStore(storage, ttl_seconds=60, max_turns=1).count_threads()
        checks.append(Check("threads", "ok", f"{live} live"))
    except ThreadstoreError as exc:
        checks.append(Check("store", "FAIL", str(exc)))
    finally:
        storage.close()
    return checks


@app.command()
@_command
def doctor(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check configuration, connectivity, schema, file permissions and a write/read/delete
    round trip. Exit code 1 on any problem."""
    checks = _doctor_checks(_options(ctx))
    ok = all(c.status != "FAIL" for c in checks)
    if as_json:
        _echo_json({"ok": ok, "checks": [dataclasses.asdict(c) for c in checks]})
    else:
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("detail")
        colour = {"ok": "green", "warn": "yellow", "FAIL": "bold red", "skip": "dim"}
        for c in checks:
            table.add_row(c.name, Text(c.status, style=colour[c.status]), Text(c.detail))
        _out().print(table)
    if not ok:
        raise typer.Exit(EXIT_NO)


# -- export / import -----------------------------------------------------------------------------
def _progress(*, total: int | None) -> Progress:
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns.append(BarColumn())
    columns += [MofNCompleteColumn() if total is not None else TextColumn("{task.completed}")]
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=_err(), transient=False)


@contextmanager
def _output(path: Path | None) -> Iterator[Any]:
    if path is None or str(path) == "-":
        yield sys.stdout
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # threads may be private
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yield f


@app.command("export")
@_command
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write here (mode 0600), not stdout."),
    ] = None,
) -> None:
    """Every live thread as one JSON line (for backups and moving between backends)."""
    written = 0
    with _store(ctx) as store, _output(output) as f, _progress(total=None) as bar:
        task = bar.add_task("exporting threads", total=None)
        for line in store.export_threads():
            f.write(line + "\n")
            written += 1
            bar.advance(task)
        f.flush()
    where = "stdout" if output is None or str(output) == "-" else str(output)
    typer.echo(f"exported {written} threads to {where}", err=True)


def _lines(path: Path | None) -> tuple[Iterable[str], int | None, Callable[[], None]]:
    if path is None or str(path) == "-":
        return sys.stdin, None, lambda: None
    with open(path, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the returned callback
    return handle, total, handle.close


@app.command("import")
@_command
def import_(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Argument(metavar="[FILE]", help="JSON Lines from `threadstore export`; - is stdin."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite threads that already exist.")
    ] = False,
) -> None:
    """Store threads from JSON Lines (a file, or stdin). Existing threads are kept unless
    --replace; a bad line stops the import with its line number."""
    lines, total, close = _lines(source)
    seen = 0
    try:
        with _store(ctx) as store, _progress(total=total) as bar:
            task = bar.add_task("importing threads", total=total)

            def counted() -> Iterator[str]:
                nonlocal seen
                for line in lines:
                    yield line
                    if line.strip():
                        seen += 1
                        bar.advance(task)

            written = store.import_threads(counted(), replace=replace)
    finally:
        close()
    kept = seen - written
    note = f", {kept} already present (kept; --replace overwrites)" if kept else ""
    typer.echo(f"imported {written} threads{note}", err=True)


@app.command()
def bench() -> None:
    """How to run the benchmark suite (it lives in the source checkout)."""
    typer.echo(BENCH_HELP)


def main() -> None:
    app(prog_name="threadstore")


if __name__ == "__main__":
    main()
