"""A FastMCP server whose state lives in threadstore: one SQLite file shared by every server
process on the machine, surviving restarts (or Redis: pass a redis:// URL).

    pip install 'threadstore[keyvalue]' fastmcp
    python examples/fastmcp_server.py --url sqlite:///notes.db      # stdio MCP server

One store serves two purposes: the app's own notes (``remember`` / ``recall``), written with
the py-key-value API, and FastMCP's per-session state (``ctx.set_state``/``get_state`` in any
tool), via ``FastMCP(session_state_store=...)``. The same store can back FastMCP's response cache
(``ResponseCachingMiddleware(cache_storage=store)``) and its OAuth proxy
(``client_storage=store``). Browse what is stored with ``threadstore --url URL stats``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fastmcp import FastMCP

from threadstore.integrations.keyvalue import ThreadstoreStore

DEFAULT_URL = "sqlite:///fastmcp-state.db"


def build_server(url: str = DEFAULT_URL) -> tuple[FastMCP, ThreadstoreStore]:
    """The server and its store (close the store when the server is done)."""
    store = ThreadstoreStore(url)
    mcp = FastMCP("threadstore-notes", session_state_store=store)

    @mcp.tool
    async def remember(key: str, text: str, ttl_seconds: float | None = None) -> dict[str, Any]:
        """Keep a note under ``key`` (for ``ttl_seconds``, or until overwritten)."""
        note = {"text": text, "written_by_pid": os.getpid()}
        await store.put(key, note, collection="notes", ttl=ttl_seconds)
        return note

    @mcp.tool
    async def recall(key: str) -> dict[str, Any]:
        """The note kept under ``key``, from whichever server process wrote it."""
        note, ttl = await store.ttl(key, collection="notes")
        return {"found": note is not None, "note": note, "expires_in_seconds": ttl}

    return mcp, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("NOTES_URL", DEFAULT_URL))
    server, _store = build_server(parser.parse_args().url)
    server.run()  # stdio; the store closes with the process


if __name__ == "__main__":
    main()
