"""White-box checks of the memory backend's expiry buckets (see src/threadstore/_memory.py)."""

from __future__ import annotations

from threadstore import MemoryStorage
from threadstore._memory import _entry_size


def assert_filed_once(store: MemoryStorage) -> None:
    """Every key is filed in exactly one live bucket, in the slot its entry records, no later
    than its expiry; sizes and the byte count are what the entries hold; the activity index is
    what ``_filed`` says; the fast-path gate and the hot bucket agree with the heap of buckets, and
    the hot bucket's cap keeps new keys within max_keys."""
    with store._lock:
        data, buckets = store._data, store._buckets
        assert sorted(k for b in buckets.values() for k in b) == sorted(data)
        for n, bucket in buckets.items():
            assert bucket.n is n, f"bucket {n} does not know its number"
        for key, entry in data.items():
            assert buckets[entry[3]][entry[4]] == key, f"{key!r} is not in the slot it records"
            assert type(entry[3]) is float, f"{key!r}'s entry holds its bucket, not its number"
            assert entry[3] <= entry[1] // 1.0, f"{key!r} is filed too late"
        for key, entry in data.items():
            assert entry[2] == _entry_size(key, entry[0]), f"{key!r} counts the wrong size"
        assert store._bytes == sum(entry[2] for entry in data.values())
        filed = sorted(
            (name, score, key) for key, (names, score) in store._filed.items() for name in names
        )
        indexed = sorted(
            (name, score, key) for name, entries in store._ix.items() for score, key in entries
        )
        assert filed == indexed, "the activity index and _filed disagree"
        assert not store._torn
        assert sorted(store._due) == sorted(buckets)
        assert store._fast_until == (min(buckets) + 1.0 if buckets else float("inf"))
        if store._hot_from < store._hot_to:  # new keys may be filed in the hot bucket
            assert buckets.get(store._hot_from) is store._hot, "the hot bucket was retired"
            assert store._hot.n is store._hot_from, "new keys would hold another float object"
        # The inline path counts new keys by the hot bucket's length (see MemoryStorage._heat).
        room = store._max_keys - len(data)
        assert store._hot_cap - len(store._hot) <= room, "the inline path could pass max_keys"
