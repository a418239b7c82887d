"""HTTP field syntax (RFC 9110 §5.6) that both protocol layers read.

A leaf: standard library only, no state, no I/O. It is the one place that
says how a comma list is split, what surrounds a value, what a token is,
how a header line may be written and how a long run of digits is read, so
the HTTP parser (``reactor.http``) and the WebSocket handshake
(``reactor.ws``) cannot disagree on them (``tests/test_layout.py`` lets both
import this module and nothing else outside their own folder).
"""

from __future__ import annotations

from collections.abc import Iterable

# §5.6.3: only SP and HTAB surround a value or a list member. str.strip() would
# also remove NBSP and NEL (obs-text that a field value may carry): "13\xa0" is not "13".
OWS = " \t"
# §5.6.2: tchar.
TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# Past this many digits a number is clamped instead of converted: 18 digits stay below
# 2**63, and int() of a megabyte of digits would cost real time.
MAX_DIGITS = 18
BEYOND_ANY_LENGTH = 1 << 63


def list_members(values: Iterable[str]) -> list[str]:
    """The members of comma-list field values (§5.6.1), OWS removed, empty
    members dropped (a recipient ignores them)."""
    members = []
    for value in values:
        for member in value.split(","):
            member = member.strip(OWS)
            if member:
                members.append(member)
    return members


def has_token(values: Iterable[str], token: str) -> bool:
    """Whether comma-list values hold ``token`` (given lowercase) as a whole
    member, compared case-insensitively."""
    for value in values:
        value = value.lower()
        if value == token or (token in value and token in list_members((value,))):
            return True
    return False


def is_token(text: str) -> bool:
    return bool(text) and set(text) <= TOKEN_CHARS


def digits(text: str) -> int | None:
    """1*DIGIT as an int (None if it is not that); a number of more than
    MAX_DIGITS digits reads as BEYOND_ANY_LENGTH (2**63, past any file or body)."""
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= MAX_DIGITS else BEYOND_ANY_LENGTH


def header_line(name: str, value: str) -> str:
    """``name: value\\r\\n``; raises ValueError for what would inject a header
    or break the head (a name that is not a token; CR, LF or NUL in the value)."""
    if not is_token(name):
        raise ValueError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid header value for {name}: {value!r}")
    return f"{name}: {value}\r\n"
