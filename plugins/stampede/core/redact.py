"""One redaction for everything that leaves a process: Slack, logs, reports, results.

:func:`text` masks what looks like a secret in free text (bearer and Slack
tokens, ``password=...`` pairs, credentials in URLs); :func:`url` drops the
user-info part of a URL; :func:`value` applies :func:`text` through nested lists
and dicts (Block Kit, records). Every pattern starts at a word start (a negative
lookbehind, not ``\\b``), so a long exception text is scanned in linear time.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MASK = "***"

_SECRET_KEY = re.compile(
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key", re.IGNORECASE
)
# Every pattern starts at a word start (a negative lookbehind, not \b), so a long
# exception text is scanned in linear time.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe(.xoxp)-, and app-level xapp-.
    (re.compile(r"(?<![\w-])(xox[abeoprs](?:\.xox[a-z])?|xapp)-[A-Za-z0-9-]+"), rf"\1-{MASK}"),
    # Authorization headers: Bearer <token>, Basic <base64>.
    (re.compile(r"(?<![\w-])(bearer)(\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\1\2{MASK}"),
    (re.compile(r"(?<![\w-])(Basic)(\s+)[A-Za-z0-9+/]{8,}={0,2}"), rf"\1\2{MASK}"),
    # Credentials in URLs: scheme://user:password@host.
    (re.compile(r"(?<![\w+.-])([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE), rf"\1{MASK}@"),
)
# key=value, key: value, "key": "value" where the key names a secret (password, db_password, api_key...).
_KEY = re.compile(r"""(?<![\w.-])(["']?)([\w.-]+)\1\s*[=:]\s*""")
_BARE_VALUE = re.compile(r"""[^\s&,;'"`|<>()\[\]{}]+""")


def _mask_pairs(text: str) -> str:
    out, pos = [], 0
    for match in _KEY.finditer(text):
        start = match.end()
        if start < pos or not _SECRET_KEY.search(match.group(2)):
            continue
        if start < len(text) and text[start] in "\"'":
            close = text.find(text[start], start + 1)
            if close >= 0:
                value_start, value_end = start + 1, close
            else:  # unterminated: mask up to the next separator
                value = _BARE_VALUE.match(text, start + 1)
                if value is None:
                    continue
                value_start, value_end = value.span()
        else:
            value = _BARE_VALUE.match(text, start)
            if value is None:
                continue
            value_start, value_end = value.span()
        if text[value_start:value_end] in ("", MASK):
            continue
        out.append(text[pos:value_start])
        out.append(MASK)
        pos = value_end
    out.append(text[pos:])
    return "".join(out)


def text(raw: str) -> str:
    """Mask what looks like a secret: bearer tokens, Slack tokens, ``password=...`` pairs."""
    if not raw:
        return raw
    for pattern, replacement in _REDACTIONS:
        raw = pattern.sub(replacement, raw)
    return _mask_pairs(raw)



def url(value: str | None) -> str | None:
    """``value`` without any user name or password written into it (``https://***@host/...``)."""
    if not value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return text(value)
    if parts.username is None and parts.password is None:
        return value
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{MASK}@{netloc}").geturl()


def value(obj: Any) -> Any:
    """:func:`text` applied to every string inside ``obj`` (lists, tuples, dicts)."""
    if isinstance(obj, str):
        return text(obj)
    if isinstance(obj, (list, tuple)):
        return [value(v) for v in obj]
    if isinstance(obj, dict):
        return {k: value(v) for k, v in obj.items()}
    return obj
