"""The backend contract as one test class. Every backend's tests subclass StorageContract and
provide a ``store`` fixture; nothing here knows which backend it is talking to."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from threadstore import (
    APPEND_FULL,
    APPEND_MISSING,
    InvalidInput,
    Storage,
    StorageUnavailable,
    WrongType,
)
from threadstore._config import SCHEMES

BAD_KEYS = [None, 1, 1.5, b"bytes", ("t",), "", "a\x00b", "k" * 1025]
BAD_TTLS = [0, -1, -0.5, 0.0, math.nan, math.inf, -math.inf, "10", None, True, 10**12, 0.0001]
BAD_VALUES = [None, 1, b"bytes", ["list"], {"d": 1}]


class StorageContract:
    """Subclass me and override the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[Storage]:
        raise NotImplementedError("subclasses provide a store fixture")

    # -- strings ------------------------------------------------------------------------------
    def test_get_missing_is_none(self, store: Storage) -> None:
        assert store.get("nope") is None

    def test_set_then_get(self, store: Storage) -> None:
        store.set_with_ttl("k", 60, "v")
        assert store.get("k") == "v"

    def test_seed_api_setex_get_shutdown(self, store: Storage) -> None:
        store.setex("thread:1", 3600, '{"turns": []}')
        assert store.get("thread:1") == '{"turns": []}'
        store.set_with_ttl("thread:2", 1.5, "x")
        assert store.get("thread:2") == "x"

    @pytest.mark.parametrize(
        "value",
        ["", "plain", "ünïcødé ✓ 🧵", "line\nbreak\ttab", "\x00inside", "x" * 1_000_000],
        ids=["empty", "plain", "unicode", "controls", "nul", "1MB"],
    )
    def test_values_round_trip_exactly(self, store: Storage, value: str) -> None:
        store.set_with_ttl("k", 60, value)
        assert store.get("k") == value

    @pytest.mark.parametrize("key", ["a", "thread:1", "ключ/🔑", "with space", "k" * 1024])
    def test_keys_round_trip(self, store: Storage, key: str) -> None:
        store.set_with_ttl(key, 60, "v")
        assert store.get(key) == "v"
        assert key in set(store.scan())

    def test_overwrite_replaces_value_and_ttl(self, store: Storage) -> None:
        store.set_with_ttl("k", 1000, "one")
        store.set_with_ttl("k", 10, "two")
        assert store.get("k") == "two"
        left = store.ttl("k")
        assert left is not None and 5 < left <= 10

    def test_set_replaces_a_list(self, store: Storage) -> None:
        assert store.list_create("k", 60, "meta")
        store.set_with_ttl("k", 60, "now a string")
        assert store.get("k") == "now a string"

    def test_delete(self, store: Storage) -> None:
        store.set_with_ttl("k", 60, "v")
        assert store.delete("k") is True
        assert store.get("k") is None
        assert store.delete("k") is False
        assert store.list_create("l", 60, "m")
        assert store.delete("l") is True
        assert store.list_range("l") == []

    def test_exists(self, store: Storage) -> None:
        assert store.exists("k") is False
        store.set_with_ttl("k", 60, "v")
        assert store.exists("k") is True
        store.list_create("l", 60, "m")
        assert store.exists("l") is True

    def test_ttl(self, store: Storage) -> None:
        assert store.ttl("k") is None
        store.set_with_ttl("k", 100, "v")
        left = store.ttl("k")
        assert isinstance(left, float)
        assert 95 < left <= 100

    def test_ttl_has_millisecond_precision(self, store: Storage) -> None:
        store.set_with_ttl("k", 2.5, "v")
        left = store.ttl("k")
        assert left is not None and 2.0 < left <= 2.5
        store.set_with_ttl("f", 1.5, "v")  # the seed crashed on CONVERSATION_TIMEOUT_HOURS=1.5
        left = store.ttl("f")
        assert left is not None and 1.0 < left <= 1.5

    def test_expire(self, store: Storage) -> None:
        assert store.expire("k", 10) is False
        store.set_with_ttl("k", 10, "v")
        assert store.expire("k", 1000) is True
        left = store.ttl("k")
        assert left is not None and 990 < left <= 1000
        store.list_create("l", 10, "m")
        assert store.expire("l", 500) is True
        left = store.ttl("l")
        assert left is not None and 490 < left <= 500

    def test_expired_keys_are_never_returned(self, store: Storage) -> None:
        store.set_with_ttl("s", 0.05, "v")
        store.list_create("l", 0.05, "m")
        store.set_with_ttl("keep", 60, "v")
        time.sleep(0.12)
        assert store.get("s") is None
        assert store.exists("s") is False
        assert store.ttl("s") is None
        assert store.expire("s", 10) is False
        assert store.list_range("l") == []
        assert store.list_length("l") == 0
        assert store.list_append("l", "x", max_items=10, ttl_seconds=60) == APPEND_MISSING
        assert set(store.scan()) == {"keep"}
        assert store.delete("s") is False
        # an expired key is free again
        assert store.list_create("l", 60, "fresh")
        assert store.list_range("l") == ["fresh"]

    def test_scan(self, store: Storage) -> None:
        for i in range(1500):
            store.set_with_ttl(f"a:{i}", 60, "v")
        store.list_create("b:list", 60, "m")
        store.set_with_ttl("b:str", 60, "v")
        assert set(store.scan("b:")) == {"b:list", "b:str"}
        a_keys = list(store.scan("a:"))
        assert len(a_keys) == 1500 and set(a_keys) == {f"a:{i}" for i in range(1500)}
        assert len(set(store.scan())) == 1502
        assert list(store.scan("zzz")) == []

    def test_scan_prefix_is_literal(self, store: Storage) -> None:
        store.set_with_ttl("a*b", 60, "v")
        store.set_with_ttl("a%b", 60, "v")
        store.set_with_ttl("a_b", 60, "v")
        store.set_with_ttl("axb", 60, "v")
        store.set_with_ttl("a[b]", 60, "v")
        assert set(store.scan("a*")) == {"a*b"}
        assert set(store.scan("a%")) == {"a%b"}
        assert set(store.scan("a_")) == {"a_b"}
        assert set(store.scan("a[")) == {"a[b]"}

    # -- lists --------------------------------------------------------------------------------
    def test_list_create_if_absent(self, store: Storage) -> None:
        assert store.list_create("l", 60, "meta") is True
        assert store.list_create("l", 60, "other") is False
        assert store.list_range("l") == ["meta"]
        store.set_with_ttl("s", 60, "v")
        assert store.list_create("s", 60, "meta") is False
        assert store.get("s") == "v"

    def test_list_append_and_range(self, store: Storage) -> None:
        store.list_create("l", 60, "meta")
        for i in range(1, 6):
            assert store.list_append("l", f"t{i}", max_items=100, ttl_seconds=60) == i + 1
        assert store.list_range("l") == ["meta", "t1", "t2", "t3", "t4", "t5"]
        assert store.list_range("l", 1) == ["t1", "t2", "t3", "t4", "t5"]
        assert store.list_range("l", 0, 1) == ["meta"]
        assert store.list_range("l", 2, 4) == ["t2", "t3"]
        assert store.list_range("l", 4, 100) == ["t4", "t5"]
        assert store.list_range("l", 10) == []
        assert store.list_range("l", 3, 3) == []
        assert store.list_length("l") == 6

    def test_list_append_missing(self, store: Storage) -> None:
        assert store.list_append("nope", "x", max_items=10, ttl_seconds=60) == APPEND_MISSING
        assert store.exists("nope") is False

    def test_list_append_full(self, store: Storage) -> None:
        store.list_create("l", 60, "meta")
        assert store.list_append("l", "a", max_items=3, ttl_seconds=60) == 2
        assert store.list_append("l", "b", max_items=3, ttl_seconds=60) == 3
        assert store.list_append("l", "c", max_items=3, ttl_seconds=60) == APPEND_FULL
        assert store.list_range("l") == ["meta", "a", "b"]

    def test_list_append_refreshes_ttl(self, store: Storage) -> None:
        store.list_create("l", 5, "meta")
        store.list_append("l", "a", max_items=10, ttl_seconds=500)
        left = store.ttl("l")
        assert left is not None and 490 < left <= 500

    def test_list_full_append_leaves_ttl(self, store: Storage) -> None:
        store.list_create("l", 50, "meta")
        assert store.list_append("l", "a", max_items=1, ttl_seconds=500) == APPEND_FULL
        left = store.ttl("l")
        assert left is not None and left <= 50

    def test_list_items_round_trip(self, store: Storage) -> None:
        items = ["", "ünïcødé 🧵", "x" * 100_000, '{"json": true}', "\x00"]
        store.list_create("l", 60, items[0])
        for item in items[1:]:
            store.list_append("l", item, max_items=100, ttl_seconds=60)
        assert store.list_range("l") == items

    def test_wrong_type(self, store: Storage) -> None:
        store.list_create("l", 60, "meta")
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.get("l")
        with pytest.raises(WrongType):
            store.list_append("s", "x", max_items=10, ttl_seconds=60)
        with pytest.raises(WrongType):
            store.list_range("s")
        assert store.get("s") == "v"
        assert store.list_range("l") == ["meta"]

    # -- bad input ----------------------------------------------------------------------------
    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    def test_bad_keys_are_refused(self, store: Storage, key: object) -> None:
        store.set_with_ttl("other", 60, "intact")
        for call in (
            lambda: store.set_with_ttl(key, 60, "v"),  # type: ignore[arg-type]
            lambda: store.get(key),  # type: ignore[arg-type]
            lambda: store.delete(key),  # type: ignore[arg-type]
            lambda: store.exists(key),  # type: ignore[arg-type]
            lambda: store.ttl(key),  # type: ignore[arg-type]
            lambda: store.expire(key, 10),  # type: ignore[arg-type]
            lambda: store.list_create(key, 10, "m"),  # type: ignore[arg-type]
            lambda: store.list_append(key, "x", max_items=5, ttl_seconds=10),  # type: ignore[arg-type]
            lambda: store.list_range(key),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidInput, match="key"):
                call()
        assert list(store.scan()) == ["other"]
        assert store.get("other") == "intact"

    @pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
    def test_bad_ttls_are_refused(self, store: Storage, ttl: object) -> None:
        store.set_with_ttl("k", 60, "old")
        with pytest.raises(InvalidInput, match="ttl"):
            store.set_with_ttl("k", ttl, "new")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="ttl"):
            store.set_with_ttl("fresh", ttl, "new")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="ttl"):
            store.expire("k", ttl)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="ttl"):
            store.list_create("l", ttl, "m")  # type: ignore[arg-type]
        assert store.get("k") == "old"
        assert store.exists("fresh") is False
        assert store.exists("l") is False

    @pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
    def test_bad_values_are_refused(self, store: Storage, value: object) -> None:
        store.set_with_ttl("k", 60, "old")
        store.list_create("l", 60, "m")
        with pytest.raises(InvalidInput, match="must be a str"):
            store.set_with_ttl("k", 60, value)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="must be a str"):
            store.list_append("l", value, max_items=10, ttl_seconds=60)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="must be a str"):
            store.list_create("l2", 60, value)  # type: ignore[arg-type]
        assert store.get("k") == "old"
        assert store.list_range("l") == ["m"]
        assert store.exists("l2") is False

    @pytest.mark.parametrize("max_items", [0, -1, 1.5, "3", None])
    def test_bad_max_items(self, store: Storage, max_items: object) -> None:
        store.list_create("l", 60, "m")
        with pytest.raises(InvalidInput, match="max_items"):
            store.list_append("l", "x", max_items=max_items, ttl_seconds=60)  # type: ignore[arg-type]
        assert store.list_range("l") == ["m"]

    @pytest.mark.parametrize("bounds", [(-1, None), (0, -1), ("0", None), (1.0, None)])
    def test_bad_ranges(self, store: Storage, bounds: tuple[object, object]) -> None:
        store.list_create("l", 60, "m")
        with pytest.raises(InvalidInput):
            store.list_range("l", bounds[0], bounds[1])  # type: ignore[arg-type]

    # -- lifecycle ----------------------------------------------------------------------------
    def test_stats(self, store: Storage) -> None:
        store.set_with_ttl("k", 60, "v")
        stats = store.stats()
        assert stats["backend"] == store.kind
        assert "url" in stats

    def test_repr_and_url(self, store: Storage) -> None:
        assert store.url.split("://")[0] in SCHEMES
        assert store.kind in repr(store) or store.url in repr(store)

    def test_close_is_idempotent_and_final(self, store: Storage) -> None:
        store.set_with_ttl("k", 60, "v")
        store.close()
        store.close()
        store.shutdown()
        with pytest.raises(StorageUnavailable):
            store.set_with_ttl("k", 60, "v")
        with pytest.raises(StorageUnavailable):
            store.get("k")

    # -- activity index (notes/index.md) -------------------------------------------------------
    def test_index_pages_newest_first_by_score_then_key(self, store: Storage) -> None:
        entries = [(s, f"k{i:03d}") for i, s in enumerate([5, 9, 9, 1, 7, 9, 3, 0, 2**53 - 1])]
        for score, key in entries:
            assert store.list_create(key, 60, "m", scopes=["all"], score=score)
        newest = sorted(entries, reverse=True)
        assert store.index_page("all", 100) == newest
        assert store.index_page("all", 100, ascending=True) == sorted(entries)
        assert store.index_page("all", 3) == newest[:3]
        for cut in range(len(newest)):  # keyset pages: strictly after the position
            assert store.index_page("all", 100, newest[cut]) == newest[cut + 1 :]
            later = sorted(e for e in entries if e > newest[cut])
            assert store.index_page("all", 100, newest[cut], ascending=True) == later
        assert store.index_page("all", 100, (9, "k002")) == [(9, "k001"), *newest[4:]]
        assert store.index_count("all") == len(entries)

    def test_index_pages_concatenate_to_the_whole_order(self, store: Storage) -> None:
        entries = [(i // 7, f"key:{i}") for i in range(230)]  # runs of equal scores
        for score, key in entries:
            store.list_create(key, 60, "m", scopes=("all",), score=score)
        for ascending in (False, True):
            seen: list[tuple[int, str]] = []
            after = None
            while True:
                page = store.index_page("all", 17, after, ascending=ascending)
                seen += page
                if len(page) < 17:
                    break
                after = page[-1]
            assert seen == sorted(entries, reverse=not ascending)

    def test_index_scopes_are_separate_and_remembered(self, store: Storage) -> None:
        assert store.list_create("a", 60, "m", scopes=("all", "owner:ann"), score=10)
        assert store.list_create("b", 60, "m", scopes=("all", "owner:bob"), score=20)
        assert store.list_create("plain", 60, "m")  # not filed anywhere
        assert store.index_page("owner:ann", 10) == [(10, "a")]
        assert store.index_count("owner:bob") == 1
        assert store.index_count("owner:nobody") == 0
        assert store.index_page("owner:nobody", 10) == []
        # an append re-scores the list in every scope it was filed under
        assert store.list_append("a", "t", max_items=10, ttl_seconds=60, score=30) == 2
        assert store.index_page("all", 10) == [(30, "a"), (20, "b")]
        assert store.index_page("owner:ann", 10) == [(30, "a")]
        # without a score, the order stays
        assert store.list_append("b", "t", max_items=10, ttl_seconds=60) == 2
        assert store.index_page("all", 10) == [(30, "a"), (20, "b")]
        # activity only grows: an append stamped before the last one (two writers whose appends
        # landed out of order) leaves the score, so a cursor never meets the list again
        assert store.list_append("a", "t", max_items=10, ttl_seconds=60, score=25) == 3
        assert store.list_append_many("a", ["u"], max_items=10, ttl_seconds=60, score=5) == 4
        assert store.index_page("all", 10) == [(30, "a"), (20, "b")]
        assert store.index_page("owner:ann", 10) == [(30, "a")]
        # an unfiled list stays unfiled, whatever its appends say
        assert store.list_append("plain", "t", max_items=10, ttl_seconds=60, score=99) == 2
        assert store.index_page("all", 10) == [(30, "a"), (20, "b")]
        # a full or missing list changes nothing
        assert store.list_append("a", "t", max_items=4, ttl_seconds=60, score=99) == APPEND_FULL
        assert store.list_append("zz", "t", max_items=2, ttl_seconds=60, score=99) == 0
        assert store.index_page("all", 10) == [(30, "a"), (20, "b")]

    def test_index_forgets_deleted_and_replaced_lists(self, store: Storage) -> None:
        for i in range(4):
            store.list_create(f"k{i}", 60, "m", scopes=("all", "o"), score=i)
        assert store.delete("k1")
        assert store.index_page("all", 10) == [(3, "k3"), (2, "k2"), (0, "k0")]
        assert store.index_count("all") == 3 and store.index_count("o") == 3
        store.set_with_ttl("k2", 60, "a string now")
        assert store.index_page("o", 10) == [(3, "k3"), (0, "k0")]
        assert store.index_page("all", 10) == [(3, "k3"), (0, "k0")]
        assert store.index_count("all") == 2  # exact once a page has walked past it
        # a new list under a used name is filed only where its creation says
        assert store.delete("k2")
        assert store.list_create("k2", 60, "m", scopes=("other",), score=50)
        assert store.index_page("all", 10) == [(3, "k3"), (0, "k0")]
        assert store.index_page("other", 10) == [(50, "k2")]

    def test_index_never_shows_expired_lists(self, store: Storage) -> None:
        store.list_create("short", 0.05, "m", scopes=("all", "o"), score=100)
        store.list_create("long", 60, "m", scopes=("all",), score=1)
        store.list_create("moved", 0.05, "m", scopes=("all",), score=50)
        assert store.expire("moved", 60)
        store.list_create("kept", 0.05, "m", scopes=("all",), score=40)
        store.list_append("kept", "t", max_items=5, ttl_seconds=60)  # the TTL follows the list
        assert store.index_count("all") == 4
        time.sleep(0.12)
        assert store.index_count("all") == 3
        assert store.index_count("o") == 0
        assert store.index_page("all", 10) == [(50, "moved"), (40, "kept"), (1, "long")]
        assert store.index_page("o", 10) == []
        # the name is free again, and a new list there is filed afresh
        assert store.list_create("short", 60, "m", scopes=("all",), score=7)
        assert store.index_page("all", 10, (40, "kept")) == [(7, "short"), (1, "long")]
        assert store.index_count("o") == 0

    def test_index_put_files_an_existing_list(self, store: Storage) -> None:
        assert store.index_put("missing", ["all"], 1) is False
        store.list_create("l", 60, "m")
        store.list_create("f", 60, "m", scopes=["all"], score=5)
        assert store.index_put("l", ["all"], 7) is True
        assert store.index_put("l", ["all"], 8) is True  # again: re-scored, not doubled
        assert store.index_page("all", 10) == [(8, "l"), (5, "f")]
        assert store.index_put("f", ["o"], 9) is True  # adds a scope, re-scores the old ones
        assert store.index_page("all", 10) == [(9, "f"), (8, "l")]
        assert store.index_page("o", 10) == [(9, "f")]
        assert store.index_count("all") == 2
        store.list_append("f", "t", max_items=5, ttl_seconds=60, score=11)
        assert store.index_page("o", 10) == [(11, "f")]
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.index_put("s", ["all"], 1)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"scopes": "all"},
            {"scopes": ["a", "a"]},
            {"scopes": [""]},
            {"scopes": ["a\x00b"]},
            {"scopes": [1]},
            {"scopes": ["s" * 201]},
            {"scopes": [f"s{i}" for i in range(9)]},
            {"scopes": ["a"], "score": -1},
            {"scopes": ["a"], "score": 2**53},
            {"scopes": ["a"], "score": 1.5},
            {"scopes": ["a"], "score": True},
        ],
    )
    def test_bad_index_arguments_are_refused(
        self, store: Storage, kwargs: dict[str, object]
    ) -> None:
        with pytest.raises(InvalidInput):
            store.list_create("l", 60, "m", **kwargs)  # type: ignore[arg-type]
        assert store.list_range("l") == []
        store.list_create("l", 60, "m")
        with pytest.raises(InvalidInput):
            store.list_append("l", "x", max_items=5, ttl_seconds=60, score=-1)
        assert store.list_range("l") == ["m"]

    @pytest.mark.parametrize(
        "args",
        [("", 10), (None, 10), ("all", 0), ("all", 1001), ("all", "10"), ("all", 10, (1,)),
         ("all", 10, (1.5, "k")), ("all", 10, (1, "")), ("all", 10, "k")],
    )  # fmt: skip
    def test_bad_index_page_arguments_are_refused(
        self, store: Storage, args: tuple[object, ...]
    ) -> None:
        with pytest.raises(InvalidInput):
            store.index_page(*args)  # type: ignore[arg-type]

    @pytest.mark.parametrize("scope", ["", None, 1, "a\x00", "s" * 201])
    def test_bad_index_count_scope_is_refused(self, store: Storage, scope: object) -> None:
        with pytest.raises(InvalidInput):
            store.index_count(scope)  # type: ignore[arg-type]

    # -- concurrency --------------------------------------------------------------------------
    def test_concurrent_appends_lose_nothing(self, store: Storage) -> None:
        store.list_create("l", 60, "meta")
        n_threads, per_thread = 8, 100
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(per_thread):
                    n = store.list_append("l", f"{w}:{i}", max_items=10_000, ttl_seconds=60)
                    assert n > 1
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        items = store.list_range("l")
        assert items[0] == "meta"
        assert len(items) == 1 + n_threads * per_thread
        assert len(set(items)) == len(items)
        for w in range(n_threads):  # each writer's items in its own order
            mine = [int(x.split(":")[1]) for x in items[1:] if x.split(":")[0] == str(w)]
            assert mine == list(range(per_thread))

    def test_concurrent_list_create_has_one_winner(self, store: Storage) -> None:
        wins: list[bool] = []
        barrier = threading.Barrier(8)

        def create(i: int) -> None:
            barrier.wait()
            wins.append(store.list_create("l", 60, f"meta{i}"))

        threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False] * 7 + [True]
        assert len(store.list_range("l")) == 1

    # -- list_pop and list_append_many (the Agents session's pop_item and add_items) ----------
    def test_list_pop_takes_the_last_item(self, store: Storage) -> None:
        assert store.list_pop("nope", ttl_seconds=60) is None
        store.list_create("l", 5, "meta")
        store.list_append("l", "a", max_items=10, ttl_seconds=5)
        store.list_append("l", "b", max_items=10, ttl_seconds=5)
        assert store.list_pop("l", ttl_seconds=500) == "b"
        left = store.ttl("l")
        assert left is not None and 490 < left <= 500  # a write refreshes the TTL
        assert store.list_pop("l", ttl_seconds=60) == "a"
        assert store.list_pop("l", ttl_seconds=60) is None  # item 0 stays: lists are never empty
        assert store.list_range("l") == ["meta"]
        assert store.list_append("l", "c", max_items=10, ttl_seconds=60) == 2
        assert store.list_range("l") == ["meta", "c"]
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.list_pop("s", ttl_seconds=60)
        assert store.get("s") == "v"

    def test_list_ends_reads_a_list_in_one_step(self, store: Storage) -> None:
        """(length, first, last, seconds left): what listing shows of each thread."""
        assert store.list_ends("nope") is None
        store.list_create("l", 500, "meta ünïcødé")
        ends = store.list_ends("l")
        assert ends is not None and ends[:3] == (1, "meta ünïcødé", "meta ünïcødé")
        assert 490 < ends[3] <= 500
        store.list_append("l", "a", max_items=10, ttl_seconds=60)
        store.list_append("l", "", max_items=10, ttl_seconds=60)
        ends = store.list_ends("l")
        assert ends is not None and ends[:3] == (3, "meta ünïcødé", "")
        assert 50 < ends[3] <= 60
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.list_ends("s")
        with pytest.raises(InvalidInput):
            store.list_ends("")
        store.list_create("short", 0.05, "m")
        deadline = time.monotonic() + 10
        while store.list_ends("short") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.list_ends("short") is None  # expired

    def test_list_ends_many_reads_a_page_of_lists(self, store: Storage) -> None:
        """list_ends of each key in order (a listing page; one round trip on Redis)."""
        keys = [f"l{i}" for i in range(12)]
        for i, key in enumerate(keys):
            store.list_create(key, 60, f"meta {i}")
            for j in range(i % 3):
                store.list_append(key, f"{key} item {j}", max_items=10, ttl_seconds=60)
        assert store.list_ends_many([]) == []
        ends = store.list_ends_many([*keys, "missing"])
        assert ends[-1] is None
        assert [e[:3] if e else None for e in ends[:-1]] == [
            store.list_ends(key)[:3]
            for key in keys  # type: ignore[index]
        ]
        assert ends[4] is not None and ends[4][:3] == (2, "meta 4", "l4 item 0")
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.list_ends_many(["l0", "s", "l1"])
        with pytest.raises(InvalidInput):
            store.list_ends_many(["l0", ""])

    def test_list_append_many_is_all_or_nothing(self, store: Storage) -> None:
        many = ["ünïcødé 🧵", "", '{"json": true}', "x" * 100_000] + [f"i{i}" for i in range(2500)]
        assert store.list_append_many("nope", ["a"], max_items=10, ttl_seconds=60) == APPEND_MISSING
        assert store.exists("nope") is False
        store.list_create("l", 5, "meta")
        assert store.list_append_many("l", many, max_items=10_000, ttl_seconds=500) == 1 + len(many)
        left = store.ttl("l")
        assert left is not None and 490 < left <= 500
        assert store.list_range("l") == ["meta", *many]
        store.list_create("f", 60, "meta")
        assert store.list_append_many("f", ["a", "b"], max_items=3, ttl_seconds=60) == 3
        assert store.list_append_many("f", ["c"], max_items=3, ttl_seconds=60) == APPEND_FULL
        assert store.list_append_many("f", ("c", "d"), max_items=4, ttl_seconds=60) == APPEND_FULL
        assert store.list_range("f") == ["meta", "a", "b"]
        store.set_with_ttl("s", 60, "v")
        with pytest.raises(WrongType):
            store.list_append_many("s", ["x"], max_items=10, ttl_seconds=60)

    @pytest.mark.parametrize("values", [[], "ab", None, ["ok", 1], [b"x"]], ids=repr)
    def test_list_append_many_bad_values(self, store: Storage, values: object) -> None:
        store.list_create("l", 60, "m")
        with pytest.raises(InvalidInput, match="values"):
            store.list_append_many("l", values, max_items=10, ttl_seconds=60)  # type: ignore[arg-type]
        for ttl in (0, None):
            with pytest.raises(InvalidInput, match="ttl"):
                store.list_pop("l", ttl_seconds=ttl)  # type: ignore[arg-type]
        for key in ("", "a\x00b"):
            with pytest.raises(InvalidInput, match="key"):
                store.list_pop(key, ttl_seconds=60)
        assert store.list_range("l") == ["m"]

    def test_concurrent_append_many_and_pop_keep_batches_whole(self, store: Storage) -> None:
        store.list_create("l", 60, "meta")
        errors: list[BaseException] = []
        popped: list[str] = []

        def writer(w: int) -> None:
            try:
                for i in range(20):
                    batch = [f"{w}:{i}:{j}" for j in range(5)]
                    assert store.list_append_many("l", batch, max_items=10_000, ttl_seconds=60) > 5
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def popper() -> None:
            try:
                for _ in range(30):
                    item = store.list_pop("l", ttl_seconds=60)
                    if item is not None:
                        popped.append(item)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=popper))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        items = store.list_range("l")[1:]
        assert len(items) + len(popped) == 4 * 20 * 5
        assert sorted(items + popped) == sorted(
            f"{w}:{i}:{j}" for w in range(4) for i in range(20) for j in range(5)
        )
        # what is left of each batch is its first items, contiguous and in order
        batches: dict[str, list[tuple[int, int]]] = {}
        for n, item in enumerate(items):
            w, i, j = item.split(":")
            batches.setdefault(f"{w}:{i}", []).append((n, int(j)))
        for entries in batches.values():
            first = entries[0][0]
            assert entries == [(first + k, k) for k in range(len(entries))]

    def test_list_pop_and_append_many_keep_the_index_in_step(self, store: Storage) -> None:
        store.list_create("many", 0.05, "m", scopes=("all",), score=10)
        store.list_create("popped", 0.05, "m", scopes=("all",), score=20)
        store.list_append("popped", "t", max_items=5, ttl_seconds=0.05)
        store.list_create("short", 0.05, "m", scopes=("all",), score=30)
        assert store.list_append_many("many", ["a", "b"], max_items=5, ttl_seconds=60, score=40)
        assert store.list_pop("popped", ttl_seconds=60) == "t"  # the score stays
        assert store.index_page("all", 10) == [(40, "many"), (30, "short"), (20, "popped")]
        time.sleep(0.12)
        assert store.index_count("all") == 2  # the index expiry followed the new TTLs
        assert store.index_page("all", 10) == [(40, "many"), (20, "popped")]
