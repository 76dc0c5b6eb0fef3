"""A process of a fake zen/pal-style server whose utils/conversation_memory.py is exactly
``from threadstore.compat import *``. The storage comes from THREADSTORE_URL.

    compat_server.py PACKAGE_DIR create TOOL [PARENT]   -> prints the new thread id
    compat_server.py PACKAGE_DIR append TID WRITER N    -> N turns "WRITER:i"; prints one line each
    compat_server.py PACKAGE_DIR history TID            -> prints tokens, then the history text
"""

from __future__ import annotations

import importlib
import sys


def main() -> None:
    package_dir, action, *args = sys.argv[1:]
    sys.path.insert(0, package_dir)
    memory = importlib.import_module("utils.conversation_memory")
    if action == "create":
        parent = args[1] if len(args) > 1 else None
        print(memory.create_thread(args[0], {"prompt": "start", "model": "x"}, parent))
    elif action == "append":
        tid, writer, count = args[0], args[1], int(args[2])
        for i in range(count):
            role = "user" if i % 2 == 0 else "assistant"
            ok = memory.add_turn(tid, role, f"{writer}:{i}", files=[f"{writer}.py"])
            print("ok" if ok else "refused", flush=True)
    elif action == "history":
        context = memory.get_thread(args[0])
        text, tokens = memory.build_conversation_history(context)
        print(tokens)
        print(text)
    else:
        raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    main()
