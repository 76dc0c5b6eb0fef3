"""Figures for the reliability suite: each check reports what it tried in one JSON line.

``record("check name", operations=..., faults=..., lost=0)`` prints the line (shown with ``-s``
or in the captured output of a failing test) and, when THREADSTORE_FIGURES names a file,
appends it there so a run can be summarised for the README (see notes/reliability.md).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_lock = threading.Lock()


def record(check: str, **figures: Any) -> dict[str, Any]:
    entry = {"check": check, **figures}
    line = json.dumps(entry, sort_keys=False, default=str)
    print(f"[reliability] {line}")
    path = os.environ.get("THREADSTORE_FIGURES")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    return entry
