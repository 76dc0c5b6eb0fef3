"""The command line, run through typer's CliRunner (and once as a real process) against SQLite
files in a temporary directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from threadstore import ThreadStore, open_storage
from threadstore.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/threads.db"


@pytest.fixture
def thread_id(url: str) -> str:
    store = ThreadStore(open_storage(url), ttl_seconds=3600, max_turns=50)
    try:
        tid = store.create_thread("review", {"pr": 6})
        store.add_turn(tid, "user", "Please look at [bold]cli.py[/bold]", files=["cli.py"])
        store.add_turn(
            tid, "assistant", "Looks good to me.", model_provider="anthropic", model_name="claude"
        )
        return tid
    finally:
        store.close()


def run(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def test_list_shows_threads_and_json_parses(url: str, thread_id: str) -> None:
    result = run("--url", url, "list")
    assert result.exit_code == 0, result.stderr
    assert thread_id in result.stdout and "review" in result.stdout
    data = json.loads(run("--url", url, "list", "--json").stdout)
    assert [t["thread_id"] for t in data["threads"]] == [thread_id]
    assert data["threads"][0]["turn_count"] == 2 and data["next_cursor"] is None


def test_list_pages_with_cursor(url: str, thread_id: str) -> None:
    store = ThreadStore(open_storage(url), ttl_seconds=60, max_turns=5)
    other = store.create_thread("other")
    store.close()
    first = json.loads(run("--url", url, "list", "-n", "1", "--json").stdout)
    assert first["next_cursor"]
    second = run("--url", url, "list", "-n", "1", "--cursor", first["next_cursor"], "--json")
    ids = {first["threads"][0]["thread_id"], json.loads(second.stdout)["threads"][0]["thread_id"]}
    assert ids == {thread_id, other}
    human = run("--url", url, "list", "-n", "1")
    assert "--cursor" in human.stderr


def test_show_renders_roles_times_tokens_and_content(url: str, thread_id: str) -> None:
    result = run("--url", url, "show", thread_id)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert thread_id in out and "review" in out and '{"pr": 6}' in out
    assert "#1 · user · " in out and " UTC · ~9 tokens" in out
    assert "#2 · assistant" in out and "anthropic/claude" in out
    assert "Please look at [bold]cli.py[/bold]" in out  # content is never read as markup
    assert "files: cli.py" in out
    data = json.loads(run("--url", url, "show", thread_id, "--json").stdout)
    assert data["thread_id"] == thread_id and len(data["turns"]) == 2
    assert 0 < data["expires_in_seconds"] <= 3600


def test_history_fits_the_budget(url: str, thread_id: str) -> None:
    result = run("--url", url, "history", thread_id, "--max-tokens", "500")
    assert result.exit_code == 0, result.stderr
    assert "=== CONVERSATION HISTORY ===" in result.stdout and "Looks good" in result.stdout
    assert "2 turns included, 0 omitted" in result.stderr
    data = json.loads(
        run("--url", url, "history", thread_id, "--max-tokens", "60", "--json").stdout
    )
    assert data["tokens"] <= 60 and data["turns_included"] + data["turns_omitted"] == 2
    default = run("--url", url, "history", thread_id)  # a default budget
    assert default.exit_code == 0 and "2 turns included" in default.stderr
    zero = run("--url", url, "history", thread_id, "--max-tokens", "0")
    assert zero.exit_code == 2 and zero.stdout == ""
    assert zero.stderr.startswith("threadstore: error: invalid value for '--max-tokens'")


def test_delete_then_not_found(url: str, thread_id: str) -> None:
    result = run("--url", url, "delete", thread_id)
    assert result.exit_code == 0 and f"deleted {thread_id}" in result.stderr
    again = run("--url", url, "delete", thread_id)
    assert again.exit_code == 1
    assert again.stderr.startswith("threadstore: error: thread ") and "not found" in again.stderr
    shown = run("--url", url, "show", thread_id)
    assert shown.exit_code == 1 and "expire" in shown.stderr


@pytest.mark.parametrize("bad", ["../etc/passwd", "*", str(uuid.uuid4()).upper()])
def test_invalid_ids_are_usage_errors_without_traceback(url: str, bad: str) -> None:
    for command in (["show", bad], ["delete", bad], ["history", bad, "--max-tokens", "10"]):
        result = run("--url", url, *command)
        assert result.exit_code == 2, command
        assert result.stderr.startswith("threadstore: error: invalid thread id")
        assert "Traceback" not in result.output


def test_debug_shows_the_traceback(url: str) -> None:
    result = run("--debug", "--url", url, "show", "nope")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "InvalidThreadId" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("threadstore: error: invalid")


def test_stats_json_and_table(url: str, thread_id: str) -> None:
    result = run("--url", url, "stats", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["backend"] == "sqlite" and info["url"] == url and info["threads"] == 1
    assert info["stats"]["schema_version"] >= 1 and info["max_turns"] == 50
    table = run("--url", url, "stats")
    assert table.exit_code == 0 and "schema version" in table.stdout


def test_a_redis_password_is_never_printed() -> None:
    url = "redis://:hunter2secret@127.0.0.1:1/0"  # nothing listens on port 1
    for command in (["stats"], ["stats", "--json"], ["list"], ["doctor"], ["doctor", "--json"]):
        result = run("--url", url, *command)
        assert "hunter2secret" not in result.output, command
        assert result.exit_code == (1 if command[0] == "doctor" else 3), command
    result = run("--url", url, "stats")
    assert "redis://:***@127.0.0.1:1/0" in result.stderr and "Traceback" not in result.stderr


def test_bad_settings_are_usage_errors(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("--url", "ftp://x", "list").exit_code == 2
    monkeypatch.setenv("CONVERSATION_TIMEOUT_HOURS", "soon")
    result = run("--url", url, "list")
    assert result.exit_code == 2 and "CONVERSATION_TIMEOUT_HOURS" in result.stderr
    doctor = run("--url", url, "doctor", "--json")
    assert doctor.exit_code == 1 and json.loads(doctor.stdout)["ok"] is False


def test_doctor_passes_on_a_healthy_file(url: str, thread_id: str, tmp_path: Path) -> None:
    result = run("--url", url, "doctor", "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is True
    for name in ("settings", "connect", "schema", "directory", "database file", "round trip"):
        assert statuses[name] == "ok", (name, report)
    human = run("--url", url, "doctor")
    assert human.exit_code == 0 and "round trip" in human.stdout


def test_doctor_fails_on_loose_permissions(url: str, thread_id: str, tmp_path: Path) -> None:
    os.chmod(tmp_path / "threads.db", 0o644)
    result = run("--url", url, "doctor", "--json")
    assert result.exit_code == 1
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"]
    names = [c["name"] for c in failed]
    assert names[0] == "database file" and set(names) <= {"database file", "wal file", "shm file"}
    assert "chmod 600" in failed[0]["detail"]


def test_doctor_uses_the_default_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "threadstore" / "threads.db"
    missing = run("doctor", "--json")  # a read: reports the missing file, creates nothing
    assert missing.exit_code == 1
    checks = {c["name"]: c for c in json.loads(missing.stdout)["checks"]}
    assert checks["database"]["status"] == "FAIL"
    assert f"no database at {path}" in checks["database"]["detail"]
    assert not (tmp_path / "state").exists()
    assert run("create").exit_code == 0  # a write creates it
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert str(path) in checks["backend URL"]["detail"]
    assert "default" in checks["backend URL"]["detail"]


def test_export_import_round_trip(url: str, thread_id: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    result = run("--url", url, "export", "-o", str(dump))
    assert result.exit_code == 0 and "exported 1 threads" in result.stderr
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    lines = dump.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["thread_id"] == thread_id

    other = f"sqlite:///{tmp_path}/other.db"
    result = run("--url", other, "import", str(dump))
    assert result.exit_code == 0 and "imported 1 threads" in result.stderr
    again = run("--url", other, "import", "--replace", input=dump.read_text())  # from stdin
    assert again.exit_code == 0 and "imported 1 threads" in again.stderr
    kept = run("--url", other, "import", str(dump))
    assert "imported 0 threads, 1 already present" in kept.stderr
    shown = json.loads(run("--url", other, "show", thread_id, "--json").stdout)
    assert [t["content"] for t in shown["turns"]] == [
        "Please look at [bold]cli.py[/bold]",
        "Looks good to me.",
    ]
    stdout_dump = run("--url", other, "export")
    assert stdout_dump.stdout.splitlines() == lines


def test_import_reports_the_bad_line(url: str, thread_id: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = run("--url", url, "export").stdout
    bad.write_text(good + "\n{oops\n")
    result = run("--url", f"sqlite:///{tmp_path}/x.db", "import", str(bad))
    assert result.exit_code == 2 and "line 3" in result.stderr
    missing = run("--url", url, "import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "nope.jsonl" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_bench_points_to_the_benchmark_suite() -> None:
    result = run("bench")
    assert result.exit_code == 0 and "python -m benchmarks" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert run("no-such-command").exit_code == 2
    assert run("serve", "--transport", "carrier-pigeon").exit_code == 2
    assert run("--version").stdout.startswith("threadstore ")


def test_the_installed_entry_point_runs(url: str, thread_id: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSTORE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-m", "threadstore.cli", "--url", url, "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["threads"][0]["thread_id"] == thread_id
    done = subprocess.run(
        [sys.executable, "-m", "threadstore.cli", "--url", url, "show", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stdout == ""


@pytest.mark.redis
def test_reindex_lists_threads_an_older_release_wrote(redis_url: str) -> None:
    """A Redis store with threads from before the activity index: `list` and `stats` miss them
    until `threadstore reindex` files them; repeating it changes nothing."""
    storage = open_storage(redis_url)
    try:
        store = ThreadStore(storage, ttl_seconds=600, max_turns=5)
        current = store.create_thread("chat")
        legacy = str(uuid.uuid4())  # what an older release left: the thread's list, not filed
        meta = {"v": 1, "thread_id": legacy, "created_at": "2026-01-02T03:04:05+00:00",
                "tool_name": "old"}  # fmt: skip
        assert storage.list_create(f"thread:{legacy}", 600, json.dumps(meta))
    finally:
        storage.close()
    listed = json.loads(run("--url", redis_url, "list", "--json").stdout)["threads"]
    assert [t["thread_id"] for t in listed] == [current]
    assert _threads_check(redis_url) == {
        "name": "threads",
        "status": "warn",
        "detail": "1 listed of 2 stored: 1 are not in the listing index (written by an older"
        " release?); run `threadstore reindex`",
    }

    result = run("--url", redis_url, "reindex")
    assert result.exit_code == 0, result.stderr
    assert "filed 2 threads; 2 listed (before: 1)" in result.stderr
    listed = json.loads(run("--url", redis_url, "list", "--json").stdout)["threads"]
    assert {t["thread_id"] for t in listed} == {current, legacy}
    assert "filed 2 threads; 2 listed (before: 2)" in run("--url", redis_url, "reindex").stderr
    assert _threads_check(redis_url)["status"] == "ok"


def _threads_check(url: str) -> dict[str, str]:
    """The "threads" line of `doctor --json` (warnings do not fail doctor)."""
    result = run("--url", url, "doctor", "--json")
    assert result.exit_code == 0, result.stdout
    check: dict[str, str] = next(
        c for c in json.loads(result.stdout)["checks"] if c["name"] == "threads"
    )
    return check


def test_reindex_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nothing.db"
    result = run("--url", f"sqlite:///{path}", "reindex")
    assert result.exit_code == 2 and "no database at" in result.stderr
    assert not path.exists()
