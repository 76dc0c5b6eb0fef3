"""The command line as a new user meets it (issue #17) and as an attack surface (issue #11 items
8-10, port in use, short remote token): every test runs the real entry point in a subprocess,
in a pseudo-terminal where the behaviour is about terminals."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from threadstore import ThreadStore, open_storage
from threadstore.testing import RedisServer, redis_binary

CLI = [sys.executable, "-m", "threadstore.cli"]
ESC = "\x1b"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("THREADSTORE_", "REDIS_"))}
    clean["XDG_STATE_HOME"] = str(tmp_path / "state")
    clean["COLUMNS"] = "200"
    return clean


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/threads.db"


def cli(
    env: dict[str, str], *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, input=input, capture_output=True, text=True, timeout=timeout
    )


def make_thread(url: str, *contents: str, parent: str | None = None, tool: str = "t") -> str:
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    try:
        tid = store.create_thread(tool, parent_thread_id=parent)
        for i, content in enumerate(contents):
            store.add_turn(tid, "user" if i % 2 == 0 else "assistant", content)
        return tid
    finally:
        store.close()


# -- a pseudo-terminal -----------------------------------------------------------------------
class Terminal:
    """A real process whose stdin, stdout and stderr are one pseudo-terminal, which is also its
    controlling terminal (so Ctrl-C typed there is a SIGINT, as in a shell)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=controlling_tty
        )
        os.close(slave)
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never appeared; got {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process exited and closed the terminal
                    chunk = b""
                if not chunk:
                    assert needle in self.output, f"{needle!r} never appeared: {self.output!r}"
                self.output += chunk
        return self.output

    def drain(self) -> bytes:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                return self.output
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return self.output
            if not chunk:
                return self.output
            self.output += chunk

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.drain()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def in_terminal(opened: list[Terminal], env: dict[str, str], *args: str) -> Terminal:
    term = Terminal([*CLI, *args], env)
    opened.append(term)
    return term


# -- #17: the server in a terminal -------------------------------------------------------------
def test_serve_in_a_terminal_says_what_it_waits_for_and_ctrl_c_quits(
    env: dict[str, str], url: str, terminal: list[Terminal]
) -> None:
    term = in_terminal(terminal, env, "--url", url, "serve")
    term.read_until(b"Ctrl-C quits")
    term.read_until(b"threadstore: sqlite store at")  # the store is open: the server runs
    text = term.output.decode()
    assert "waiting for an MCP client on stdin" in text and "claude mcp add threadstore" in text
    # The server reads its stdin: a request typed in the terminal gets its answer.
    term.type(b'{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n')
    term.read_until(b'"id":7')  # the answer (the echo has a space after the colon)
    term.type(b"hello?")  # a person types something, sees nothing happen...
    term.read_until(b"hello?")  # (the terminal's echo)
    term.type(b"\x03")  # ...and presses Ctrl-C
    assert term.wait(timeout=10) == 130  # exits at all, without Enter being pressed
    assert b"Traceback" not in term.output


def test_serve_port_with_stdio_is_a_usage_error(env: dict[str, str], url: str) -> None:
    done = cli(env, "--url", url, "serve", "--port", "9999")
    assert done.returncode == 2
    assert done.stderr.startswith("threadstore: error: --port applies to --transport http only")
    assert done.stderr.count("\n") == 1


# -- #17: the command line ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [["list"], ["show", str(uuid.uuid4())], ["history", str(uuid.uuid4())], ["stats"],
     ["export"], ["doctor"], ["delete", str(uuid.uuid4())]],
)  # fmt: skip
def test_read_commands_create_no_database(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nonexistent-dir" / "x.db"
    done = cli(env, "--url", f"sqlite:///{missing}", *command)
    assert done.returncode != 0
    assert f"no database at {missing}" in done.stdout + done.stderr
    assert not missing.parent.exists()
    default = cli(env, *command)  # the default state file, too
    assert default.returncode != 0 and "no database at" in default.stdout + default.stderr
    assert not (tmp_path / "state").exists()


def test_writes_create_the_database(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "x.db"
    done = cli(env, "--url", f"sqlite:///{path}", "create")
    assert done.returncode == 0, done.stderr
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_global_options_after_the_command(env: dict[str, str], url: str) -> None:
    tid = make_thread(url, "hi")
    done = cli(env, "list", "--json", "--url", url, "--namespace", "threadstore", "--debug")
    assert done.returncode == 0, done.stderr
    assert [t["thread_id"] for t in json.loads(done.stdout)["threads"]] == [tid]
    shown = cli(env, "show", tid[:8], f"--url={url}")
    assert shown.returncode == 0 and tid in shown.stdout


def test_paging_hint_reproduces_the_invocation(env: dict[str, str], url: str) -> None:
    for _ in range(3):
        make_thread(url, "x")
    first = cli(env, "--url", url, "--namespace", "threadstore", "list", "-n", "1")
    assert first.returncode == 0
    hint = next(line for line in first.stderr.splitlines() if line.startswith("more: "))
    assert hint.startswith(f"more: threadstore --url {url} --namespace threadstore list -n 1")
    args = hint.split()[2:]  # paste it: the next page of the same store
    second = cli(env, *args)
    assert second.returncode == 0 and "more: threadstore --url" in second.stderr
    ids = [line.split()[0] for line in (first.stdout + second.stdout).splitlines() if "-4" in line]
    assert len(set(ids)) == 2


def test_id_prefixes_work_everywhere_and_list_shows_full_ids(env: dict[str, str], url: str) -> None:
    parent = make_thread(url, "first")
    child = make_thread(url, "second", parent=parent)
    listing = cli(env, "--url", url, "list")
    assert parent in listing.stdout and "…" not in listing.stdout  # the full parent id
    assert cli(env, "--url", url, "show", parent[:8]).stdout.count(parent) == 1
    assert "second" in cli(env, "--url", url, "history", child[:10]).stdout
    appended = cli(env, "--url", url, "append", child[:8], "third")
    assert appended.returncode == 0 and child in appended.stderr
    created = cli(env, "--url", url, "create", "--parent", child[:8])
    assert created.returncode == 0 and len(created.stdout.strip()) == 36
    unknown = cli(env, "--url", url, "show", "00000000")
    assert unknown.returncode == 1 and "was not found" in unknown.stderr
    short = cli(env, "--url", url, "show", parent[:7])
    assert short.returncode == 2 and "at least 8" in short.stderr
    deleted = cli(env, "--url", url, "delete", parent[:8])
    assert deleted.returncode == 0 and f"deleted {parent}" in deleted.stderr


def test_an_ambiguous_prefix_lists_the_matches(env: dict[str, str], url: str) -> None:
    # Two ids sharing 8 characters: import them (ids are otherwise random).
    a = "abcdef12-0000-4000-8000-000000000001"
    b = "abcdef12-0000-4000-8000-000000000002"
    now = "2026-01-01T00:00:00Z"
    lines = "".join(
        json.dumps(
            {"thread_id": t, "created_at": now, "last_updated_at": now, "tool_name": "t",
             "turns": []}
        ) + "\n"
        for t in (a, b)
    )  # fmt: skip
    assert cli(env, "--url", url, "import", input=lines).returncode == 0
    done = cli(env, "--url", url, "show", "abcdef12")
    assert done.returncode == 2 and a in done.stderr and b in done.stderr
    assert "matches 2 threads" in done.stderr


def test_doctor_warns_on_a_0755_directory_and_fails_on_an_exposed_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "project"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    url = f"sqlite:///{home}/threads.db"
    make_thread(url, "x")
    done = cli(env, "--url", url, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert done.returncode == 0, done.stdout
    assert checks["directory"]["status"] == "warn" and "0755" in checks["directory"]["detail"]
    os.chmod(home / "threads.db", 0o644)
    exposed = cli(env, "--url", url, "doctor", "--json")
    assert exposed.returncode == 1
    os.chmod(home / "threads.db", 0o600)
    os.chmod(home, 0o777)
    writable = cli(env, "--url", url, "doctor", "--json")
    assert writable.returncode == 1 and "could replace" in writable.stdout


@pytest.mark.parametrize(
    "args",
    [["list", "--no-such-option"], ["no-such-command"], ["show"], ["list", "-n", "zero"],
     ["history", str(uuid.uuid4()), "--max-tokens", "0"]],
)  # fmt: skip
def test_usage_errors_are_one_line(env: dict[str, str], url: str, args: list[str]) -> None:
    done = cli(env, "--url", url, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("threadstore: error: ") and "--help)" in done.stderr
    assert "Usage:" not in done.stderr and "Try " not in done.stderr


def test_help_is_clean(env: dict[str, str]) -> None:
    top = cli(env, "--help").stdout
    assert "…" not in top and "..." not in top.split("Commands:")[1]
    for command in ("serve", "list", "show", "history", "create", "append", "delete", "stats",
                    "doctor", "export", "import"):  # fmt: skip
        assert command in top
        text = cli(env, command, "--help").stdout
        for placeholder in ("{", "[[", "<int", "<str>", "<path>", "range>"):
            assert placeholder not in text, (command, placeholder, text)


def test_import_from_a_terminal_says_what_it_reads(
    env: dict[str, str], url: str, terminal: list[Terminal]
) -> None:
    line = json.dumps(
        {"thread_id": str(uuid.uuid4()), "created_at": "2026-01-01T00:00:00Z",
         "last_updated_at": "2026-01-01T00:00:00Z", "tool_name": "t", "turns": []}
    )  # fmt: skip
    term = in_terminal(terminal, env, "--url", url, "import")
    term.read_until(b"Ctrl-D ends the input")
    assert b"JSON Lines" in term.output
    term.type(line.encode() + b"\n\x04")  # a line, then Ctrl-D
    assert term.wait() == 0
    assert b"imported 1 threads" in term.output


def test_create_and_append_by_hand(env: dict[str, str], url: str) -> None:
    created = cli(env, "--url", url, "create", "--tool", "shell", "--context", '{"task": "x"}')
    assert created.returncode == 0, created.stderr
    tid = created.stdout.strip()
    assert cli(env, "--url", url, "append", tid, "hello").returncode == 0
    piped = cli(
        env, "--url", url, "append", tid, "--role", "assistant", "--model", "anthropic/claude",
        "--file", "a.py", "--json", input="from stdin\n",
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["content"] == "from stdin\n"
    shown = json.loads(cli(env, "--url", url, "show", tid, "--json").stdout)
    assert shown["tool_name"] == "shell" and shown["initial_context"] == {"task": "x"}
    assert [t["role"] for t in shown["turns"]] == ["user", "assistant"]
    assert shown["turns"][1]["model_provider"] == "anthropic"
    assert shown["turns"][1]["files"] == ["a.py"]
    bad = cli(env, "--url", url, "append", tid, "x", "--role", "system")
    assert bad.returncode == 2 and "--role" in bad.stderr
    bad_json = cli(env, "--url", url, "create", "--context", "[1]")
    assert bad_json.returncode == 2 and "JSON object" in bad_json.stderr


def test_missing_parent_is_an_error_and_a_gone_parent_is_marked(
    env: dict[str, str], url: str
) -> None:
    ghost = str(uuid.uuid4())
    make_thread(url, "x")
    refused = cli(env, "--url", url, "create", "--parent", ghost)
    assert refused.returncode == 1
    assert "was not found" in refused.stderr and "expire 3 hours after" in refused.stderr
    parent = make_thread(url, "old turn")
    child = make_thread(url, "new turn", parent=parent)
    assert cli(env, "--url", url, "delete", parent).returncode == 0
    shown = cli(env, "--url", url, "show", child).stdout
    assert f"{parent} (gone" in shown
    assert f"{parent} (gone" in cli(env, "--url", url, "list").stdout
    history = cli(env, "--url", url, "history", child)
    assert f"Parent thread {parent} is gone" in history.stdout
    assert history.stdout.count("is gone") == 1 and "old turn" not in history.stdout


def test_history_with_a_budget_too_small_explains(env: dict[str, str], url: str) -> None:
    tid = make_thread(url, "a turn of some length " * 5)
    done = cli(env, "--url", url, "history", tid, "--max-tokens", "5")
    assert done.returncode == 0 and done.stdout == ""
    note = next(line for line in done.stderr.splitlines() if line.startswith("note: "))
    needed = int(note.split("at least ")[1].rstrip("."))
    fits = cli(env, "--url", url, "history", tid, "--max-tokens", str(needed), "--json")
    assert json.loads(fits.stdout)["turns_included"] == 1
    short = cli(env, "--url", url, "history", tid, "--max-tokens", str(needed - 1), "--json")
    assert json.loads(short.stdout)["turns_included"] == 0


# -- #11 item 8: export -o -------------------------------------------------------------------------
def test_export_replaces_the_file_atomically_and_never_follows_a_symlink(
    env: dict[str, str], url: str, tmp_path: Path
) -> None:
    make_thread(url, "private")
    loose = tmp_path / "backup.jsonl"
    loose.write_text("old\n")
    os.chmod(loose, 0o666)
    done = cli(env, "--url", url, "export", "-o", str(loose))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and "private" in loose.read_text()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "planted.jsonl"
    link.symlink_to(victim)
    done = cli(env, "--url", url, "export", "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n"  # the target was not written
    assert not link.is_symlink() and "private" in link.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.skipif(redis_binary() is None, reason="redis-server is not installed")
def test_a_failed_export_leaves_the_previous_backup(env: dict[str, str], tmp_path: Path) -> None:
    backup = tmp_path / "backup.jsonl"
    backup.write_text("the previous good backup\n")
    os.chmod(backup, 0o600)
    with RedisServer() as server:
        store = ThreadStore(open_storage(server.url), ttl_seconds=3600, max_turns=5)
        for _ in range(600):  # a few MB of export: still running when the backend goes
            store.add_turn(store.create_thread("t"), "user", "x" * 4000)
        store.close()
        proc = subprocess.Popen(
            [*CLI, "--url", server.url, "export", "-o", str(backup)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not any(
                p.name.endswith(".tmp") and p.stat().st_size > 0 for p in tmp_path.iterdir()
            ):  # the export has written its first lines
                assert time.monotonic() < deadline and proc.poll() is None, proc.poll()
                time.sleep(0.005)
            assert server.proc is not None
            server.proc.kill()  # the backend is lost mid-way
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 3, err
    assert backup.read_text() == "the previous good backup\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# -- #11 item 9: import reads once -----------------------------------------------------------------
def _export_lines(url: str, n: int) -> str:
    for i in range(n):
        make_thread(url, f"turn {i}")
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    try:
        return "".join(line + "\n" for line in store.export_threads())
    finally:
        store.close()


def test_import_reads_a_pipe_like_process_substitution(
    env: dict[str, str], url: str, tmp_path: Path
) -> None:
    data = _export_lines(url, 3)
    target = f"sqlite:///{tmp_path}/copy.db"
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [*CLI, "--url", target, "import", f"/dev/fd/{read_end}"],  # what <(zcat ...) passes
        env=env,
        pass_fds=(read_end,),
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(read_end)
    with os.fdopen(write_end, "w") as pipe:
        pipe.write(data)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "imported 3 threads" in err


def test_import_reads_a_fifo(env: dict[str, str], url: str, tmp_path: Path) -> None:
    data = _export_lines(url, 2)
    fifo = tmp_path / "threads.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*CLI, "--url", f"sqlite:///{tmp_path}/copy.db", "import", str(fifo)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    with open(fifo, "w") as f:  # blocks until the import opens it
        f.write(data)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "imported 2 threads" in err


def test_import_of_nothing_is_not_success(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = cli(env, "--url", f"sqlite:///{tmp_path}/x.db", "import", str(empty))
    assert done.returncode == 1 and "nothing imported" in done.stderr
    blank = cli(env, "--url", f"sqlite:///{tmp_path}/x.db", "import", input="\n\n")
    assert blank.returncode == 1 and "no JSON lines" in blank.stderr


# -- #11 item 10: control characters ----------------------------------------------------------
HOSTILE = f"{ESC}]52;c;aGVsbG8={ESC}\\ {ESC}]0;pwned\x07 {ESC}[2J {ESC}[8mhidden \x9b31m"


def test_control_sequences_from_the_store_never_reach_the_terminal(
    env: dict[str, str], url: str, terminal: list[Terminal]
) -> None:
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    tid = store.create_thread(f"tool{ESC}[2J")
    store.add_turn(
        tid, "user", HOSTILE + "\nline two\ttabbed", files=[f"f{ESC}]0;x\x07.py"],
        tool_name=f"t{ESC}[8m", model_name=f"m{ESC}]52;c;eA==\x07",
    )  # fmt: skip
    store.close()
    for command in (["show", tid], ["history", tid], ["list"]):
        term = in_terminal(terminal, env, "--url", url, *command)
        assert term.wait() == 0, term.output
        assert b"\x1b]" not in term.output and b"\x1b[2J" not in term.output, command
        assert b"\x1b[8m" not in term.output and b"\xc2\x9b" not in term.output, command
        assert b"\\x1b" in term.output, command  # shown, visibly
    piped = cli(env, "--url", url, "history", tid).stdout  # not a terminal: the exact text
    assert HOSTILE in piped
    data = json.loads(cli(env, "--url", url, "show", tid, "--json").stdout)  # exact JSON
    assert data["turns"][0]["content"] == HOSTILE + "\nline two\ttabbed"
    history = json.loads(cli(env, "--url", url, "history", tid, "--json").stdout)
    assert HOSTILE in history["text"]


# -- serve --transport http --------------------------------------------------------------------
def test_serve_http_on_a_port_in_use(env: dict[str, str], url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = cli(env, "--url", url, "serve", "--transport", "http", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"threadstore: error: port {port} is in use"


def test_allow_remote_refuses_a_short_token(env: dict[str, str], url: str) -> None:
    env["THREADSTORE_AUTH_TOKEN"] = "x" * 31
    done = cli(env, "--url", url, "serve", "-t", "http", "--host", "0.0.0.0", "--allow-remote")
    assert done.returncode == 2
    assert "at least 32" in done.stderr and "secrets.token_urlsafe(32)" in done.stderr
    assert "x" * 31 not in done.stderr  # the token itself is never printed


def test_signals_do_not_leave_a_traceback(env: dict[str, str], url: str) -> None:
    """SIGINT to the stdio server with stdin a pipe (as under a client) also exits promptly."""
    proc = subprocess.Popen(
        [*CLI, "--url", url, "serve"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = b""
        deadline = time.monotonic() + 60
        while b"store at" not in line:
            assert time.monotonic() < deadline
            line = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
