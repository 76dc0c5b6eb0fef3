"""The ``threadstore`` command line: run the MCP server and look after the stored threads.

    threadstore [--url URL] [--namespace NS] [--debug] COMMAND ...

    serve         run the MCP server (stdio; --transport http for streamable HTTP)
    list          live threads, most recent first                      (--json)
    show ID       a thread's turns: role, time, token estimate           (--json)
    history ID    the token-budgeted history a model would get           (--json)
    create        start a thread and print its id                        (--json)
    append ID     add a turn (the text as an argument or on stdin)       (--json)
    delete ID     delete a thread
    stats         backend, counts and statistics                         (--json)
    doctor        check configuration, connectivity, schema, permissions (--json)
    export        every live thread as JSON Lines (stdout or -o FILE)
    import        JSON Lines from FILE or stdin (--replace to overwrite)
    bench         how to run the benchmark suite

--url, --namespace and --debug are accepted before or after the command. An ID may be a unique
prefix of at least 8 characters of a thread id.

The backend is --url, else THREADSTORE_URL (or REDIS_URL), else the SQLite file in the user's
state directory. The command line never falls back to memory: an unreachable backend is an error.
Only commands that write (create, append, delete, import) and serve create a SQLite file; the
others report "no database at PATH".

Exit codes:
    0    success
    1    the command ran and the answer is no: no such thread, ``doctor`` found a problem,
         nothing to import, damaged stored data, an unexpected internal error
    2    usage or configuration error: unknown option, bad URL or setting, invalid thread id or
         input, no database at a SQLite path, an input file that cannot be read, unsafe
         ``serve`` options, an HTTP port in use
    3    the storage backend is unreachable
    130  interrupted (Ctrl-C)

Errors are one line on stderr, ``threadstore: error: ...`` (usage errors add a pointer to
``--help``), with the traceback only under --debug. URLs are printed with their passwords
redacted; the auth token is never printed. Text from the store printed to a terminal has its
control characters shown as ``\\xNN`` (see ``_cli_output``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import stat
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from typer._click.core import Context as ClickContext  # typer 0.2x vendors click
from typer._click.exceptions import (
    BadParameter,
    ClickException,
    NoArgsIsHelpError,
    UsageError,
)
from typer.core import TyperCommand, TyperGroup

from . import _auth
from ._cli_output import for_terminal, is_terminal
from ._config import Settings, load_settings
from ._errors import (
    ConfigError,
    InvalidInput,
    InvalidThreadId,
    StorageUnavailable,
    ThreadNotFound,
    ThreadstoreError,
)
from ._factory import open_storage
from ._history import estimate_tokens
from ._ids import KEY_PREFIX, check_thread_id, thread_key
from ._redact import redact_text, redact_url
from ._storage import Storage
from ._threads import ThreadStore

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_HISTORY_TOKENS = 8000
MIN_PREFIX = 8

BENCH_HELP = """\
The benchmark suite ships with the source checkout, not with the installed package:

    git clone <threadstore repository> && cd threadstore
    python3 -m venv .venv && .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks            # everything, side by side with the peers
    .venv/bin/python -m benchmarks --quick    # the short form CI runs

Results go to benchmarks/results/local/<date>-<host>/ (ignored by git; --out DIR to publish a
run deliberately): JSON, Markdown and one PNG per benchmark. See notes/benchmarks.md."""

F = TypeVar("F", bound=Callable[..., Any])

# -- usage errors, help text, global options anywhere ---------------------------------------------
_GLOBAL_WITH_VALUE = ("--url", "--namespace")
_GLOBAL_FLAGS = ("--debug",)


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move --url, --namespace and --debug to the front, wherever they were given (up to a
    ``--``), so ``threadstore list --url X`` means ``threadstore --url X list``."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.partition("=")[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_WITH_VALUE and "=" in arg):
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


_PLACEHOLDERS = [
    (re.compile(r"\{([A-Z_]+)\}"), r"\1"),  # {ID} -> ID
    (re.compile(r"\[\[([A-Z_]+)\]\]"), r"[\1]"),  # [[FILE]] -> [FILE]
    (re.compile(r" <(?:int range|float range|int|float|str|path|text|boolean|choice)>"), ""),
]


def _clean_help(text: str) -> str:
    for pattern, repl in _PLACEHOLDERS:
        text = pattern.sub(repl, text)
    return text


class _Command(TyperCommand):
    def get_help(self, ctx: ClickContext) -> str:
        return _clean_help(super().get_help(ctx))

    def get_usage(self, ctx: ClickContext) -> str:
        return _clean_help(super().get_usage(ctx))


class _Group(TyperGroup):
    """threadstore's top level: global options anywhere, one-line usage errors, clean help."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def get_help(self, ctx: ClickContext) -> str:
        return _clean_help(super().get_help(ctx))

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()  # bare `threadstore`: the help
            sys.exit(EXIT_USAGE)
        except UsageError as exc:
            sys.exit(usage_error(exc))
        except ClickException as exc:
            typer.echo(f"threadstore: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("threadstore: error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def usage_error(exc: UsageError) -> int:
    """One line, like every other error, plus where the help is."""
    message = exc.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    path = exc.ctx.command_path if exc.ctx is not None else "threadstore"
    typer.echo(f"threadstore: error: {message} (see: {path} --help)", err=True)
    return EXIT_USAGE


app = typer.Typer(
    name="threadstore",
    cls=_Group,
    help="Conversation threads for MCP servers and LLM apps: run the MCP server, inspect, back up."
    "\n\n--url, --namespace and --debug may also follow the command. Where a command takes an"
    " ID, a unique prefix of at least 8 characters will do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def command(name: str | None = None, *, short: str) -> Callable[[F], F]:
    """An ``app.command`` with a one-line description for the command list (never cut)."""
    return app.command(name, cls=_Command, short_help=short)


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


def _safe(text: str) -> Text:
    """Text from the store, for a table or line on stdout: never markup, never escapes."""
    return Text(for_terminal(text, sys.stdout))


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, StorageUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ConfigError | InvalidInput | OSError):
        return EXIT_USAGE
    return EXIT_NO  # ThreadNotFound, ThreadFull, CorruptData, anything unexpected


def _fail(message: str, code: int, *, debug: bool) -> typer.Exit:
    if debug:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"threadstore: error: {for_terminal(message, sys.stderr)}", err=True)
    return typer.Exit(code)


def _command(fn: F) -> F:
    """Run a command body, turning every error into one line on stderr and an exit code.
    The command takes the typer context as ``ctx`` (for --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = _options(kwargs.get("ctx")).debug
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, UsageError):
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


# -- the store -----------------------------------------------------------------------------------
def _target(settings: Settings, url: str | None) -> tuple[str, str]:
    """The backend URL and where it came from."""
    if url:
        return url, "--url"
    if settings.url:
        return settings.url, "environment (THREADSTORE_URL or REDIS_URL)"
    return settings.default_sqlite_url, "default (SQLite file in the state directory)"


def sqlite_file(url: str) -> str | None:
    """The file a sqlite:/// URL names; None for other URLs and for :memory:."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep or not rest.startswith("/"):
        return None
    path = rest[1:].partition("?")[0]
    return None if path in ("", ":memory:") else path


def missing_database(url: str) -> str | None:
    """ "no database at PATH" when ``url`` names a SQLite file that does not exist."""
    path = sqlite_file(url)
    if path is None or os.path.exists(path):
        return None
    return (
        f"no database at {path} (check --url or THREADSTORE_URL; commands that write, and"
        " `threadstore serve`, create it)"
    )


@contextmanager
def _store(ctx: typer.Context, *, write: bool = False) -> Iterator[ThreadStore]:
    """The store of --url; a read on a SQLite file that does not exist creates nothing."""
    opts = _options(ctx)
    settings = load_settings()
    url, _ = _target(settings, opts.url)
    if not write and (problem := missing_database(url)):
        raise ConfigError(problem)
    storage = open_storage(url, namespace=opts.namespace, fallback="fail", settings=settings)
    try:
        yield ThreadStore(storage, ttl_seconds=settings.ttl_seconds, max_turns=settings.max_turns)
    finally:
        storage.close()


_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{7,35}")


def check_id(text: str) -> str:
    """``text`` if it is a thread id or could be a prefix of one (checked before any store is
    opened); InvalidThreadId otherwise."""
    if len(text) != 36 and _PREFIX.fullmatch(text) and len(text.replace("-", "")) >= MIN_PREFIX:
        return text
    try:
        return check_thread_id(text)
    except InvalidThreadId as exc:
        raise InvalidThreadId(
            f"{exc}, or a unique prefix of at least {MIN_PREFIX} of its characters"
        ) from None


def resolve_id(store: ThreadStore, text: str) -> str:
    """A full thread id from a full id or a unique prefix of at least 8 hex characters."""
    if len(check_id(text)) != 36:
        matches = sorted(key[len(KEY_PREFIX) :] for key in store.storage.scan(KEY_PREFIX + text))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise store._logic.not_found(text + "…")
        shown = ", ".join(matches[:10]) + (", …" if len(matches) > 10 else "")
        raise InvalidInput(
            f"thread id prefix {text!r} matches {len(matches)} threads: {shown}; give more of it"
        )
    return text


def _parent_label(store: ThreadStore, parent: str | None) -> str:
    if parent is None:
        return "-"
    alive = store.storage.list_length(thread_key(parent)) > 0
    return parent if alive else f"{parent} (gone: deleted or expired)"


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


def _invocation(opts: Options, *words: str) -> str:
    """A command line that reproduces this one (the store included), for hints to paste."""
    parts = ["threadstore"]
    if opts.url:
        shown = redact_url(opts.url)
        parts += ["--url", shlex.quote(shown)]
    if opts.namespace:
        parts += ["--namespace", shlex.quote(opts.namespace)]
    return " ".join(parts + [shlex.quote(w) for w in words])


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
ThreadArg = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="The thread id, or a unique prefix of it (at least 8 characters).",
        show_default=False,
    ),
]


# -- serve ---------------------------------------------------------------------------------------
def stdio_banner(argv0: str) -> str:
    """The line a person sees when they start the stdio server in a terminal."""
    if os.path.basename(argv0) == "threadstore":
        program = os.path.abspath(argv0) if os.sep in argv0 else argv0
    else:  # python -m threadstore.cli: the script next to this interpreter, if installed
        beside = os.path.join(os.path.dirname(sys.executable), "threadstore")
        program = beside if os.path.exists(beside) else shutil.which("threadstore") or "threadstore"
    return (
        "threadstore: waiting for an MCP client on stdin (stdio transport; typing here does"
        " nothing useful). Ctrl-C quits. To use it, register it with a client, e.g.:"
        f" claude mcp add threadstore -- {program} serve"
    )


@command(short="Run the MCP server (stdio, or HTTP with --transport http).")
@_command
def serve(
    ctx: typer.Context,
    transport: Annotated[
        str,
        typer.Option("--transport", "-t", metavar="stdio|http", help="stdio (default) or http."),
    ] = "stdio",
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="ADDRESS", help="HTTP: address to listen on [127.0.0.1]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="N", help="HTTP: port [8765].", min=1, max=65535),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="HTTP: allow a non-loopback --host (requires THREADSTORE_AUTH_TOKEN of at least"
            " 32 characters).",
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
        str,
        typer.Option(
            "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (to stderr)."
        ),
    ] = "INFO",
) -> None:
    """Run the MCP server: stdio by default, streamable HTTP with --transport http.

    With stdio the server talks to the MCP client that started it, over stdin and stdout; run
    in a terminal it only waits (Ctrl-C quits). HTTP listens on 127.0.0.1:8765 at /mcp. When
    THREADSTORE_AUTH_TOKEN is set every request must send "Authorization: Bearer <token>"; a
    non-loopback --host needs --allow-remote and a token of at least 32 characters.
    """
    if transport not in ("stdio", "http"):
        raise BadParameter(f"must be stdio or http, got {transport!r}", param_hint="'--transport'")
    if transport == "stdio":
        given = [
            name
            for name, value in (
                ("--host", host),
                ("--port", port),
                ("--allow-remote", allow_remote or None),
                ("--allowed-host", allowed_host or None),
            )
            if value is not None
        ]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(
                f"{', '.join(given)} {verb} to --transport http only; the stdio transport has no"
                " address"
            )
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise BadParameter(
            f"must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}", param_hint="'--log-level'"
        )
    try:
        from . import server
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"serve needs the MCP SDK ({exc.name} is missing): pip install 'threadstore[mcp]'"
        ) from exc
    opts = _options(ctx)
    if transport == "stdio" and is_terminal(sys.stdin):
        typer.echo(stdio_banner(sys.argv[0]), err=True)
    server.serve(
        opts.url,
        transport="http" if transport == "http" else "stdio",
        host=host or server.DEFAULT_HOST,
        port=port or server.DEFAULT_PORT,
        allow_remote=allow_remote,
        allowed_hosts=allowed_host or (),
        namespace=opts.namespace,
        log_level=level,  # type: ignore[arg-type]
    )


# -- reading ----------------------------------------------------------------------------------
@command("list", short="Live threads, most recent activity first.")
@_command
def list_(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, max=1000, help="Page size [50].")
    ] = 50,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", metavar="CURSOR", help="next_cursor of the previous page."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", metavar="PRINCIPAL", help="Only the threads this principal owns."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Live threads of every principal (or of --owner), most recent activity first: one page
    (--limit), then a command for the next page. A parent that is gone is marked."""
    with _store(ctx) as store:
        scoped = store if owner is None else store.for_owner(owner)
        page = scoped.list_threads(limit=limit, cursor=cursor)
        parents = {
            row.thread_id: _parent_label(store, row.parent_thread_id) for row in page.threads
        }
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
            _safe(row.owner or "-"),
            _safe(row.tool_name),
            str(row.turn_count),
            _when(row.last_updated_at),
            _duration(row.expires_in_seconds),
            parents[row.thread_id],
        )
    _out().print(table)
    if page.next_cursor:
        words = ["list"] + (["-n", str(limit)] if limit != 50 else [])
        words += ["--owner", owner] if owner is not None else []
        hint = _invocation(_options(ctx), *words, "--cursor", page.next_cursor)
        typer.echo(f"more: {hint}", err=True)


@command(short="A thread and its turns: role, time, token estimate, content.")
@_command
def show(ctx: typer.Context, thread_id: ThreadArg, as_json: JsonFlag = False) -> None:
    """A thread and its turns: role, time, token estimate, content."""
    check_id(thread_id)
    with _store(ctx) as store:
        thread = store.require_thread(resolve_id(store, thread_id))
        left = store.storage.ttl(thread_key(thread.thread_id))
        parent = _parent_label(store, thread.parent_thread_id)
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
    head.add_row("owner", _safe(thread.owner or "- (none: admins only)"))
    head.add_row("tool", _safe(thread.tool_name))
    head.add_row("parent", parent)
    head.add_row("created", _when(thread.created_at))
    head.add_row("last activity", _when(thread.last_updated_at))
    head.add_row("expires in", _duration(left))
    total = sum(estimate_tokens(turn.content) for turn in thread.turns)
    head.add_row("turns", f"{len(thread.turns)} (~{total} tokens)")
    if thread.initial_context:
        head.add_row("context", _safe(json.dumps(thread.initial_context, ensure_ascii=False)))
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
        line = _safe(" · ".join(details))
        line.stylize("bold cyan")
        out.print(line)
        for label, names in (("files", turn.files), ("images", turn.images)):
            if names:
                text = _safe(f"{label}: " + ", ".join(names))
                text.stylize("dim")
                out.print(text)
        out.print(_safe(turn.content))


@command(short="The history a model would get, within a token budget.")
@_command
def history(
    ctx: typer.Context,
    thread_id: ThreadArg,
    max_tokens: Annotated[
        int,
        typer.Option(
            "--max-tokens",
            metavar="N",
            min=1,
            help=f"Token budget, about 4 characters a token [{DEFAULT_HISTORY_TOKENS}].",
        ),
    ] = DEFAULT_HISTORY_TOKENS,
    as_json: JsonFlag = False,
) -> None:
    """The history a model would get: the newest turns of the thread (and its parents) that
    fit in --max-tokens, oldest first."""
    check_id(thread_id)
    with _store(ctx) as store:
        result = store.build_history(resolve_id(store, thread_id), max_tokens=max_tokens)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    if result.text:  # exact when piped (typer.echo would strip what looks like colour codes)
        sys.stdout.write(for_terminal(result.text, sys.stdout) + "\n")
        sys.stdout.flush()
    typer.echo(
        f"{result.turns_included} turns included, {result.turns_omitted} omitted,"
        f" {result.tokens} of {result.max_tokens} tokens",
        err=True,
    )
    if result.note:
        typer.echo(f"note: {for_terminal(result.note, sys.stderr)}", err=True)


# -- writing -------------------------------------------------------------------------------------
def _json_object(raw: str | None, option: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadParameter(f"not JSON ({exc})", param_hint=f"'{option}'") from None
    if not isinstance(value, dict):
        raise BadParameter("must be a JSON object, {...}", param_hint=f"'{option}'")
    return value


@command(short="Start a thread and print its id.")
@_command
def create(
    ctx: typer.Context,
    tool: Annotated[
        str, typer.Option("--tool", metavar="NAME", help="Who starts the thread [cli].")
    ] = "cli",
    parent: Annotated[
        str | None,
        typer.Option("--parent", metavar="ID", help="Continue this thread (a live one)."),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option("--context", metavar="JSON", help="A JSON object to keep with the thread."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a thread and print its full id on stdout (for scripts: ID=$(threadstore create))."""
    initial = _json_object(context, "--context")
    if parent is not None:
        check_id(parent)
    with _store(ctx, write=True) as store:
        parent_id = resolve_id(store, parent) if parent is not None else None
        thread_id = store.create_thread(tool, initial, parent_thread_id=parent_id)
        ttl = store.ttl_seconds
    if as_json:
        _echo_json(
            {"thread_id": thread_id, "parent_thread_id": parent_id, "expires_in_seconds": ttl}
        )
        return
    typer.echo(thread_id)


@command(short="Add a turn to a thread (text as an argument or on stdin).")
@_command
def append(
    ctx: typer.Context,
    thread_id: ThreadArg,
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="[TEXT]", help="The turn's content; omitted or - reads it from stdin."
        ),
    ] = None,
    role: Annotated[
        str, typer.Option("--role", "-r", metavar="user|assistant", help="Who speaks [user].")
    ] = "user",
    files: Annotated[
        list[str] | None,
        typer.Option("--file", metavar="PATH", help="A file this turn refers to (repeatable)."),
    ] = None,
    tool: Annotated[
        str | None, typer.Option("--tool", metavar="NAME", help="The tool of this turn.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="[PROVIDER/]NAME", help="The model that wrote it."),
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", metavar="JSON", help="A JSON object to keep with the turn."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a turn to a thread and refresh its expiry. Without TEXT (or with -) the content is
    read from stdin, to its end."""
    if role not in ("user", "assistant"):
        raise BadParameter(f"must be user or assistant, got {role!r}", param_hint="'--role'")
    check_id(thread_id)
    extra = _json_object(metadata, "--metadata")
    if text is None or text == "-":
        if is_terminal(sys.stdin):
            typer.echo("reading the turn's text from stdin; Ctrl-D ends it", err=True)
        text = sys.stdin.read()
    provider, _, name = (model or "").rpartition("/")
    with _store(ctx, write=True) as store:
        full_id = resolve_id(store, thread_id)
        turn = store.add_turn(
            full_id,
            role,
            text,
            files=files or None,
            tool_name=tool,
            model_provider=provider or None,
            model_name=name or None,
            metadata=extra,
        )
    if as_json:
        typer.echo(turn.model_dump_json(indent=2, exclude_none=True))
        return
    typer.echo(
        f"added {role} turn to {full_id} (~{estimate_tokens(turn.content)} tokens)", err=True
    )


@command(short="Delete a thread and its turns.")
@_command
def delete(ctx: typer.Context, thread_id: ThreadArg) -> None:
    """Delete a thread and its turns (exit code 1 when there is no such thread)."""
    check_id(thread_id)
    with _store(ctx) as store:
        full_id = resolve_id(store, thread_id)
        if not store.delete_thread(full_id):
            raise store._logic.not_found(full_id)
    typer.echo(f"deleted {full_id}", err=True)


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


@command(short="The backend, thread count, limits and statistics.")
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
                key.replace("_", " "), _safe(f"{value:g}" if key == "ttl_hours" else str(value))
            )
    for key, value in info["stats"].items():
        if key not in ("backend", "url", "namespace"):
            table.add_row(key.replace("_", " "), _safe(str(value)))
    _out().print(table)


# -- doctor --------------------------------------------------------------------------------------
Status = Literal["ok", "warn", "FAIL", "skip"]


@dataclasses.dataclass(slots=True)
class Check:
    name: str
    status: Status
    detail: str


def _mode(path: str) -> int | str:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return exc.strerror or str(exc)


def _file_check(path: str, what: str) -> Check:
    """A database file (or its -wal/-shm) others can read or write: a failure."""
    mode = _mode(path)
    if isinstance(mode, str):
        return Check(what, "FAIL", f"{path}: {mode}")
    if mode & 0o077:
        return Check(
            what, "FAIL", f"{path} is open to other users (mode {mode:04o}); run: chmod 600 {path}"
        )
    return Check(what, "ok", f"{path} (mode {mode:04o})")


def _directory_check(path: str) -> Check:
    """Others writing the directory could swap the database: a failure. Others listing it
    (an ordinary 0755 directory) see only file names: a warning."""
    mode = _mode(path)
    if isinstance(mode, str):
        return Check("directory", "FAIL", f"{path}: {mode}")
    if mode & 0o022:
        return Check(
            "directory",
            "FAIL",
            f"{path} is writable by other users (mode {mode:04o}), who could replace the"
            f" database; run: chmod 700 {path}",
        )
    if mode & 0o055:
        return Check(
            "directory",
            "warn",
            f"{path} (mode {mode:04o}) lets other users list the file names, not read the"
            f" database; chmod 700 {path} hides them too",
        )
    return Check("directory", "ok", f"{path} (mode {mode:04o})")


def _sqlite_checks(info: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    version = info.get("schema_version")
    if isinstance(version, int) and version >= 1:
        checks.append(Check("schema", "ok", f"version {version}"))
    else:
        checks.append(Check("schema", "FAIL", f"unexpected schema version {version!r}"))
    path = info.get("path")
    if isinstance(path, str) and path and path != ":memory:":
        checks.append(_directory_check(os.path.dirname(os.path.abspath(path))))
        checks.append(_file_check(path, "database file"))
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                checks.append(_file_check(path + suffix, f"{suffix[1:]} file"))
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


def _index_check(storage: Storage) -> Check:
    """Live threads as listed. On Redis, also threads stored but missing from the listing
    index (written by a release before it): one scan, so on Redis only (SQLite files are
    migrated when opened; a memory store starts empty)."""
    stored = sum(1 for _ in storage.scan(KEY_PREFIX)) if storage.kind == "redis" else None
    live = ThreadStore(storage, ttl_seconds=60, max_turns=1).count_threads()
    if stored is not None and stored > live:
        return Check(
            "threads",
            "warn",
            f"{live} listed of {stored} stored: {stored - live} are not in the listing index"
            " (written by an older release?); run `threadstore reindex`",
        )
    return Check("threads", "ok", f"{live} live")


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
    elif len(token) < 32:
        checks.append(
            Check(
                "auth token",
                "warn",
                f"set but short ({len(token)} characters): --allow-remote needs at least 32",
            )
        )
    else:
        checks.append(Check("auth token", "ok", f"set ({len(token)} characters)"))
    checks.extend(_auth_checks(settings))
    checks.append(_sdk_check())
    url, source = _target(settings, opts.url)
    checks.append(Check("backend URL", "ok", f"{redact_url(url)} from {source}"))
    if problem := missing_database(url):
        checks.append(Check("database", "FAIL", problem))
        return checks
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
        checks.append(_index_check(storage))
    except ThreadstoreError as exc:
        checks.append(Check("store", "FAIL", str(exc)))
    finally:
        storage.close()
    return checks


@command(short="Check settings, connectivity, schema and file permissions.")
@_command
def doctor(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check configuration, connectivity, schema, file permissions and a write/read/delete
    round trip. Exit code 1 on any failure (warnings do not count)."""
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
            table.add_row(c.name, Text(c.status, style=colour[c.status]), _safe(c.detail))
        _out().print(table)
    if not ok:
        raise typer.Exit(EXIT_NO)


# -- export / import -----------------------------------------------------------------------------
@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """A new file that replaces ``path`` only when the block completes.

    The data goes to a temporary file in the same directory, created 0600 with O_EXCL and
    O_NOFOLLOW (threads may be private; nothing planted there is followed or reused), is
    fsynced, then renamed over ``path``. A symlink at ``path`` is replaced, its target never
    written. On any failure the temporary file is removed and ``path`` is left as it was.
    """
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    temp = os.path.join(directory, f".{os.path.basename(target)}.{uuid.uuid4().hex[:12]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@contextmanager
def _stdout_sink() -> Iterator[IO[str]]:
    yield sys.stdout


@command("export", short="Every live thread as JSON Lines (backups, moving stores).")
@_command
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write here, not stdout: a new 0600 file that replaces FILE only when the"
            " export is complete.",
        ),
    ] = None,
) -> None:
    """Every live thread as one JSON line (for backups and moving between backends). With -o
    the previous FILE stays as it was unless the export completes."""
    to_file = output is not None and str(output) != "-"
    written = 0
    with _store(ctx) as store:
        sink = atomic_output(output) if to_file and output is not None else _stdout_sink()
        with sink as f, _progress(None, "exporting threads") as (bar, task):
            for line in store.export_threads():
                f.write(line + "\n")
                written += 1
                bar.advance(task)
            f.flush()
    where = str(output) if to_file else "stdout"
    typer.echo(f"exported {written} threads to {where}", err=True)


@contextmanager
def _progress(total: int | None, what: str) -> Iterator[tuple[Progress, Any]]:
    """A progress line on stderr: a bar of bytes when the size is known, else a count."""
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), DownloadColumn()]
    else:
        columns.append(TextColumn("{task.completed}"))
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=_err(), transient=False) as bar:
        yield bar, bar.add_task(what, total=total)


def _open_input(source: Path | None) -> tuple[IO[bytes], str, int | None]:
    """The input, its name and its size in bytes when it is a regular file (the bar's total).
    Opened once and read once: pipes, FIFOs and ``<(zcat backup.gz)`` work."""
    if source is None or str(source) == "-":
        return sys.stdin.buffer, "stdin", None
    handle = open(source, "rb")  # noqa: SIM115 - closed by the caller
    mode = os.fstat(handle.fileno()).st_mode
    return handle, str(source), os.fstat(handle.fileno()).st_size if stat.S_ISREG(mode) else None


@command("import", short="Store threads from JSON Lines (a file, or stdin).")
@_command
def import_(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]",
            help="JSON Lines from `threadstore export`; stdin when omitted or -.",
            show_default=False,
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite threads that already exist.")
    ] = False,
) -> None:
    """Store threads from JSON Lines (a file, a pipe, or stdin), reading them once. Existing
    threads are kept unless --replace; a bad line stops the import with its line number."""
    handle, name, size = _open_input(source)
    interactive = handle is sys.stdin.buffer and is_terminal(sys.stdin)
    if interactive:
        typer.echo(
            "reading JSON Lines (the output of `threadstore export`) from stdin; Ctrl-D ends"
            " the input",
            err=True,
        )
    read_bytes = 0
    seen = 0
    try:
        with _store(ctx, write=True) as store, _progress(size, "importing threads") as (bar, task):
            if interactive:
                bar.stop()  # no spinner over what the person types

            def lines() -> Iterator[str]:
                nonlocal read_bytes, seen
                for raw in handle:
                    read_bytes += len(raw)
                    if raw.strip():
                        seen += 1
                    bar.advance(task, len(raw) if size is not None else int(bool(raw.strip())))
                    yield raw.decode("utf-8")

            written = store.import_threads(lines(), replace=replace)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    if seen == 0:
        what = "was empty" if read_bytes == 0 else "held no JSON lines"
        raise ThreadNotFound(f"nothing imported: {name} {what}")
    kept = seen - written
    note = f", {kept} already present (kept; --replace overwrites)" if kept else ""
    typer.echo(f"imported {written} threads{note}", err=True)


@command(short="File every live thread in the listing index (after an upgrade).")
@_command
def reindex(ctx: typer.Context) -> None:
    """File every live thread in the activity index that `list` and `stats` read. Needed once
    for a Redis store written by a release before the index (SQLite files are migrated when
    opened); safe while the store is in use and harmless to repeat. Damaged threads are skipped
    with a warning."""
    with _store(ctx) as store:
        before = store.count_threads()
        with _progress(None, "filing threads"):  # one pass over every key: may take a while
            filed = store.reindex()
        after = store.count_threads()
    typer.echo(f"filed {filed} threads; {after} listed (before: {before})", err=True)


@command(short="How to run the benchmark suite.")
def bench() -> None:
    """How to run the benchmark suite (it lives in the source checkout)."""
    typer.echo(BENCH_HELP)


def main() -> None:
    app(prog_name="threadstore")


if __name__ == "__main__":
    main()
