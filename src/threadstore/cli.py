"""Command line (filled in by the MCP/CLI issue)."""


def main() -> None:
    raise SystemExit("threadstore: the command line is not built yet")
