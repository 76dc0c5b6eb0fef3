"""The one error hierarchy. Every exception threadstore raises derives from ThreadstoreError."""

from __future__ import annotations


class ThreadstoreError(Exception):
    """Root of every error raised by threadstore."""


class ConfigError(ThreadstoreError):
    """A setting (environment variable, URL or argument) has a value threadstore cannot use."""


class InvalidInput(ThreadstoreError, ValueError):
    """An argument is of the wrong type, too large or otherwise unacceptable; nothing was stored."""


class InvalidThreadId(InvalidInput):
    """A thread id is not a canonical lowercase UUID4 string."""


class ThreadNotFound(ThreadstoreError, LookupError):
    """The thread does not exist, or it expired."""


class ThreadFull(ThreadstoreError):
    """The thread reached its maximum number of turns; start a new thread with it as parent."""


class StorageUnavailable(ThreadstoreError):
    """The storage backend cannot be reached or used right now (network, disk, closed store)."""


class CorruptData(ThreadstoreError):
    """A stored value, or the store's file, cannot be decoded; the message names which."""


class WrongType(InvalidInput):
    """A string operation was used on a list key, or a list operation on a string key."""


__all__ = [
    "ConfigError",
    "CorruptData",
    "InvalidInput",
    "InvalidThreadId",
    "StorageUnavailable",
    "ThreadFull",
    "ThreadNotFound",
    "ThreadstoreError",
    "WrongType",
]
