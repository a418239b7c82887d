"""RFC 7692 permessage-deflate, server side: negotiation (pure) and the codec.

Negotiation (§7): ``Compression(mode).negotiate(values)`` reads the
``Sec-WebSocket-Extensions`` values of an upgrade request and returns the
value to answer and the connection's codec, or None (no extension). Offers are
weighed in the client's order and the first acceptable one wins (§5.1); an
offer with an unknown, repeated or invalid parameter is declined, not the
connection (§7.1: "MUST decline"). Other extensions are ignored.

Modes (who owns which zlib context; the DESIGN rule: none for an idle
connection that does not need one):

- ``shared``: the server always answers ``server_no_context_takeover``, so
  every message is compressed alone by ONE compressor per worker (one per
  window size asked for), reset after each message by a full flush. A client
  that offered ``client_no_context_takeover`` is held to it: each message is
  inflated by a fresh inflater that lives only while the message arrives, and
  the connection owns no zlib state at all. Otherwise the connection gets its
  own inflater, created at its first compressed message, with the smallest
  window the client allows (``client_max_window_bits=9`` when it offered the
  parameter; 9, not 8, because zlib cannot deflate with a 256-byte window).
- ``full``: context takeover both ways when the client allows it (the best
  ratio): a compressor (window ``server_max_window_bits`` or 15, memLevel
  ``FULL_MEM_LEVEL``) and an inflater per connection, each created when first
  needed.
- ``off``: the offer is ignored (no answer), RSV1 stays a protocol error.

An offer of ``server_max_window_bits=8`` is declined: zlib refuses a raw
deflate window of 8 bits, and answering 9 would break the client's limit.

Receiving (``inflate``/``finish``, used by ws/protocol.py): the decompressed
size is checked WHILE inflating (``max_length``), so a message that inflates
past the limit stops at limit + 1 bytes, whatever its compressed size. Corrupt deflate
data is a 1007 (invalid payload data, §7.2.2 / RFC 6455 §7.4.1).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import NamedTuple

from .. import rfc9110
from .frames import CLOSE_INVALID_DATA, ProtocolError

EXTENSION_NAME = "permessage-deflate"  # RFC 7692 §7
TAIL = b"\x00\x00\xff\xff"  # §7.2.1: the empty stored block ending every flushed message
MODES = ("off", "shared", "full")
# Default mode: every browser offers the extension, and in shared mode an idle
# connection whose client keeps no context costs one pointer (see docs/compression.md).
DEFAULT_MODE = "shared"
# Messages shorter than this go out uncompressed (RSV1 clear, §6.1 allows it):
# below it deflate saves a few bytes at best (measured in bench/RESULTS.md).
DEFAULT_THRESHOLD = 128
# zlib level 1 (speed first): on the 1 KiB JSON-like message of bench/ws_compression.py it
# compresses 5.4x in 5.3 us, level 6 (zlib's default) 5.8x in 8.7 us (bench/RESULTS.md).
COMPRESSION_LEVEL = 1
# full mode: memLevel 8 (zlib's default); the compressor then costs
# 2**(wbits + 2) + 2**(memLevel + 9) = 256 KiB at wbits 15.
FULL_MEM_LEVEL = 8
# shared mode, per-connection inflater: the smallest window zlib deflates with.
SMALLEST_WINDOW = 9
MAX_WINDOW = 15  # §7.1.2: window bits are 8..15
# Inflated bytes one read may produce before the connection yields to the loop
# (ServerProtocol.on_stall / drain): 1 MiB inflates in about 3 ms here, where a
# 16 MiB "zip bomb" read in one go held the loop for about 70 ms.
DEFAULT_READ_BUDGET = 1 << 20
MAX_RATIO = 1032  # deflate's largest expansion (258-byte matches in ~2 bits): a bound
_WINDOW_VALUES = {str(bits): bits for bits in range(8, MAX_WINDOW + 1)}  # §7.1.2.1 ABNF


class OfferError(ValueError):
    """An offer this server must decline (unknown/duplicate/invalid parameter)."""


# ---- negotiation (pure) --------------------------------------------------------


def parse_extensions(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The extensions of ``Sec-WebSocket-Extensions`` values (RFC 6455 §9.1),
    as ``(name, [(param, value or None), ...])`` in order. A member that is
    not valid syntax comes back with the name "" (it can match nothing)."""
    offers = []
    for member in rfc9110.list_members(values):
        name, *params = (part.strip(rfc9110.OWS) for part in member.split(";"))
        try:
            offers.append((name.lower(), [_parameter(param) for param in params]))
        except OfferError:
            offers.append(("", []))
    return offers


def _parameter(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    name = name.strip(rfc9110.OWS)
    if not rfc9110.is_token(name):
        raise OfferError(f"invalid parameter {text!r}")
    if not sep:
        return name.lower(), None
    value = value.strip(rfc9110.OWS)
    if len(value) >= 2 and value[0] == value[-1] == '"':  # §9.1: a quoted token is the token
        value = value[1:-1].replace("\\", "")
    if not rfc9110.is_token(value):
        raise OfferError(f"invalid value in {text!r}")
    return name.lower(), value


class Offer(NamedTuple):
    """A well-formed permessage-deflate offer (§7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None  # None: not offered
    client_max_window_bits: int | bool = False  # False: not offered; True: without a value


def read_offer(params: list[tuple[str, str | None]]) -> Offer:
    """The offer's parameters checked (§7.1.1, §7.1.2); OfferError to decline."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name in seen:
            raise OfferError(f"{name} repeated")
        seen[name] = value
    fields = {}
    for name, value in seen.items():
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise OfferError(f"{name} takes no value")
            fields[name] = True
        elif name == "server_max_window_bits":
            fields[name] = _window_bits(name, value)
        elif name == "client_max_window_bits":
            fields[name] = True if value is None else _window_bits(name, value)
        else:
            raise OfferError(f"unknown parameter {name}")
    return Offer(**fields)


def _window_bits(name: str, value: str | None) -> int:
    bits = _WINDOW_VALUES.get(value) if value is not None else None
    if bits is None:
        raise OfferError(f"{name} needs a value 8..15")
    return bits


class Agreement(NamedTuple):
    """What both sides will do, and the answer that says it (§7.1)."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_window: int  # our compressor's window bits
    client_window: int  # the window bits our inflater needs
    response: str  # the Sec-WebSocket-Extensions value of the 101

    @property
    def shares_compressor(self) -> bool:
        return self.server_no_context_takeover


def agree(offer: Offer, mode: str) -> Agreement:
    """The answer to an acceptable offer in ``mode`` ("shared" or "full");
    OfferError when this server cannot honour it."""
    if offer.server_max_window_bits == 8:
        raise OfferError("zlib cannot deflate with an 8-bit window")
    server_window = offer.server_max_window_bits or MAX_WINDOW
    server_reset = mode == "shared" or offer.server_no_context_takeover
    client_reset = offer.client_no_context_takeover
    client_window = MAX_WINDOW
    answer = [EXTENSION_NAME]
    if server_reset:
        answer.append("server_no_context_takeover")
    if client_reset:
        answer.append("client_no_context_takeover")  # binding, not only the client's hint
    if offer.server_max_window_bits is not None:  # §7.1.2.1: must be answered
        answer.append(f"server_max_window_bits={server_window}")
    if offer.client_max_window_bits is not False and not client_reset:
        client_window = _client_window(offer.client_max_window_bits, mode)
        answer.append(f"client_max_window_bits={client_window}")
    # An 8-bit window answered to a client that asked for it is inflated with
    # 9 bits: a larger window decodes every stream a smaller one produces.
    inflate_window = max(client_window, SMALLEST_WINDOW)
    return Agreement(server_reset, client_reset, server_window, inflate_window, "; ".join(answer))


def _client_window(offered: int | bool, mode: str) -> int:
    """§7.1.2.2: never above the client's value. Shared mode keeps a per-
    connection inflater as small as the client allows."""
    limit = MAX_WINDOW if offered is True else offered
    return min(limit, SMALLEST_WINDOW) if mode == "shared" else limit


def negotiate_offers(values: Iterable[str], mode: str) -> Agreement | None:
    """The first acceptable permessage-deflate offer's agreement, or None."""
    if mode == "off":
        return None
    for name, params in parse_extensions(values):
        if name != EXTENSION_NAME:
            continue
        try:
            return agree(read_offer(params), mode)
        except OfferError:
            continue  # §7.1: declined; the next offer may do
    return None


# ---- the codec ----------------------------------------------------------------


class Compression:
    """One worker's compression: its mode, the shared compressors (one per
    window size asked for, at most 7) and the codecs of connections that need
    no state of their own."""

    def __init__(
        self,
        mode: str = DEFAULT_MODE,
        threshold: int = DEFAULT_THRESHOLD,
        read_budget: int = DEFAULT_READ_BUDGET,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"compression mode must be one of {MODES}, not {mode!r}")
        if threshold < 0:
            raise ValueError("compression threshold must be >= 0")
        if read_budget < 1:
            raise ValueError("the inflate budget per read must be >= 1")
        self.mode = mode
        self.threshold = threshold
        self.read_budget = read_budget
        self.budget = read_budget  # what the read being processed may still inflate
        self._compressors: dict[int, zlib._Compress] = {}
        self._stateless: dict[Agreement, PerMessageDeflate] = {}

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def negotiate(self, values: Iterable[str]) -> tuple[str, PerMessageDeflate] | None:
        """The extension value to answer and the connection's codec, or None."""
        agreement = negotiate_offers(values, self.mode)
        if agreement is None:
            return None
        return agreement.response, self.codec(agreement)

    def codec(self, agreement: Agreement) -> PerMessageDeflate:
        """A codec for ``agreement``: shared by every connection when it needs
        no state (no context kept either way), else the connection's own."""
        if agreement.server_no_context_takeover and agreement.client_no_context_takeover:
            codec = self._stateless.get(agreement)
            if codec is None:
                codec = self._stateless[agreement] = PerMessageDeflate(self, agreement)
            return codec
        return PerMessageDeflate(self, agreement)

    def shared_compress(self, payload: bytes, window: int) -> bytes:
        """``payload`` deflated alone (no reference to earlier messages), tail removed."""
        compressor = self._compressors.get(window)
        if compressor is None:
            compressor = self._compressors[window] = zlib.compressobj(
                COMPRESSION_LEVEL, zlib.DEFLATED, -window
            )
        # Z_FULL_FLUSH ends with the §7.2.1 tail AND resets the history: the
        # next message, maybe another connection's, cannot point into this one.
        return (compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH))[:-4]


class PerMessageDeflate:
    """One connection's permessage-deflate state (or a stateless one shared by
    connections): its agreement and, when it keeps context, its zlib objects,
    each created at first use."""

    __slots__ = ("owner", "agreement", "threshold", "_compressor", "_inflater")

    def __init__(self, owner: Compression, agreement: Agreement) -> None:
        self.owner = owner
        self.agreement = agreement
        self.threshold = owner.threshold
        self._compressor: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None

    @property
    def broadcast_key(self) -> int | None:
        """Connections with the same key can be sent the same compressed
        frame (shared compressor, same window); None: compress for it alone."""
        agreement = self.agreement
        return agreement.server_window if agreement.server_no_context_takeover else None

    def compress(self, payload: bytes) -> bytes:
        """The payload of a compressed message (RSV1 set), §7.2.1."""
        agreement = self.agreement
        if agreement.server_no_context_takeover:
            return self.owner.shared_compress(payload, agreement.server_window)
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                COMPRESSION_LEVEL, zlib.DEFLATED, -agreement.server_window, FULL_MEM_LEVEL
            )
        return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]

    def inflater(self) -> zlib._Decompress:
        """The inflater for a new message: a fresh one when the client keeps no
        context (it lives as long as the message), else the connection's."""
        if self.agreement.client_no_context_takeover:
            return zlib.decompressobj(-self.agreement.client_window)
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self.agreement.client_window)
        return inflater

    def message_done(self, inflater: zlib._Decompress) -> None:
        """A message ended. A stream the client closed with a final block
        (BFINAL) cannot go on: the next message starts a new one."""
        if inflater.eof and inflater is self._inflater:
            self._inflater = None

    @property
    def holds_context(self) -> bool:
        """Whether this connection currently owns zlib memory."""
        return self._compressor is not None or self._inflater is not None


def inflate(inflater: zlib._Decompress, chunk: bytes | memoryview, room: int) -> bytes:
    """Inflate ``chunk`` into at most ``room + 1`` bytes: more than ``room``
    means the message is over its limit, found without producing the rest
    (the caller answers 1009). Data that is not deflate: 1007."""
    if inflater.eof:  # §7.2.3.3: after a final block only the padding of step 2 remains
        return b""
    try:
        out = inflater.decompress(chunk, room + 1)
    except zlib.error:
        raise ProtocolError(CLOSE_INVALID_DATA, "invalid compressed data") from None
    return out


def finish(inflater: zlib._Decompress, room: int) -> bytes:
    """The end of a message: inflate the §7.2.2 tail the sender removed."""
    return inflate(inflater, TAIL, room)
