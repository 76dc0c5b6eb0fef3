"""ThreadstoreStore against py-key-value's own conformance expectations, on every backend.

py-key-value's shared test base (``BaseStoreTests`` and ``ContextManagerStoreTestMixin`` in its
repository's tests/stores/base.py, with the value cases of tests/shared/cases.py) is not shipped
in the wheel, so every behaviour it demands is re-expressed here, case by case, then ours:
injective key encoding, the ten-year "no expiry", errors translated, processes sharing a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

kv_errors = pytest.importorskip(
    "key_value.aio.errors", reason="py-key-value-aio not installed (pip install '.[keyvalue]')"
)
from key_value.aio.protocols.key_value import AsyncKeyValueProtocol  # noqa: E402
from key_value.aio.stores.base import BaseStore  # noqa: E402

from threadstore import MemoryStorage, open_storage  # noqa: E402
from threadstore._storage import MAX_KEY_LENGTH, MAX_TTL_SECONDS  # noqa: E402
from threadstore.integrations._keys import collection_prefix, entry_key  # noqa: E402
from threadstore.integrations.keyvalue import ThreadstoreStore  # noqa: E402

SerializationError = kv_errors.SerializationError
InvalidTTLError = kv_errors.InvalidTTLError

pytestmark = pytest.mark.anyio

FIXED_DATETIME = datetime(2025, 1, 1, tzinfo=UTC)

# tests/shared/cases.py: SIMPLE_CASES (data -> the same data back)
POSITIVE = {
    "null-value": {"null_key": None},
    "null-list": {"str_key": [None, None, None]},
    "null-nested": {"str_key": {"str_key_2": None, "str_key_3": None}},
    "null-in-keys": {"null": "str_value"},
    "null-in-values": {"str_key": "null"},
    "bool-true": {"bool_true_key": True},
    "bool-false": {"bool_false_key": False},
    "bool-list": {"str_key": [True, False, True]},
    "bool-nested": {"str_key": {"str_key_2": True, "str_key_3": False}},
    "bool-in-keys": {"true": "str_value"},
    "bool-in-values": {"str_key": "true"},
    "int": {"int_key": 1},
    "int-negative": {"negative_int_key": -42},
    "int-large": {"large_int_key": 1 * 10**18},
    "int-in-keys": {"1": "str_value"},
    "int-in-values": {"str_key": "1"},
    "float": {"float_key": 1.0},
    "float-large": {"large_float_key": 1.23456789012345 * 10**10},
    "float-in-keys": {"1.0": "str_value"},
    "float-in-values": {"str_key": "1.0"},
    "string": {"string_key": "string_value"},
    "string-1kb": {"string_key": "a" * 1024},
    "string-unicode": {"unicode_key": "Hello 世界 🌍 émojis"},
    "string-special": {"special_key": "Line1\nLine2\tTabbed"},
    "uuid-in-keys": {"12345678-1234-5678-1234-567812345678": "str_value"},
    "uuid-in-values": {"str_key": "12345678-1234-5678-1234-567812345678"},
    "bytes-b64-in-keys": {"aGVsbG8gd29ybGQ=": "str_value"},
    "bytes-b64-in-values": {"str_key": "aGVsbG8gd29ybGQ="},
    "deep-nested": {"level1": {"level2": {"level3": {"level4": {"value": "deep"}}}}},
    "nested-list-dict": {"items": [{"id": 1, "name": "item1"}, {"id": 2, "name": "item2"}] * 1000},
    "nested-dict-list": {"categories": {"fruits": ["apple", "banana"], "veg": ["carrot"]}},
    "empty": {},
}
# LARGE_DATA_CASES
LARGE = {
    "large-string": {"large_string_key": "a" * 10000},
    "large-int": {"large_int_key": 1 * 10**18},
    "large-float": {"large_float_key": 1.23456789012345 * 10**10},
    "large-list": {"large_list_key": list(range(1000))},
}
# NEGATIVE_SIMPLE_CASES (+ the tuple, bytes and set negatives of cases.py, and what plain JSON
# cannot hold without changing it)
NEGATIVE = {
    "datetime": {"str_key": FIXED_DATETIME},
    "date": {"str_key": FIXED_DATETIME.date()},
    "time": {"str_key": FIXED_DATETIME.time()},
    "uuid": {"str_key": UUID("12345678-1234-5678-1234-567812345678")},
    "bytes": {"str_key": b"hello world"},
    "set-small": {"str_key": {1, 2, 3}},
    "set-large": {"large_set_key": set(range(1000))},
    "tuple": {"str_key": (1, "two", 3.0)},
    "nan": {"f": math.nan},
    "infinity": {"f": math.inf},
    "nested-int-key": {"d": {1: "one"}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[True, False], ids=["with_ctx_manager", "no_ctx_manager"])
async def store(request: pytest.FixtureRequest, any_url: str) -> AsyncIterator[ThreadstoreStore]:
    """ContextManagerStoreTestMixin: every test runs inside ``async with`` and with a bare
    ``close()``."""
    kv = ThreadstoreStore(any_url)
    if request.param:
        async with kv:
            yield kv
    else:
        yield kv
        await kv.close()


# -- BaseStoreTests ---------------------------------------------------------------------------
async def test_store(store: ThreadstoreStore) -> None:
    assert isinstance(store, AsyncKeyValueProtocol)
    assert isinstance(store, BaseStore)


async def test_empty_get(store: ThreadstoreStore) -> None:
    assert await store.get(collection="test", key="test") is None


async def test_empty_put(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})


async def test_empty_ttl(store: ThreadstoreStore) -> None:
    assert await store.ttl(collection="test", key="test") == (None, None)


async def test_put_serialization_errors(store: ThreadstoreStore) -> None:
    pydantic = pytest.importorskip("pydantic")
    url = pydantic.AnyHttpUrl("https://test.com")
    with pytest.raises(SerializationError):
        await store.put(collection="test", key="test", value={"test": url})
    assert await store.get(collection="test", key="test") is None


async def test_get_put_get(store: ThreadstoreStore) -> None:
    assert await store.get(collection="test", key="test") is None
    await store.put(collection="test", key="test", value={"test": "test"})
    assert await store.get(collection="test", key="test") == {"test": "test"}


@pytest.mark.parametrize("data", list(POSITIVE.values()), ids=list(POSITIVE))
async def test_models_put_get(store: ThreadstoreStore, data: dict[str, Any]) -> None:
    await store.put(collection="test", key="test", value=data)
    back = await store.get(collection="test", key="test")
    assert back == data
    assert json.dumps(back, sort_keys=True) == json.dumps(data, sort_keys=True)  # types too


@pytest.mark.parametrize("data", list(NEGATIVE.values()), ids=list(NEGATIVE))
async def test_negative_models_put_get(store: ThreadstoreStore, data: dict[str, Any]) -> None:
    await store.put(collection="test", key="test", value={"old": 1})
    with pytest.raises(SerializationError):
        await store.put(collection="test", key="test", value=data)
    assert await store.get(collection="test", key="test") == {"old": 1}  # no lossy copy


@pytest.mark.parametrize("data", list(LARGE.values()), ids=list(LARGE))
async def test_get_large_put_get(store: ThreadstoreStore, data: dict[str, Any]) -> None:
    await store.put(collection="test", key="test", value=data)
    assert await store.get(collection="test", key="test") == data


async def test_put_many_get(store: ThreadstoreStore) -> None:
    await store.put_many(
        collection="test", keys=["test", "test_2"], values=[{"test": "test"}, {"test": "test_2"}]
    )
    assert await store.get(collection="test", key="test") == {"test": "test"}
    assert await store.get(collection="test", key="test_2") == {"test": "test_2"}


async def test_put_many_get_many(store: ThreadstoreStore) -> None:
    values = [{"test": "test"}, {"test": "test_2"}]
    await store.put_many(collection="test", keys=["test", "test_2"], values=values)
    assert await store.get_many(collection="test", keys=["test", "test_2"]) == values


async def test_put_put_get_many_missing_one(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})
    await store.put(collection="test", key="test_2", value={"test": "test_2"})
    assert await store.get_many(collection="test", keys=["test", "test_2", "test_3"]) == [
        {"test": "test"},
        {"test": "test_2"},
        None,
    ]


async def test_put_many_tuple_get_many(store: ThreadstoreStore) -> None:
    values = ({"test": "test"}, {"test": "test_2"})
    await store.put_many(collection="test", keys=["test", "test_2"], values=values)
    assert await store.get_many(collection="test", keys=["test", "test_2"]) == list(values)


async def test_many_ordering_and_duplicates(store: ThreadstoreStore) -> None:
    values = [{"n": 1}, {"n": 2}, {"n": 3}]
    await store.put_many(collection="c", keys=["a", "b", "a"], values=values)
    assert await store.get_many(collection="c", keys=["b", "a", "zz", "b"]) == [
        {"n": 2},
        {"n": 3},
        None,
        {"n": 2},
    ]
    ttls = await store.ttl_many(collection="c", keys=["a", "zz"])
    assert ttls == [({"n": 3}, None), (None, None)]
    assert await store.delete_many(collection="c", keys=["a", "a", "b"]) == 2


async def test_put_many_checks_every_value_first(store: ThreadstoreStore) -> None:
    with pytest.raises(SerializationError):
        await store.put_many(collection="c", keys=["a", "b"], values=[{"ok": 1}, {"d": {1, 2}}])
    assert await store.get_many(collection="c", keys=["a", "b"]) == [None, None]
    with pytest.raises(ValueError, match="different number"):
        await store.put_many(collection="c", keys=["a"], values=[{"x": 1}, {"y": 2}])


async def test_put_get_delete_get(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})
    assert await store.get(collection="test", key="test") == {"test": "test"}
    assert await store.delete(collection="test", key="test")
    assert await store.get(collection="test", key="test") is None


async def test_put_many_get_many_delete_many_get_many(store: ThreadstoreStore) -> None:
    values = [{"test": "test"}, {"test": "test_2"}]
    await store.put_many(collection="test", keys=["test", "test_2"], values=values)
    assert await store.get_many(collection="test", keys=["test", "test_2"]) == values
    assert await store.delete_many(collection="test", keys=["test", "test_2"]) == 2
    assert await store.get_many(collection="test", keys=["test", "test_2"]) == [None, None]


async def test_delete_missing(store: ThreadstoreStore) -> None:
    assert await store.delete(collection="test", key="test") is False
    assert await store.delete_many(collection="test", keys=["test", "test_2"]) == 0


async def test_put_delete_delete(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})
    assert await store.delete(collection="test", key="test")
    assert await store.delete(collection="test", key="test") is False


async def test_put_delete_many_twice(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})
    assert await store.delete_many(collection="test", keys=["test", "test_2"]) == 1
    assert await store.delete_many(collection="test", keys=["test", "test_2"]) == 0


async def test_get_put_get_put_delete_get(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"})
    assert await store.get(collection="test", key="test") == {"test": "test"}
    await store.put(collection="test", key="test", value={"test": "test_2"})
    assert await store.get(collection="test", key="test") == {"test": "test_2"}
    assert await store.delete(collection="test", key="test")
    assert await store.get(collection="test", key="test") is None


async def test_put_many_delete_delete_get_many(store: ThreadstoreStore) -> None:
    values = [{"test": "test"}, {"test": "test_2"}]
    await store.put_many(collection="test", keys=["test", "test_2"], values=values)
    assert await store.delete(collection="test", key="test")
    assert await store.delete(collection="test", key="test_2")
    assert await store.get_many(collection="test", keys=["test", "test_2"]) == [None, None]


async def test_put_ttl_get_ttl(store: ThreadstoreStore) -> None:
    await store.put(collection="test", key="test", value={"test": "test"}, ttl=100)
    value, ttl = await store.ttl(collection="test", key="test")
    assert value == {"test": "test"}
    assert type(ttl) is float
    assert 98 < ttl <= 100


@pytest.mark.parametrize("ttl", [-100, 0, -0.5, True])
async def test_negative_ttl(store: ThreadstoreStore, ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        await store.put(collection="test", key="test", value={"test": "test"}, ttl=ttl)
    assert await store.get(collection="test", key="test") is None


async def test_put_expired_get_none(store: ThreadstoreStore) -> None:
    await store.put(collection="test_collection", key="test_key", value={"test": "test"}, ttl=0.3)
    assert await store.get(collection="test_collection", key="test_key") is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await store.get(collection="test_collection", key="test_key") is not None:
        assert loop.time() < deadline, "entry did not expire"
        await asyncio.sleep(0.05)
    assert await store.ttl(collection="test_collection", key="test_key") == (None, None)


async def test_long_collection_name(store: ThreadstoreStore) -> None:
    await store.put(collection="test_collection" * 100, key="test_key", value={"test": "test"})
    assert await store.get(collection="test_collection" * 100, key="test_key") == {"test": "test"}


async def test_special_characters_in_collection_name(store: ThreadstoreStore) -> None:
    await store.put(collection="test_collection!@#$%^&*()", key="test_key", value={"t": "t"})
    assert await store.get(collection="test_collection!@#$%^&*()", key="test_key") == {"t": "t"}


async def test_long_key_name(store: ThreadstoreStore) -> None:
    await store.put(collection="test_collection", key="test_key" * 100, value={"test": "test"})
    assert await store.get(collection="test_collection", key="test_key" * 100) == {"test": "test"}


async def test_special_characters_in_key_name(store: ThreadstoreStore) -> None:
    await store.put(collection="test_collection", key="test_key!@#$%^&*()", value={"t": "t"})
    assert await store.get(collection="test_collection", key="test_key!@#$%^&*()") == {"t": "t"}


async def test_concurrent_operations(store: ThreadstoreStore) -> None:
    async def worker(worker_id: int) -> None:
        for i in range(5):
            key = f"test_{worker_id}_{i}"
            assert await store.get(collection="test_collection", key=key) is None
            await store.put(collection="test_collection", key=key, value={"test": f"test_{i}"})
            assert await store.get(collection="test_collection", key=key) == {"test": f"test_{i}"}
            await store.put(collection="test_collection", key=key, value={"test": f"test_{i}_2"})
            got = await store.get(collection="test_collection", key=key)
            assert got == {"test": f"test_{i}_2"}
            assert await store.delete(collection="test_collection", key=key)
            assert await store.get(collection="test_collection", key=key) is None

    await asyncio.gather(*[worker(w) for w in range(3)])


async def test_minimum_put_many_get_many_delete_many(store: ThreadstoreStore) -> None:
    keys = [f"test_{i}" for i in range(10)]
    values = [{"test": f"test_{i}"} for i in range(10)]
    await store.put_many(collection="test_collection", keys=keys, values=values)
    assert await store.get_many(collection="test_collection", keys=keys) == values
    assert await store.delete_many(collection="test_collection", keys=keys) == 10


# test_not_unbounded: py-key-value skips it for distributed stores (Redis, databases); our
# memory backend is bounded by max_keys and evicts the entries closest to expiry (within a
# one-second expiry bucket, in no particular order).
async def test_not_unbounded_on_bounded_memory() -> None:
    async with ThreadstoreStore("memory://?max_keys=500") as store:
        for i in range(1000):
            value = hashlib.sha256(f"test_{i}".encode()).hexdigest()
            await store.put(collection="test_collection", key=f"test_key_{i}", value={"t": value})
        keys = [f"test_key_{i}" for i in range(1000)]
        kept = [v for v in await store.get_many(keys, collection="test_collection") if v]
        assert len(kept) <= 500  # bounded: the oldest entries were evicted
        assert await store.get(collection="test_collection", key="test_key_999") is not None


# -- collections, keys and the details users' code relies on ----------------------------------
async def test_collections_are_isolated(store: ThreadstoreStore) -> None:
    await store.put(collection="a", key="k", value={"from": "a"})
    await store.put(collection="b", key="k", value={"from": "b"})
    await store.put(key="k", value={"from": "default"})
    assert await store.get(collection="a", key="k") == {"from": "a"}
    assert await store.get(collection="b", key="k") == {"from": "b"}
    assert await store.get(key="k") == {"from": "default"}
    assert await store.delete(collection="a", key="k")
    assert await store.get(collection="b", key="k") == {"from": "b"}


async def test_default_collection_argument(any_url: str) -> None:
    async with ThreadstoreStore(any_url, default_collection="mine") as store:
        await store.put("k", {"x": 1})
        assert await store.get("k", collection="mine") == {"x": 1}
        assert await store.get("k", collection="default_collection") is None


NASTY = ["", ":", "=", "#", "a:b", "1:x", "kv:", "\x00", "a\x00b", "\ud800", "🔑", "x" * 5000]


async def test_nasty_keys_and_collections_never_collide(store: ThreadstoreStore) -> None:
    pairs = [(c, k) for c in ["c", *NASTY[1:]] for k in NASTY]
    for n, (c, k) in enumerate(pairs):
        await store.put(collection=c, key=k, value={"n": n})
    for n, (c, k) in enumerate(pairs):
        assert await store.get(collection=c, key=k) == {"n": n}, (c[:20], k[:20])


def test_key_encoding_is_injective_and_fits_the_contract() -> None:
    names = [*NASTY, "a", "ab", "x" * 200, "x" * 201, "x" * 1023, "x" * 1024]
    seen: dict[str, tuple[str, str]] = {}
    for c in names:
        for k in names:
            key = entry_key(c, k)
            assert len(key) <= MAX_KEY_LENGTH and "\x00" not in key
            key.encode("utf-8")  # storable
            assert seen.setdefault(key, (c, k)) == (c, k)
            assert key.startswith(collection_prefix(c))
    # a verbatim key that looks like another collection's prefix still cannot collide
    assert entry_key("a", "=b") != entry_key("a=", "b")
    assert entry_key("1", ":x") != entry_key("1:", "x")


async def test_strings_that_look_like_json_stay_strings(store: ThreadstoreStore) -> None:
    value = {"a": "null", "b": "1.0", "c": "true", "d": '{"x": 1}', "e": "[1]"}
    await store.put(key="k", value=value)
    assert await store.get(key="k") == value


async def test_no_expiry_is_the_ten_year_maximum(store: ThreadstoreStore) -> None:
    await store.put(key="k", value={"x": 1})
    assert await store.ttl(key="k") == ({"x": 1}, None)
    left = store.storage.ttl(entry_key("default_collection", "k"))
    assert left is not None and MAX_TTL_SECONDS - 60 < left <= MAX_TTL_SECONDS
    await store.put(key="long", value={"x": 2}, ttl=30 * 365 * 86400.0)  # past the maximum
    value, ttl = await store.ttl(key="long")
    assert value == {"x": 2}
    assert ttl is not None and MAX_TTL_SECONDS - 60 < ttl <= MAX_TTL_SECONDS  # what is kept


async def test_each_memory_store_is_fresh() -> None:
    async with ThreadstoreStore("memory://") as one, ThreadstoreStore("memory://") as two:
        await one.put(key="k", value={"x": 1})
        assert await two.get(key="k") is None


async def test_given_storage_is_shared_and_not_closed() -> None:
    storage = MemoryStorage()
    async with ThreadstoreStore(storage) as one:
        await one.put(key="k", value={"x": 1})
    two = ThreadstoreStore(storage)
    assert await two.get(key="k") == {"x": 1}
    await two.close()
    assert storage.exists(entry_key("default_collection", "k"))
    storage.close()


async def test_bare_close_without_use_closes_the_url_storage(tmp_path: Path) -> None:
    store = ThreadstoreStore(f"sqlite:///{tmp_path}/kv.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(kv_errors.StoreConnectionError):
        await store.get(key="k")


async def test_corrupt_entry_is_a_deserialization_error(store: ThreadstoreStore) -> None:
    store.storage.set_with_ttl(entry_key("c", "k"), 60, "not json")
    with pytest.raises(kv_errors.DeserializationError):
        await store.get(collection="c", key="k")


def test_bad_constructor_argument() -> None:
    with pytest.raises(TypeError, match="URL"):
        ThreadstoreStore(42)  # type: ignore[arg-type]


async def test_unreachable_redis_fails_by_default() -> None:
    from threadstore import StorageUnavailable
    from threadstore.testing import free_port

    with pytest.raises(StorageUnavailable):
        ThreadstoreStore(f"redis://127.0.0.1:{free_port()}/0")


# -- several processes on one SQLite file -----------------------------------------------------
_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from threadstore.integrations.keyvalue import ThreadstoreStore

    async def main(url, worker):
        async with ThreadstoreStore(url) as store:
            for i in range(40):
                await store.put(f"{worker}-{i}", {"w": worker, "i": i}, collection="shared")

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_processes_share_one_store(shared_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, shared_url, str(w)]) for w in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    async with ThreadstoreStore(shared_url) as store:
        keys = [f"{w}-{i}" for w in range(3) for i in range(40)]
        got = await store.get_many(keys, collection="shared")
        assert got == [{"w": str(w), "i": i} for w in range(3) for i in range(40)]


def test_open_storage_url_is_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    storage = open_storage(url)
    storage.set_with_ttl("x", 60, "y")
    storage.close()
    store = ThreadstoreStore(url)
    assert store.storage.get("x") == "y"
    assert "sqlite" in repr(store)
    asyncio.run(store.close())
