"""One writer process for tests/test_redis.py: append COUNT items "WRITER:i" to one list.

Usage: python append_worker.py URL NAMESPACE KEY WRITER COUNT. Waits until the list exists
(the test creates it), then appends as fast as it can and prints how many appends succeeded.
"""

from __future__ import annotations

import sys
import time

from threadstore._redis import RedisStorage


def main() -> None:
    url, namespace, key, writer, count = sys.argv[1:6]
    store = RedisStorage.from_url(url, namespace=namespace)
    deadline = time.monotonic() + 10
    while not store.exists(key):
        if time.monotonic() > deadline:
            raise SystemExit(f"list {key!r} never appeared")
        time.sleep(0.005)
    done = 0
    for i in range(int(count)):
        n = store.list_append(key, f"{writer}:{i}", max_items=1_000_000, ttl_seconds=60)
        done += n > 1
    store.close()
    print(done)


if __name__ == "__main__":
    main()
