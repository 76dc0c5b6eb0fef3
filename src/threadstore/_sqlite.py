"""Placeholder until the sqlite backend lands."""

from __future__ import annotations

from ._errors import ConfigError
from ._storage import Storage


class SQLiteStorage:
    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Storage:
        raise ConfigError("the sqlite backend is not available in this version of threadstore")
