"""Keep secrets out of logs, errors, reprs and CLI output."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

_MASK = "***"
# user:password@ in anything that looks like a URL, for free text such as driver messages.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
_SECRET_QUERY = re.compile(
    r"(?P<k>(?:password|passwd|pwd|token|secret|auth)[^=&\s]*=)(?P<v>[^&\s]+)", re.IGNORECASE
)


_RAW_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s@]*)@")


def _mask_userinfo(userinfo: str) -> str:
    user, sep, _ = userinfo.partition(":")
    if userinfo == _MASK or userinfo.endswith(":" + _MASK):
        return userinfo
    return f"{user}:{_MASK}" if sep else _MASK


def redact_url(url: str) -> str:
    """Return ``url`` with any password (userinfo or query parameter) replaced by ``***``."""
    # A password may hold '/', '?' or '#', which would end urlsplit's netloc early: mask the
    # user info up to the last '@' first.
    url = _RAW_USERINFO.sub(lambda m: m.group(1) + _mask_userinfo(m.group(2)) + "@", url, count=1)
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _pw = userinfo.partition(":")
        if sep:
            netloc = f"{user}:{_MASK}@{host}"
        elif userinfo:
            # redis://secret@host means the password is "secret" (no user name).
            netloc = f"{_MASK}@{host}"
    query = _SECRET_QUERY.sub(lambda m: m.group("k") + _MASK, parts.query)
    out = (
        f"{parts.scheme}://{netloc}{parts.path}"
        if "://" in url
        else urlunsplit(SplitResult(parts.scheme, netloc, parts.path, "", ""))
    )
    return out + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redact_text(text: str, *secrets: str | None) -> str:
    """Mask URL passwords and every given secret inside free text (a driver's message)."""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{_MASK}@", text)
    out = _SECRET_QUERY.sub(lambda m: m.group("k") + _MASK, out)
    for secret in secrets:
        if secret:
            out = out.replace(secret, _MASK)
    return out
