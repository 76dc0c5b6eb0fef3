"""threadstore's benchmark suite: every performance claim measured side by side with its peers.

Run it all with ``python -m benchmarks`` (``--quick`` for the short form CI uses to keep the
harness working). Each benchmark runs in a fresh Python process; the parent collects the JSON rows
and writes ``results.json``, ``results.md`` and one PNG per benchmark into
``benchmarks/results/<date>-<host>/``. See ``notes/benchmarks.md``.
"""
