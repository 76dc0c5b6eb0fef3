"""Terminal-safe output for the command line.

Turn content, tool and model names and file names are written by MCP clients, that is by
models. Printed raw to a terminal, an escape sequence in them could set the clipboard (OSC 52),
retitle the window, clear the screen or hide text. ``for_terminal`` renders every C0 and C1
control character other than newline and tab visibly (``\\x1b``), and DEL too; output that is
not a terminal (a pipe, a file) and ``--json`` stay exact.
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def neutralise(text: str) -> str:
    """``text`` with its control characters (except newline and tab) shown as ``\\xNN``."""
    return _CONTROL.sub(_visible, text)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def for_terminal(text: str, stream: TextIO) -> str:
    """``text`` made safe to print on ``stream`` when that is a terminal; unchanged otherwise."""
    return neutralise(text) if is_terminal(stream) else text
