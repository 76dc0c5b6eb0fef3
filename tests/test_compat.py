"""threadstore.compat: the body of a zen/pal server's utils/conversation_memory.py in one import.

Every behaviour of the original module that servers and their tests rely on, checked against
real backends (memory, SQLite files, Redis where marked); cross-process claims run real
processes of a fake server package. These tests need only the base install (CI also runs them
in an environment with mcp 1.x)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import threadstore
from threadstore import ThreadStore, compat, open_storage
from threadstore._config import load_compat_settings
from threadstore.cli import app
from threadstore.compat import ConversationTurn, ThreadContext

pytestmark = pytest.mark.compat

WORKER = str(Path(__file__).parent / "workers" / "compat_server.py")
UUID = "12345678-1234-1234-1234-123456789012"


@pytest.fixture(autouse=True)
def store_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Each test: a fresh SQLite file as the process-wide store, the default limits."""
    url = f"sqlite:///{tmp_path}/threads.db"
    monkeypatch.setenv("THREADSTORE_URL", url)
    monkeypatch.setattr(compat, "MAX_CONVERSATION_TURNS", 50)
    monkeypatch.setattr(compat, "CONVERSATION_TIMEOUT_SECONDS", 3 * 3600)
    threadstore.reset_storage_backend()
    yield url
    threadstore.reset_storage_backend()


# -- the module's surface -----------------------------------------------------------------------
def test_star_import_gives_every_name_and_nothing_outside_the_base_install() -> None:
    code = (
        "import sys\n"
        "from threadstore.compat import *\n"
        "names = [ConversationTurn, ThreadContext, create_thread, add_turn, get_thread,\n"
        "         get_thread_chain, build_conversation_history, get_conversation_file_list,\n"
        "         get_conversation_image_list, get_storage, uuid]\n"
        "assert MAX_CONVERSATION_TURNS == 50 and CONVERSATION_TIMEOUT_HOURS == 3\n"
        "assert CONVERSATION_TIMEOUT_SECONDS == 10800\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'redis', 'hiredis'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("THREADSTORE_URL", "REDIS_URL")}
    env.pop("MAX_CONVERSATION_TURNS", None)
    env.pop("CONVERSATION_TIMEOUT_HOURS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert set(compat.__all__) <= set(dir(compat))


def test_models_have_the_original_fields_and_are_mutable() -> None:
    turn = ConversationTurn(role="user", content="hi", timestamp="2023-01-01T00:00:00Z")
    assert turn.files is None and turn.model_metadata is None and turn.model_name is None
    context = ThreadContext(
        thread_id=UUID,
        created_at="2023-01-01T00:00:00Z",
        last_updated_at="2023-01-01T00:00:00Z",
        tool_name="chat",
        turns=[turn],
        initial_context={},
    )
    context.last_updated_at = "2024-01-01T00:00:00Z"
    context.turns.append(turn)
    assert context.parent_thread_id is None and context.session_fingerprint is None
    again = ThreadContext.model_validate_json(context.model_dump_json())
    assert again == context and again.last_updated_at == "2024-01-01T00:00:00Z"
    with pytest.raises(ValidationError):
        ThreadContext(thread_id=UUID, tool_name="x", turns=[], initial_context={})  # type: ignore[call-arg]


# -- create / get ---------------------------------------------------------------------------------
def test_create_thread_filters_serialises_and_get_thread_returns_a_context() -> None:
    tid = compat.create_thread(
        "chat",
        {
            "prompt": "Hello",
            "temperature": 0.2,
            "thinking_mode": "high",
            "model": "m",
            "continuation_id": "c",
            "path": Path("/tmp/a.py"),
            "nested": {"files": ["x"]},
        },
    )
    assert uuid.UUID(tid).version == 4 and len(tid) == 36
    context = compat.get_thread(tid)
    assert isinstance(context, ThreadContext)
    assert context.initial_context == {
        "prompt": "Hello",
        "path": "/tmp/a.py",
        "nested": {"files": ["x"]},
    }
    assert context.tool_name == "chat" and context.turns == [] and context.parent_thread_id is None
    assert context.created_at == context.last_updated_at
    assert context.created_at.endswith("+00:00")  # an ISO-8601 string, as the original's


def test_create_thread_accepts_any_parent_string_and_session_fields() -> None:
    for parent in ("not-a-uuid", "", str(uuid.uuid4()), "x" * 5000):
        tid = compat.create_thread("chat", {}, parent_thread_id=parent)
        context = compat.get_thread(tid)
        assert context is not None and context.parent_thread_id == parent
        assert [c.thread_id for c in compat.get_thread_chain(tid)] == [tid]
    tid = compat.create_thread(
        "chat", {}, None, session_fingerprint="fp-1", client_friendly_name="Claude", other=1
    )
    context = compat.get_thread(tid)
    assert context is not None
    assert (context.session_fingerprint, context.client_friendly_name) == ("fp-1", "Claude")


def test_create_thread_takes_a_large_cjk_planner_step() -> None:
    step = "计划步骤" * 6000  # 24,000 characters, 72 KB of UTF-8
    big = {"step": step, "step_number": 1, "files": ["/a.py"] * 1000}
    tid = compat.create_thread("planner", big)
    context = compat.get_thread(tid)
    assert context is not None and context.initial_context["step"] == step
    huge = {"blob": "x" * (6 * 1024 * 1024)}  # several MB, as an MCP client may send
    tid = compat.create_thread("chat", huge)
    context = compat.get_thread(tid)
    assert context is not None and len(context.initial_context["blob"]) == 6 * 1024 * 1024


def test_create_thread_draws_its_id_through_the_uuid_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The original's users fix ids in their tests by patching conversation_memory.uuid.uuid4;
    # a second create with the same id replaces the first, as the original's setex did.
    monkeypatch.setattr(compat.uuid, "uuid4", lambda: UUID)
    assert compat.create_thread("chat", {"n": 1}) == UUID
    assert compat.add_turn(UUID, "user", "one") is True
    assert compat.create_thread("chat", {"n": 2}) == UUID
    context = compat.get_thread(UUID)
    assert context is not None and context.initial_context == {"n": 2} and context.turns == []


def test_a_patched_uuid4_may_return_any_string(monkeypatch: pytest.MonkeyPatch) -> None:
    # The original stored whatever its uuid4 returned; get_thread then answers None for a
    # non-UUID id, as the original did.
    monkeypatch.setattr(compat.uuid, "uuid4", lambda: "test-uuid-123")
    assert compat.create_thread("planner", {"step": "s"}) == "test-uuid-123"
    assert compat.get_thread("test-uuid-123") is None
    assert compat.add_turn("test-uuid-123", "user", "x") is False


def test_get_thread_answers_none_for_what_it_cannot_return() -> None:
    for bad in ("", "invalid-uuid", "../../etc/passwd", str(uuid.uuid4())):
        assert compat.get_thread(bad) is None
    assert compat.get_thread_chain("invalid") == []
    assert compat.get_thread_chain(str(uuid.uuid4())) == []


# -- add_turn -------------------------------------------------------------------------------------
def test_add_turn_accepts_everything_the_original_accepted() -> None:
    tid = compat.create_thread("chat", {})
    big = "y" * (3 * 1024 * 1024)
    meta = {"usage": {"in": 1}, "path": Path("/p"), "nan": float("nan")}
    assert compat.add_turn(tid, "system", "")
    assert compat.add_turn(tid, "", "x", files=[""], images=[], tool_name="", model_name="")
    assert compat.add_turn(tid, "assistant", big, model_provider="p", model_metadata=meta)
    assert compat.add_turn(tid, "tool", "t", files=["/" + "d" * 5000])
    context = compat.get_thread(tid)
    assert context is not None
    assert [t.role for t in context.turns] == ["system", "", "assistant", "tool"]
    assert context.turns[0].content == "" and context.turns[2].content == big
    assert context.turns[2].model_metadata == {"usage": {"in": 1}, "path": "/p", "nan": None}
    assert context.turns[1].files == [""] and context.turns[1].tool_name == ""
    assert all(t.timestamp.endswith("+00:00") for t in context.turns)
    assert context.last_updated_at == context.turns[-1].timestamp


def test_add_turn_false_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="threadstore.compat")
    assert compat.add_turn(str(uuid.uuid4()), "user", "x") is False
    assert "not found" in caplog.text
    assert compat.add_turn("bad", "user", "x") is False
    assert "not a thread id" in caplog.text
    compat.MAX_CONVERSATION_TURNS = 2  # restored by the fixture's monkeypatch
    tid = compat.create_thread("chat", {})
    assert compat.add_turn(tid, "user", "1") and compat.add_turn(tid, "assistant", "2")
    caplog.clear()
    assert compat.add_turn(tid, "user", "3") is False
    assert "MAX_CONVERSATION_TURNS (2)" in caplog.text
    compat.MAX_CONVERSATION_TURNS = 3
    assert compat.add_turn(tid, "user", "3") is True


def test_add_turn_refusal_of_an_oversized_turn_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "COMPAT_MAX_BYTES", 1000)
    tid = compat.create_thread("chat", {})
    assert compat.add_turn(tid, "user", "z" * 2000) is False
    assert "refused" in caplog.text and "bytes" in caplog.text


def test_add_turn_metadata_that_is_not_json_answers_false(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tid = compat.create_thread("chat", {})
    assert compat.add_turn(tid, "assistant", "x", model_metadata={"response": object()}) is False
    assert "cannot be stored as JSON" in caplog.text
    context = compat.get_thread(tid)
    assert context is not None and context.turns == []


def test_add_turn_wrong_types_raise_only_for_a_live_thread() -> None:
    tid = compat.create_thread("chat", {})
    with pytest.raises(ValidationError):
        compat.add_turn(tid, "user", None)  # type: ignore[arg-type]
    assert compat.add_turn(str(uuid.uuid4()), "user", None) is False  # type: ignore[arg-type]


def test_timeout_is_read_at_every_write() -> None:
    compat.CONVERSATION_TIMEOUT_SECONDS = 120
    tid = compat.create_thread("chat", {})
    left = compat.get_storage().ttl(f"thread:{tid}")
    assert left is not None and 60 < left <= 120
    compat.CONVERSATION_TIMEOUT_SECONDS = 5400.5
    assert compat.add_turn(tid, "user", "refreshes the TTL")
    left = compat.get_storage().ttl(f"thread:{tid}")
    assert left is not None and 5000 < left <= 5400.5


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "turns", "hours", "warned"),
    [
        ({}, 50, 3, 0),
        ({"MAX_CONVERSATION_TURNS": " 7 ", "CONVERSATION_TIMEOUT_HOURS": "5"}, 7, 5, 0),
        ({"CONVERSATION_TIMEOUT_HOURS": "1.5"}, 50, 1.5, 0),
        ({"MAX_CONVERSATION_TURNS": "", "CONVERSATION_TIMEOUT_HOURS": " "}, 50, 3, 0),
        ({"MAX_CONVERSATION_TURNS": "abc", "CONVERSATION_TIMEOUT_HOURS": "soon"}, 50, 3, 2),
        ({"MAX_CONVERSATION_TURNS": "0", "CONVERSATION_TIMEOUT_HOURS": "-1"}, 50, 3, 2),
        ({"MAX_CONVERSATION_TURNS": "2.5", "CONVERSATION_TIMEOUT_HOURS": "nan"}, 50, 3, 2),
    ],
)
def test_settings_warn_and_default(
    env: dict[str, str], turns: int, hours: float, warned: int
) -> None:
    settings = load_compat_settings(env)
    assert (settings.max_turns, settings.timeout_hours) == (turns, hours)
    assert type(settings.timeout_hours) is type(hours)
    assert len(settings.warnings) == warned


def test_bad_settings_at_import_log_a_warning_and_the_server_keeps_working(
    tmp_path: Path,
) -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from threadstore import compat\n"
        "print(compat.MAX_CONVERSATION_TURNS, compat.CONVERSATION_TIMEOUT_SECONDS)\n"
        "tid = compat.create_thread('chat', {})\n"
        "print(compat.add_turn(tid, 'user', 'still works'))\n"
    )
    env = {
        **os.environ,
        "THREADSTORE_URL": f"sqlite:///{tmp_path}/t.db",
        "MAX_CONVERSATION_TURNS": "many",
        "CONVERSATION_TIMEOUT_HOURS": "0",
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["50", "10800", "True"]
    assert "Invalid MAX_CONVERSATION_TURNS value ('many')" in done.stderr
    assert "Invalid CONVERSATION_TIMEOUT_HOURS value ('0')" in done.stderr
    env["CONVERSATION_TIMEOUT_HOURS"] = "0.25"
    env["MAX_CONVERSATION_TURNS"] = "9"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["9", "900.0", "True"] and "Invalid" not in done.stderr


# -- ordinary threads -----------------------------------------------------------------------------
def test_compat_threads_are_ordinary_threads(store_url: str) -> None:
    parent = compat.create_thread("analyze", {"prompt": "p"})
    assert compat.add_turn(parent, "user", "question", files=["a.py"])
    child = compat.create_thread("chat", {}, parent_thread_id=parent)
    assert compat.add_turn(child, "system", "odd role", model_provider="p", model_name="m")
    odd = compat.create_thread("chat", {}, parent_thread_id="not-a-thread")
    assert compat.add_turn(odd, "tool", "")

    store = ThreadStore(open_storage(store_url), ttl_seconds=60, max_turns=50)
    thread = store.get_thread(child)
    assert thread is not None and thread.turns[0].role == "system"
    assert [t.thread_id for t in store.get_thread_chain(child)] == [parent, child]
    assert [t.thread_id for t in store.get_thread_chain(odd)] == [odd]
    history = store.build_history(child, max_tokens=10_000)
    assert "question" in history.text and "odd role" in history.text
    listed = {s.thread_id for s in store.list_threads().threads}
    assert {parent, child, odd} <= listed
    store.close()

    runner = CliRunner()
    shown = runner.invoke(app, ["--url", store_url, "show", child])
    assert shown.exit_code == 0, shown.output
    assert "system" in shown.stdout and "odd role" in shown.stdout
    shown = runner.invoke(app, ["--url", store_url, "show", odd])
    assert shown.exit_code == 0, shown.output
    listing = runner.invoke(app, ["--url", store_url, "list", "--json"])
    assert {t["thread_id"] for t in json.loads(listing.stdout)["threads"]} >= {parent, child, odd}


def test_library_api_still_refuses_unknown_roles_and_bad_parents(store_url: str) -> None:
    store = ThreadStore(open_storage(store_url), ttl_seconds=60, max_turns=50)
    tid = store.create_thread("chat")
    with pytest.raises(threadstore.InvalidInput, match="unknown role"):
        store.add_turn(tid, "system", "x")
    with pytest.raises(threadstore.InvalidInput, match="tool_name"):
        store.add_turn(tid, "user", "x", tool_name="")
    with pytest.raises(threadstore.InvalidThreadId):
        store.create_thread("chat", parent_thread_id="not-a-thread")
    with pytest.raises(threadstore.InvalidInput, match="initial_context"):
        store.create_thread("chat", {"blob": "x" * 100_000})
    store.close()


# -- history --------------------------------------------------------------------------------------
def _context(turns: list[ConversationTurn], **kw: Any) -> ThreadContext:
    return ThreadContext(
        thread_id=kw.pop("thread_id", UUID),
        created_at="2023-01-01T00:00:00Z",
        last_updated_at="2023-01-01T00:00:00Z",
        tool_name=kw.pop("tool_name", "chat"),
        turns=turns,
        initial_context={},
        **kw,
    )


def _turn(role: str, content: str, **kw: Any) -> ConversationTurn:
    return ConversationTurn(role=role, content=content, timestamp="2023-01-01T00:00:00Z", **kw)


FOOTER = [
    "",
    "=== END CONVERSATION HISTORY ===",
    "",
    "IMPORTANT: You are continuing an existing conversation thread. Build upon the previous "
    "exchanges shown above,",
    "reference earlier points, and maintain consistency with what has been discussed.",
    "",
    "DO NOT repeat or summarize previous analysis, findings, or instructions that are already "
    "covered in the",
    "conversation history. Instead, provide only new insights, additional analysis, or direct "
    "answers to",
    "the follow-up question / concerns / insights. Assume the user has read the prior "
    "conversation.",
    "",
]


def test_history_format_and_tokens() -> None:
    context = _context(
        [
            _turn("user", "What is this?", files=["/missing/a.py"]),
            _turn(
                "assistant",
                "A module.",
                tool_name="chat",
                model_provider="google",
                model_name="gemini-2.5-flash",
            ),
            _turn("assistant", "Plain."),
            _turn("system", "Via model.", model_name="o3", tool_name="debug"),
            _turn("assistant", "Provider only.", model_provider="openai"),
        ]
    )
    text, tokens = compat.build_conversation_history(context)
    expected = "\n".join(
        [
            "=== CONVERSATION HISTORY (CONTINUATION) ===",
            f"Thread: {UUID}",
            "Tool: chat",
            "Turn 5/50",
            "You are continuing this conversation thread from where it left off.",
            "",
            "",
            "=== END REFERENCED FILES ===",
            "",
            "Previous conversation turns:",
            "\n--- Turn 1 (Agent) ---\nFiles used in this turn: /missing/a.py\n\nWhat is this?",
            "\n--- Turn 2 (gemini-2.5-flash using chat via google) ---\nA module.",
            "\n--- Turn 3 (Assistant) ---\nPlain.",
            "\n--- Turn 4 (o3 using debug) ---\nVia model.",
            "\n--- Turn 5 (Assistant via openai) ---\nProvider only.",
            *FOOTER,
            "This is turn 6 of the conversation - use the conversation history above to "
            "provide a coherent continuation.",
        ]
    )
    assert text == expected
    assert tokens == len(text) // 4
    assert compat.build_conversation_history(_context([])) == ("", 0)


class _Budget:
    """A model context with a small budget, counting one token per character."""

    model_name = "tiny"

    def __init__(self, file_tokens: int, history_tokens: int) -> None:
        self.allocation = types.SimpleNamespace(
            file_tokens=file_tokens, history_tokens=history_tokens
        )

    def calculate_token_allocation(self) -> Any:
        return self.allocation

    def estimate_tokens(self, text: str) -> int:
        return len(text)


def test_history_keeps_the_newest_turns_within_budget_shown_oldest_first() -> None:
    turns = [_turn("user" if i % 2 else "assistant", f"turn-{i}-" + "x" * 50) for i in range(6)]
    context = _context(turns)
    _full, _ = compat.build_conversation_history(context, _Budget(0, 100_000))
    head = sum(
        len(p)
        for p in [
            "=== CONVERSATION HISTORY (CONTINUATION) ===",
            f"Thread: {UUID}",
            "Tool: chat",
            "Turn 6/50",
            "You are continuing this conversation thread from where it left off.",
            "",
            "Previous conversation turns:",
        ]
    )
    sixth = len("\n--- Turn 6 (Agent) ---\nturn-5-" + "x" * 50)
    fifth = len("\n--- Turn 5 (Assistant) ---\nturn-4-" + "x" * 50)
    text, _ = compat.build_conversation_history(context, _Budget(0, head + sixth + fifth))
    assert "--- Turn 5 (Assistant) ---" in text and "--- Turn 6 (Agent) ---" in text
    assert "--- Turn 4 " not in text
    assert text.index("Turn 5 (") < text.index("Turn 6 (")
    assert "[Note: Showing 2 most recent turns out of 6 total]" in text
    assert "This is turn 7 of the conversation" in text


def test_history_embeds_files_newest_first_within_the_file_budget(tmp_path: Path) -> None:
    old, new, gone = tmp_path / "old.py", tmp_path / "new.py", tmp_path / "gone.py"
    old.write_text("OLD = 1\n" * 200)  # 1,600 bytes: ~400 tokens
    new.write_text("NEW = 2\n")
    context = _context(
        [
            _turn("user", "a", files=[str(old), str(gone)]),
            _turn("assistant", "b", files=[str(new), str(old)]),
        ]
    )
    assert compat.get_conversation_file_list(context) == [str(new), str(old), str(gone)]
    text, _ = compat.build_conversation_history(context, _Budget(100, 100_000))
    assert "=== FILES REFERENCED IN THIS CONVERSATION ===" in text
    assert "[NOTE: 2 files omitted (size constraints, missing files, or access issues)]" in text
    assert "NEW = 2" in text and "OLD = 1" not in text
    assert "2 additional file(s) were omitted" in text
    text, _ = compat.build_conversation_history(context, _Budget(10_000, 100_000))
    assert text.index("NEW = 2") < text.index("OLD = 1")
    assert "[NOTE: 1 files omitted" in text
    seen: list[list[str]] = []
    text, _ = compat.build_conversation_history(
        context, _Budget(10_000, 100_000), read_files_func=lambda p: seen.append(p) or "FILES!"
    )
    assert seen == [[str(new), str(old), str(gone)]] and "\nFILES!\n" in text


def test_history_follows_the_stored_parent_chain() -> None:
    parent = compat.create_thread("analyze", {})
    compat.add_turn(parent, "user", "first", files=["p.py"], images=["a.png"])
    compat.add_turn(parent, "assistant", "second", images=["b.png", "a.png"])
    child = compat.create_thread("chat", {}, parent_thread_id=parent)
    compat.add_turn(child, "user", "third", files=["c.py"], images=["c.png"])
    context = compat.get_thread(child)
    assert context is not None
    assert compat.get_conversation_image_list(context) == ["c.png"]
    chain = compat.get_thread_chain(child)
    assert [c.thread_id for c in chain] == [parent, child]
    assert [c.thread_id for c in compat.get_thread_chain(child, max_depth=1)] == [child]
    text, _ = compat.build_conversation_history(context, _Budget(0, 100_000))
    assert f"Thread: {child}" in text and "Tool: chat" in text and "Turn 3/50" in text
    assert text.index("Turn 1 (Agent)") < text.index("Turn 2 (") < text.index("Turn 3 (Agent)")
    assert "Files used in this turn: c.py" in text


def test_history_uses_the_host_tools_formatting(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tool:
        def format_conversation_turn(self, turn: ConversationTurn) -> list[str]:
            return [f"[custom] {turn.content}"]

    class Plain:
        pass

    server = types.ModuleType("server")
    server.TOOLS = {"fancy": Tool(), "plain": Plain()}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server", server)
    context = _context(
        [_turn("user", "a", tool_name="fancy"), _turn("user", "b", tool_name="plain")]
    )
    text, _ = compat.build_conversation_history(context, _Budget(0, 100_000))
    assert "--- Turn 1 (Agent using fancy) ---\n[custom] a" in text
    assert "--- Turn 2 (Agent using plain) ---\nb" in text


def test_history_header_reads_the_limit_at_call_time() -> None:
    context = _context([_turn("user", "a")])
    compat.MAX_CONVERSATION_TURNS = 7
    text, _ = compat.build_conversation_history(context)
    assert "Turn 1/7" in text


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_add_turn_from_threads_loses_nothing() -> None:
    compat.MAX_CONVERSATION_TURNS = 10_000
    tid = compat.create_thread("chat", {})
    writers, per_writer = 8, 40
    results: list[bool] = []

    def write(w: int) -> None:
        for i in range(per_writer):
            results.append(compat.add_turn(tid, "user", f"{w}:{i}"))

    pool = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert results.count(True) == writers * per_writer
    context = compat.get_thread(tid)
    assert context is not None
    contents = [t.content for t in context.turns]
    assert sorted(contents) == sorted(f"{w}:{i}" for w in range(writers) for i in range(per_writer))
    for w in range(writers):
        assert [c for c in contents if c.startswith(f"{w}:")] == [
            f"{w}:{i}" for i in range(per_writer)
        ]


def _fake_server(tmp_path: Path) -> Path:
    root = tmp_path / "fakeserver"
    (root / "utils").mkdir(parents=True)
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "conversation_memory.py").write_text("from threadstore.compat import *\n")
    return root


def _server(root: Path, url: str, *args: str, turns: str = "1000") -> subprocess.Popen[str]:
    env = {**os.environ, "THREADSTORE_URL": url, "MAX_CONVERSATION_TURNS": turns}
    return subprocess.Popen(
        [sys.executable, WORKER, str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_fake_server_package_across_processes_on_sqlite(store_url: str, tmp_path: Path) -> None:
    root = _fake_server(tmp_path)
    tid = _finish(_server(root, store_url, "create", "analyze")).strip()
    writers, per_writer = 4, 60
    procs = [
        _server(root, store_url, "append", tid, f"w{w}", str(per_writer)) for w in range(writers)
    ]
    for proc in procs:
        assert _finish(proc).split() == ["ok"] * per_writer
    child = _finish(_server(root, store_url, "create", "chat", tid)).strip()
    out = _finish(_server(root, store_url, "append", child, "c", "1"))
    assert out.split() == ["ok"]

    history = _finish(_server(root, store_url, "history", child))
    tokens, text = history.split("\n", 1)
    total = writers * per_writer + 1
    assert f"Thread: {child}" in text and f"Turn {total}/1000" in text
    assert f"--- Turn {total} (Agent) ---" in text
    assert int(tokens) == len(text.rstrip("\n")) // 4

    context = compat.get_thread(tid)
    assert context is not None and context.initial_context == {"prompt": "start"}
    contents = [t.content for t in context.turns]
    assert len(contents) == len(set(contents)) == writers * per_writer
    for w in range(writers):
        mine = [int(c.split(":")[1]) for c in contents if c.startswith(f"w{w}:")]
        assert mine == list(range(per_writer))

    # The limit applies across processes too: a full thread refuses in every process.
    small = _finish(_server(root, store_url, "create", "chat")).strip()
    procs = [_server(root, store_url, "append", small, f"s{w}", "5", turns="6") for w in range(3)]
    answers = [line for proc in procs for line in _finish(proc).split()]
    assert answers.count("ok") == 6 and answers.count("refused") == 9


def test_the_same_calls_on_sqlite_and_redis(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADSTORE_URL", shared_url)
    threadstore.reset_storage_backend()
    parent = compat.create_thread("analyze", {"prompt": "p"}, session_fingerprint="fp")
    assert compat.add_turn(parent, "system", "", files=["a.py"], model_metadata={"k": [1]})
    child = compat.create_thread("chat", {}, parent_thread_id=parent)
    assert compat.add_turn(child, "assistant", "z" * 2_000_000, model_name="m")
    chain = compat.get_thread_chain(child)
    assert [c.thread_id for c in chain] == [parent, child]
    assert chain[0].session_fingerprint == "fp" and chain[0].turns[0].model_metadata == {"k": [1]}
    assert len(chain[1].turns[0].content) == 2_000_000
    compat.MAX_CONVERSATION_TURNS = 1
    assert compat.add_turn(child, "user", "over the limit") is False
    context = compat.get_thread(child)
    assert context is not None
    text, tokens = compat.build_conversation_history(context, _Budget(0, 10_000_000))
    assert "--- Turn 1 (Agent) ---\nFiles used in this turn: a.py\n\n" not in text  # role system
    assert "--- Turn 1 (Assistant) ---\nFiles used in this turn: a.py" in text
    assert "--- Turn 2 (m) ---" in text and tokens == len(text) // 4


def test_export_and_import_of_compat_threads(store_url: str, tmp_path: Path) -> None:
    # Threads holding only what the library accepts round-trip; import keeps the library's
    # checks, so a field only compat accepts (here the role) is refused, named, nothing stored.
    plain = compat.create_thread("chat", {"k": "v"}, session_fingerprint="fp")
    assert compat.add_turn(plain, "user", "hello", files=["a.py"])
    odd = compat.create_thread("chat", {})
    assert compat.add_turn(odd, "system", "x")
    store = ThreadStore(open_storage(store_url), ttl_seconds=60, max_turns=50)
    lines = {json.loads(line)["thread_id"]: line for line in store.export_threads()}
    other = ThreadStore(
        open_storage(f"sqlite:///{tmp_path}/other.db"), ttl_seconds=60, max_turns=50
    )
    assert other.import_threads([lines[plain]]) == 1
    thread = other.get_thread(plain)
    assert thread is not None and thread.session_fingerprint == "fp"
    assert thread.turns[0].content == "hello"
    with pytest.raises(threadstore.InvalidInput, match="role 'system'"):
        other.import_threads([lines[odd]])
    assert other.get_thread(odd) is None
    store.close()
    other.close()
