"""Worker process: append N turns to one thread through ThreadStore, printing each acknowledged
turn number to stdout as soon as add_turn returns."""

from __future__ import annotations

import sys

from threadstore import ThreadStore, open_storage


def main() -> None:
    url, thread_id, writer, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    storage = open_storage(url, fallback="fail")
    store = ThreadStore(storage, ttl_seconds=600, max_turns=100_000)
    for i in range(count):
        store.add_turn(thread_id, "user", f"{writer}:{i}")
        print(i, flush=True)
    storage.close()


if __name__ == "__main__":
    main()
