"""A real process using one SQLite file, driven by tests/test_sqlite.py.

worker.py writer URL ID N    wait for "go" on stdin, then N times: append "ID:i" to the
                             shared lists and set "k:ID:i"; print "done" (or the error)
worker.py stream URL LIST    append 0, 1, 2 ... to LIST and set "s:LIST:i", printing each
                             acknowledged i (flushed) until killed
worker.py serve URL          one command per stdin line: "set KEY VALUE" -> "ok",
                             "get KEY" -> the value as JSON
"""

from __future__ import annotations

import json
import sys

from threadstore._sqlite import SQLiteStorage

LISTS = ("shared:a", "shared:b")


def writer(url: str, ident: str, n: int) -> None:
    store = SQLiteStorage.from_url(url, namespace="test")
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        for i in range(n):
            for name in LISTS:
                got = store.list_append(name, f"{ident}:{i}", max_items=1_000_000, ttl_seconds=600)
                if got < 2:
                    raise RuntimeError(f"append to {name} returned {got}")
            store.set_with_ttl(f"k:{ident}:{i}", 600, f"{ident}:{i}")
    except BaseException as exc:
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        raise
    store.close()
    print("done", flush=True)


def stream(url: str, name: str) -> None:
    store = SQLiteStorage.from_url(url, namespace="test")
    store.list_create(name, 600, "head")
    out = sys.stdout
    i = 0
    while True:
        store.list_append(name, str(i), max_items=10_000_000, ttl_seconds=600)
        store.set_with_ttl(f"s:{name}:{i}", 600, "x" * 500)
        out.write(f"{i}\n")
        out.flush()
        i += 1


def serve(url: str) -> None:
    store = SQLiteStorage.from_url(url, namespace="test")
    for line in sys.stdin:
        cmd, _, rest = line.rstrip("\n").partition(" ")
        if cmd == "set":
            key, _, value = rest.partition(" ")
            store.set_with_ttl(key, 600, value)
            print("ok", flush=True)
        elif cmd == "get":
            print(json.dumps(store.get(rest)), flush=True)
        else:
            break
    store.close()


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "writer":
        writer(url, sys.argv[3], int(sys.argv[4]))
    elif mode == "stream":
        stream(url, sys.argv[3])
    else:
        serve(url)
