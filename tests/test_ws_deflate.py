"""permessage-deflate (RFC 7692), sans-I/O: negotiation, the codec, RSV1 in the
frame scanners (C and Python) and the protocol machine.

The client side of every compressed message is built here with zlib directly
(RFC 7692 §7.2.1: deflate, sync flush, drop the 4-byte tail), not with the
code under test.
"""

from __future__ import annotations

import zlib

import pytest

from reactor.ws import deflate, frames, native, protocol
from reactor.ws.frames import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    RSV1,
    serialize_masked_frame,
)

IMPLEMENTATIONS = [impl for impl in native.IMPLEMENTATIONS if impl == "python" or native.BUILT]
KEY = b"\x01\x02\x03\x04"


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    with native.using(request.param):
        yield request.param


def client_compress(payload: bytes, wbits: int = 15, compressor=None) -> bytes:
    """A client's compressed message payload, per RFC 7692 §7.2.1."""
    compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(deflate.TAIL)
    return data[:-4]


def server_inflate(payload: bytes, inflater=None) -> bytes:
    inflater = inflater or zlib.decompressobj(-15)
    return inflater.decompress(payload + deflate.TAIL)


# ---- negotiation (RFC 7692 §7) ----------------------------------------------------------


def answer(offer: str, mode: str = "shared") -> str | None:
    agreement = deflate.negotiate_offers([offer], mode)
    return None if agreement is None else agreement.response


@pytest.mark.parametrize(
    ("offer", "shared", "full"),
    [
        (
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; client_max_window_bits",  # browsers
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=15",
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=8",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            'permessage-deflate; server_max_window_bits="11"',  # §9.1: a quoted token
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
            "permessage-deflate; server_max_window_bits=11",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "Permessage-Deflate ;  Server_No_Context_Takeover ",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
    ],
)
def test_each_parameter_is_answered_per_mode(offer, shared, full):
    assert answer(offer, "shared") == shared
    assert answer(offer, "full") == full
    assert answer(offer, "off") is None


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=yes",
        "permessage-deflate; server_max_window_bits",  # a value is required
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",  # §7.1.2.1 ABNF: no leading zero
        "permessage-deflate; client_max_window_bits=0x0f",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with 8 bits
        "permessage-deflate; bad param=1",
        'permessage-deflate; client_max_window_bits="1 0"',
        "x-webkit-deflate-frame",
        "deflate-frame; no_context_takeover",
    ],
)
def test_an_unacceptable_offer_is_declined(offer):
    assert answer(offer, "shared") is None
    assert answer(offer, "full") is None


def test_the_first_acceptable_of_several_offers_wins():
    offers = [
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; foo",
        "permessage-deflate; client_max_window_bits=10, permessage-deflate",
    ]
    assert deflate.negotiate_offers(offers, "full").response == (
        "permessage-deflate; client_max_window_bits=10"
    )
    assert answer("x-other; a=1, permessage-deflate; server_max_window_bits=12") == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
    )
    assert answer("permessage-deflate; x, permessage-deflate; y") is None


def test_an_agreement_says_which_window_the_inflater_needs():
    shared = deflate.negotiate_offers(["permessage-deflate; client_max_window_bits"], "shared")
    assert (shared.client_window, shared.server_window) == (9, 15)
    assert not shared.client_no_context_takeover and shared.server_no_context_takeover
    eight = deflate.negotiate_offers(["permessage-deflate; client_max_window_bits=8"], "full")
    assert eight.client_window == 9  # a 9-bit window inflates what an 8-bit one made
    plain = deflate.negotiate_offers(["permessage-deflate"], "shared")
    assert plain.client_window == 15  # no parameter offered: the client may use 15


def test_compression_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        deflate.Compression("fast")
    with pytest.raises(ValueError, match="threshold"):
        deflate.Compression("shared", -1)


# ---- codecs: who owns which zlib context ------------------------------------------------


def codec_for(offer: str, mode: str, threshold: int = 0) -> deflate.PerMessageDeflate:
    _, codec = deflate.Compression(mode, threshold).negotiate([offer])
    return codec


def test_no_context_either_way_shares_one_codec_and_holds_no_zlib_state():
    compression = deflate.Compression("shared")
    offer = ["permessage-deflate; client_no_context_takeover"]
    (_, first), (_, second) = compression.negotiate(offer), compression.negotiate(offer)
    assert first is second
    payload = b"abc" * 200
    assert server_inflate(first.compress(payload)) == payload
    assert not first.holds_context


def test_shared_compressor_keeps_no_history_between_messages():
    codec = codec_for("permessage-deflate", "shared")
    payload = b"the same words again and again " * 20
    one, two = codec.compress(payload), codec.compress(payload)
    assert one == two  # the second does not point into the first
    assert server_inflate(two) == payload  # decodable by a fresh inflater
    assert not codec.holds_context


def test_full_mode_keeps_context_so_repeats_shrink():
    codec = codec_for("permessage-deflate", "full")
    payload = b"the same words again and again " * 20
    one, two = codec.compress(payload), codec.compress(payload)
    assert len(two) < len(one)
    inflater = zlib.decompressobj(-15)
    assert server_inflate(one, inflater) == payload
    assert server_inflate(two, inflater) == payload
    assert codec.holds_context


def test_the_per_connection_inflater_is_allocated_at_the_first_compressed_message():
    codec = codec_for("permessage-deflate; client_max_window_bits", "shared")
    assert not codec.holds_context
    first = codec.inflater()
    assert codec.holds_context and codec.inflater() is first
    stateless = codec_for("permessage-deflate; client_no_context_takeover", "shared")
    assert stateless.inflater() is not stateless.inflater()
    assert not stateless.holds_context


def test_the_server_window_asked_for_is_honoured():
    codec = codec_for("permessage-deflate; server_max_window_bits=9", "full")
    payload = bytes(range(256)) * 8 + b"tail" * 100
    assert zlib.decompressobj(-9).decompress(codec.compress(payload) + deflate.TAIL) == payload


# ---- RSV1 in the scanners (C and Python agree) ---------------------------------------------


def scan(wire: bytes, rsv: int, max_size: int = 1 << 20) -> list[int]:
    return frames.scan_frames(bytearray(wire), max_size=max_size, rsv=rsv)


def test_rsv1_on_a_first_data_frame_passes_only_when_negotiated(impl):
    wire = serialize_masked_frame(OP_TEXT | RSV1, b"abc", KEY)
    assert scan(wire, RSV1) == [0x80 | RSV1 | OP_TEXT, 6, 9]
    assert scan(wire, 0)[0] < 0
    assert frames.HEADER_ERRORS[-scan(wire, 0)[0]][0] == CLOSE_PROTOCOL_ERROR
    unfinished = serialize_masked_frame(OP_BINARY | RSV1, b"abc", KEY, fin=False)
    assert scan(unfinished, RSV1) == [RSV1 | OP_BINARY, 6, 9]


@pytest.mark.parametrize(
    "first_byte",
    [
        0x80 | RSV1 | OP_PING,  # control frame
        0x80 | RSV1 | 0x8,  # close
        RSV1 | OP_CONTINUATION,  # continuation
        0x80 | RSV1 | OP_CONTINUATION,
        0x80 | 0x20 | OP_TEXT,  # RSV2 means nothing here
        0x80 | 0x10 | OP_TEXT,  # RSV3 neither
    ],
)
def test_rsv_bits_elsewhere_are_a_protocol_error_even_when_negotiated(impl, first_byte):
    wire = bytes((first_byte,))  # the first byte alone proves it
    kind, start, end = scan(wire, RSV1)
    assert kind < 0 and start == end == 0
    assert frames.HEADER_ERRORS[-kind][0] == CLOSE_PROTOCOL_ERROR
    with pytest.raises(frames.ProtocolError) as caught:
        frames.parse_frame(wire, rsv=RSV1)
    assert caught.value.close_code == CLOSE_PROTOCOL_ERROR


def test_c_and_python_scanners_agree_on_every_first_byte():
    if not native.BUILT:
        pytest.skip("the C module is not built")
    for rsv in (0, RSV1):
        for b0 in range(256):
            wire = bytes((b0, 0x83)) + KEY + b"abc"
            outs = []
            for impl in IMPLEMENTATIONS:
                with native.using(impl):
                    outs.append(scan(wire, rsv))
            assert outs[0] == outs[1], (hex(b0), rsv, outs)


# ---- the protocol machine -----------------------------------------------------------------


class Recorder(protocol.ServerProtocol):
    __slots__ = ("events",)

    def on_message(self, data):
        self.events.append(("message", data))

    def on_close(self, code, reason):
        self.events.append(("close", code))

    def on_output(self, data):
        self.events.append(("out", data))


def machine(
    offer: str = "permessage-deflate", mode: str = "shared", max_size: int = 1 << 20
) -> Recorder:
    proto = Recorder(max_size, codec_for(offer, mode) if mode != "off" else None)
    proto.events = []
    proto.accept()
    return proto


def feed(proto: Recorder, wire: bytes, step: int = 0) -> list:
    step = step or len(wire)
    for start in range(0, len(wire), step):
        proto.receive(bytearray(wire[start : start + step]))
    return proto.events


def compressed_frame(payload: bytes, opcode: int = OP_TEXT, **kwargs) -> bytes:
    return serialize_masked_frame(opcode | RSV1, client_compress(payload, **kwargs), KEY)


def closed_with(events: list) -> int | None:
    return events[-1][1] if events and events[-1][0] == "close" else None


@pytest.mark.parametrize("step", [0, 1, 7])
def test_a_compressed_text_message_is_inflated(impl, step):
    text = "héllo wörld " * 50
    wire = compressed_frame(text.encode()) + serialize_masked_frame(OP_TEXT, b"plain", KEY)
    assert feed(machine(), wire, step) == [("message", text), ("message", "plain")]


def test_context_takeover_across_messages(impl):
    compressor = zlib.compressobj(6, zlib.DEFLATED, -9)
    payload = b"a repeated sentence, a repeated sentence " * 10
    wire = b"".join(compressed_frame(payload, OP_BINARY, compressor=compressor) for _ in range(3))
    events = feed(machine("permessage-deflate; client_max_window_bits"), wire)
    assert events == [("message", payload)] * 3


def test_an_empty_compressed_message(impl):
    empty = serialize_masked_frame(OP_TEXT | RSV1, b"\x00", KEY)  # §7.2.3.6
    bare = serialize_masked_frame(OP_BINARY | RSV1, b"", KEY)  # no deflate data at all
    assert feed(machine(), empty + bare) == [("message", ""), ("message", b"")]


@pytest.mark.parametrize("step", [0, 3])
def test_a_compressed_message_over_many_fragments(impl, step):
    text = ("fragmented and compressed " * 400).encode()
    data = client_compress(text)
    pieces = [data[i : i + 17] for i in range(0, len(data), 17)]
    wire = serialize_masked_frame(OP_TEXT | RSV1, pieces[0], KEY, fin=False)
    for piece in pieces[1:-1]:
        wire += serialize_masked_frame(OP_CONTINUATION, piece, KEY, fin=False)
        wire += serialize_masked_frame(OP_PING, b"p", KEY)  # control frames in between
    wire += serialize_masked_frame(OP_CONTINUATION, pieces[-1], KEY)
    events = [e for e in feed(machine(), wire, step) if e[0] != "out"]
    assert events == [("message", text.decode())]


def test_rsv1_on_a_continuation_is_1002(impl):
    data = client_compress(b"x" * 300)
    wire = serialize_masked_frame(OP_TEXT | RSV1, data[:10], KEY, fin=False)
    wire += serialize_masked_frame(OP_CONTINUATION | RSV1, data[10:], KEY)
    assert closed_with(feed(machine(), wire)) == CLOSE_PROTOCOL_ERROR


def test_rsv1_on_a_control_frame_is_1002(impl):
    wire = serialize_masked_frame(OP_PING | RSV1, b"", KEY)
    assert closed_with(feed(machine(), wire)) == CLOSE_PROTOCOL_ERROR


def test_rsv1_without_the_extension_is_still_1002(impl):
    assert closed_with(feed(machine(mode="off"), compressed_frame(b"x" * 200))) == (
        CLOSE_PROTOCOL_ERROR
    )


def watch_inflation(monkeypatch) -> list[int]:
    """The size of every piece the server's inflaters produce, in order."""
    produced: list[int] = []
    real = zlib.decompressobj

    class Watched:
        def __init__(self, wbits):
            self._inner = real(wbits)

        def decompress(self, data, max_length=0):
            out = self._inner.decompress(data, max_length)
            produced.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._inner, name)

    monkeypatch.setattr(deflate.zlib, "decompressobj", Watched)
    return produced


@pytest.mark.parametrize("step", [0, 1000])
def test_a_zip_bomb_is_1009_after_at_most_the_limit(impl, step, monkeypatch):
    bomb = client_compress(b"\0" * (10 << 20))  # 10 MiB of zeros: ~10 KB on the wire
    assert len(bomb) < 12_000
    produced = watch_inflation(monkeypatch)
    proto = machine(max_size=1 << 20)
    events = feed(proto, serialize_masked_frame(OP_BINARY | RSV1, bomb, KEY), step)
    assert closed_with(events) == CLOSE_TOO_BIG
    assert sum(produced) <= (1 << 20) + 1  # never the whole 10 MiB


def test_a_message_exactly_at_the_limit_once_inflated_passes(impl):
    payload = b"z" * 5000
    assert feed(machine(max_size=5000), compressed_frame(payload, OP_BINARY)) == [
        ("message", payload)
    ]
    assert closed_with(feed(machine(max_size=4999), compressed_frame(payload, OP_BINARY))) == (
        CLOSE_TOO_BIG
    )


def test_the_limit_counts_inflated_bytes_over_fragments(impl):
    data = client_compress(b"q" * 3000)
    wire = serialize_masked_frame(OP_BINARY | RSV1, data[:5], KEY, fin=False)
    wire += serialize_masked_frame(OP_CONTINUATION, data[5:], KEY)
    assert closed_with(feed(machine(max_size=2999), wire)) == CLOSE_TOO_BIG


def test_corrupt_deflate_data_is_1007(impl):
    wire = serialize_masked_frame(OP_BINARY | RSV1, b"\xff\xff\xff\xff", KEY)
    assert closed_with(feed(machine(), wire)) == CLOSE_INVALID_DATA


def test_invalid_utf8_inside_compressed_text_is_1007(impl):
    assert closed_with(feed(machine(), compressed_frame(b"ok \xff" * 100))) == CLOSE_INVALID_DATA


def test_a_final_deflate_block_ends_the_stream_and_the_next_message_starts_anew(impl):
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = compressor.compress(b"last block " * 30) + compressor.flush(zlib.Z_FINISH)
    # §7.2.1 step 2: an empty stored block appended, then 4 bytes dropped
    wire = serialize_masked_frame(OP_TEXT | RSV1, final + b"\x00", KEY)
    wire += compressed_frame(b"next message " * 30)
    events = feed(machine("permessage-deflate; client_max_window_bits"), wire)
    assert events == [("message", "last block " * 30), ("message", "next message " * 30)]


def test_send_compresses_from_the_threshold_on():
    proto = Recorder(1 << 20, codec_for("permessage-deflate", "shared", threshold=100))
    proto.accept()
    small = proto.send("s" * 99)
    assert small[0] == 0x80 | OP_TEXT and small[2:] == b"s" * 99
    big = proto.send("b" * 100)
    assert big[0] == 0x80 | RSV1 | OP_TEXT
    assert server_inflate(big[2:]) == b"b" * 100


@pytest.mark.parametrize("step", [0, 1, 5])
@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"\xff" + b"a" * 3000, CLOSE_INVALID_DATA),  # bad before the limit: 1007 first
        (b"a" * 3000 + b"\xff", CLOSE_TOO_BIG),  # bad past the limit: never looked at
        ("é".encode() * 1500, CLOSE_TOO_BIG),
    ],
)
def test_the_close_code_does_not_depend_on_how_reads_split_a_message(impl, step, text, code):
    """One frame read whole (the fast path) or in pieces: the same answer."""
    assert closed_with(feed(machine(max_size=2000), compressed_frame(text), step)) == code


# ---- inflating in bounded steps: the read's budget ----------------------------------------


class Staller(Recorder):
    __slots__ = ()

    def on_stall(self):
        self.events.append(("stall",))


def test_inflating_yields_after_the_read_budget_and_resumes_in_order(impl, monkeypatch):
    compression = deflate.Compression("shared", read_budget=1000)
    _, codec = compression.negotiate(["permessage-deflate"])
    proto = Staller(1 << 20, codec)
    proto.events = []
    proto.accept()
    produced = watch_inflation(monkeypatch)
    text = "the same line again, " * 2500  # 52,500 bytes from a few hundred
    wire = compressed_frame(text.encode()) + serialize_masked_frame(OP_PING, b"after", KEY)
    assert proto.receive(bytearray(wire)) == len(wire)  # the rest of the window is kept
    steps = 0
    while proto.stalled:
        assert proto.events[-1] == ("stall",)
        proto.events.clear()
        assert max(produced) <= 1000  # never more than the budget in one step
        produced.clear()
        proto.drain()
        steps += 1
    assert steps >= 50
    assert [e[0] for e in proto.events] == ["message", "out"]  # then the ping's pong
    assert proto.events[0] == ("message", text)


def test_a_local_close_during_a_stall_still_reads_the_peers_close(impl):
    compression = deflate.Compression("shared", read_budget=100)
    _, codec = compression.negotiate(["permessage-deflate"])
    proto = Staller(1 << 20, codec)
    proto.events = []
    proto.accept()
    close = serialize_masked_frame(0x8, (1000).to_bytes(2, "big"), KEY)
    proto.receive(bytearray(compressed_frame(b"x" * 5000) + close))
    assert proto.stalled
    proto.close()  # CLOSING: the message will not be delivered, the peer's close still counts
    while proto.stalled:
        proto.drain()
    assert proto.state is protocol.CLOSED
    assert ("close", 1000) in proto.events and not [e for e in proto.events if e[0] == "message"]


def test_without_an_on_stall_receive_drains_at_once(impl):
    compression = deflate.Compression("shared", read_budget=10)
    _, codec = compression.negotiate(["permessage-deflate"])
    proto = Recorder(1 << 20, codec)
    proto.events = []
    proto.accept()
    text = "drained in one receive() call " * 100
    assert feed(proto, compressed_frame(text.encode()) * 2) == [("message", text)] * 2
    assert not proto.stalled


def test_a_final_block_inside_a_stalled_message_ends_the_draining(impl):
    """Input held back by a stall that lies after the stream's final block is
    padding: drain() must not stall on it forever (found by the fuzz target)."""
    compression = deflate.Compression("shared", read_budget=50)
    _, codec = compression.negotiate(["permessage-deflate"])
    proto = Staller(1 << 20, codec)
    proto.events = []
    proto.accept()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = compressor.compress(b"ends early " * 300) + compressor.flush(zlib.Z_FINISH)
    proto.receive(bytearray(serialize_masked_frame(OP_TEXT | RSV1, final + bytes(40), KEY)))
    for _ in range(1000):
        if not proto.stalled:
            break
        proto.drain()
    assert not proto.stalled
    assert [e for e in proto.events if e[0] == "message"] == [("message", "ends early " * 300)]
