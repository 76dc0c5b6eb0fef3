"""SQLite on a file system that fails: read-only and full. Run as root inside a private mount
namespace (``unshare -m --propagation private python sqlite_faults.py BASE``), so every mount
disappears with this process whatever happens. Prints one JSON object with what each scenario
saw; the test (tests/test_reliability_faults.py) makes the assertions.

An outcome is {"ok": value} or {"error": "ExceptionClass", "message": ..., "seconds": ...}.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from threadstore import ThreadStore, open_storage


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:
        return {
            "error": type(exc).__name__,
            "message": str(exc),
            "seconds": round(time.monotonic() - started, 3),
        }
    return {"ok": value if isinstance(value, int | str | bool | None) else repr(value)[:80]}


def read_only(base: str) -> dict[str, Any]:
    mnt = os.path.join(base, "ro")
    os.makedirs(mnt)
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt)
    url = f"sqlite:///{mnt}/threads.db"
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=100)
    tid = store.create_thread("chat")
    for i in range(3):
        store.add_turn(tid, "user", f"before:{i}")
    storage.close()
    mount("-o", "remount,ro", mnt)
    out: dict[str, Any] = {}
    try:
        storage = open_storage(url, fallback="fail")
    except Exception as exc:
        out["open_existing"] = {"error": type(exc).__name__, "message": str(exc)}
    else:
        out["open_existing"] = {"ok": True}
        store = ThreadStore(storage, ttl_seconds=3600, max_turns=100)
        out["read"] = outcome(lambda: len(store.get_thread(tid).turns))  # type: ignore[union-attr]
        out["append"] = outcome(lambda: store.add_turn(tid, "user", "after").content)
        out["create"] = outcome(lambda: store.create_thread("chat"))
        out["read_after"] = outcome(
            lambda: [t.content for t in store.get_thread(tid).turns]  # type: ignore[union-attr]
        )
        storage.close()
    out["open_new"] = outcome(lambda: open_storage(f"sqlite:///{mnt}/new.db", fallback="fail"))
    out["open_new_dir"] = outcome(
        lambda: open_storage(f"sqlite:///{mnt}/sub/dir/new.db", fallback="fail")
    )
    return out


def disk_full(base: str) -> dict[str, Any]:
    mnt = os.path.join(base, "full")
    os.makedirs(mnt)
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt)
    ballast = os.path.join(mnt, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\0" * 256 * 1024)
    path = f"{mnt}/threads.db"
    storage = open_storage(f"sqlite:///{path}", fallback="fail")
    store = ThreadStore(storage, ttl_seconds=3600, max_turns=100_000)
    tid = store.create_thread("chat")
    acked: list[str] = []
    out: dict[str, Any] = {}
    failure: dict[str, Any] | None = None
    for i in range(10_000):
        content = f"{i}:" + "x" * 20_000
        result = outcome(lambda c=content: store.add_turn(tid, "user", c).content)  # type: ignore[misc]
        if "error" in result:
            failure = result
            break
        acked.append(content)
    out["appended_before_full"] = len(acked)
    out["full_error"] = failure
    out["create_when_full"] = outcome(lambda: store.create_thread("chat"))
    thread = store.get_thread(tid)
    out["all_acknowledged_present"] = (
        thread is not None and [t.content for t in thread.turns] == acked
    )
    os.unlink(ballast)  # free space: the same store object must work again
    out["append_after_space_freed"] = outcome(lambda: len(store.add_turn(tid, "user", "x").content))
    thread = store.get_thread(tid)
    out["turns_after"] = None if thread is None else len(thread.turns)
    storage.close()
    with sqlite3.connect(path) as conn:
        out["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return out


def main() -> int:
    base = sys.argv[1]
    try:
        mount("--make-rprivate", "/")
        probe = os.path.join(base, "probe")
        os.makedirs(probe)
        mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(json.dumps({"unsupported": f"cannot mount a tmpfs here: {detail.strip()}"}))
        return 0
    results = {
        "read_only": read_only(base),
        "disk_full": disk_full(base),
    }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
