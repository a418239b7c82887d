"""The server-side RFC 6455 state machine (ws/protocol.py), sans I/O.

Every scenario runs on the C hot path and on the pure-Python fallback, and is
fed whole, byte by byte, and split at every offset through ONE reused receive
buffer, as the reactor does. The Autobahn|Testsuite server cases of groups
1-7, 9 and 10 appear below as sans-I/O scenarios, named after their case ids.
"""

import sys
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.ws import frames as fr
from reactor.ws import native
from reactor.ws import protocol as pr
from reactor.ws import unmask as um
from reactor.ws.protocol import CLOSED, CLOSING, CONNECTING, OPEN, InvalidStateError

KEY = bytes.fromhex("37fa213d")
RECV = bytearray(256 * 1024)  # the reactor's long-lived receive buffer


class Recorder(pr.ServerProtocol):
    __slots__ = ("events",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.events = []

    def on_message(self, data):
        self.events.append(("message", data))

    def on_ping(self, payload):
        self.events.append(("ping", payload))

    def on_pong(self, payload):
        self.events.append(("pong", payload))

    def on_close(self, code, reason):
        self.events.append(("close", code))

    def on_output(self, data):
        self.events.append(("output", data))


@pytest.fixture(params=["c", "python"], autouse=True)
def impl(request):
    with native.using(request.param):
        yield request.param


def opened(**kwargs):
    proto = Recorder(**kwargs)
    proto.accept()
    return proto


def frame(opcode, payload=b"", fin=True, key=KEY):
    if isinstance(payload, str):
        payload = payload.encode()
    return fr.serialize_masked_frame(opcode, payload, key, fin)


def text(payload, fin=True):
    return frame(fr.OP_TEXT, payload, fin)


def binary(payload, fin=True):
    return frame(fr.OP_BINARY, payload, fin)


def cont(payload, fin=True):
    return frame(fr.OP_CONTINUATION, payload, fin)


def ping(payload=b""):
    return frame(fr.OP_PING, payload)


def pong(payload=b""):
    return frame(fr.OP_PONG, payload)


def close(code=None, reason=b""):
    return frame(fr.OP_CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason)


def out_pong(payload=b""):
    return ("output", fr.serialize_frame(fr.OP_PONG, payload))


def out_close(code=None):
    return ("output", fr.serialize_frame(fr.OP_CLOSE, fr.close_payload(code)))


def failed(code):
    """The events of a connection failed with ``code``: our close, then CLOSED."""
    return [("output", fr.serialize_frame(fr.OP_CLOSE, b"")[:1]), ("close", code)]


def feed(proto, pieces):
    """Each piece through the shared buffer, at offset 0, like a read."""
    for piece in pieces:
        RECV[: len(piece)] = piece
        proto.receive(RECV, 0, len(piece))
    return proto.events


def normalized(events):
    """Our close frames carry a reason string: compare code and opcode only."""
    out = []
    for event in events:
        if event[0] == "output" and event[1][:1] == b"\x88":
            out.append(("output-close", event[1][2:4]))
        else:
            out.append(event)
    return out


def splits(data):
    """Whole, byte by byte, and split in two at every offset."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def expect(data, events, *, max_split=4096, **kwargs):
    """Feed ``data`` every way and check the events are always ``events``."""
    if len(data) > max_split:
        ways = [[data], [data[i : i + 997] for i in range(0, len(data), 997)]]
    else:
        ways = splits(data)
    for pieces in ways:
        got = feed(opened(**kwargs), pieces)
        assert normalized(got) == normalized(events), [len(p) for p in pieces][:10]


def fail_events(code):
    return [("output", bytes([0x88, 2]) + code.to_bytes(2, "big")), ("close", code)]


def expect_fail(data, code, before=(), **kwargs):
    expect(data, [*before, *fail_events(code)], **kwargs)


# ---- state machine -----------------------------------------------------------


def test_initial_state_and_transitions():
    proto = Recorder()
    assert proto.state is CONNECTING and not proto.is_open
    with pytest.raises(InvalidStateError):
        proto.receive(bytearray(text("x")))
    with pytest.raises(InvalidStateError):
        proto.send("too early")
    proto.accept()
    assert proto.state is OPEN and proto.is_open
    with pytest.raises(InvalidStateError):
        proto.accept()


def test_send_helpers_build_server_frames():
    proto = opened()
    assert proto.send("Hello") == b"\x81\x05Hello"
    assert proto.send("é") == b"\x81\x02" + "é".encode()
    assert proto.send(b"\x00") == proto.send(bytearray(b"\x00")) == b"\x82\x01\x00"
    assert proto.ping(b"p") == b"\x89\x01p"
    with pytest.raises(ValueError):
        proto.ping(b"x" * 126)


def test_local_close_then_peer_close():
    proto = opened()
    assert proto.close(1001, "bye") == b"\x88\x05\x03\xe9bye"
    assert proto.state is CLOSING
    assert proto.close() == b""  # idempotent
    with pytest.raises(InvalidStateError):
        proto.send("no data after close")
    with pytest.raises(InvalidStateError):
        proto.ping()
    feed(proto, [text("ignored") + ping(b"ignored") + pong(b"reported") + close(1000)])
    assert proto.events == [("pong", b"reported"), ("close", 1000)]  # no reply close
    assert proto.state is CLOSED


def test_local_close_drops_a_message_in_progress():
    proto = opened()
    feed(proto, [text("part", fin=False)])
    proto.close()
    feed(proto, [cont("rest") + close(1000)])
    assert proto.events == [("close", 1000)]


def test_local_close_ignores_data_frames_split_across_reads():
    proto = opened()
    proto.close()
    data = binary(b"x" * 5000) + text(b"\xff invalid utf-8 is not even read") + close(1000)
    feed(proto, [data[i : i + 700] for i in range(0, len(data), 700)])
    assert proto.events == [("close", 1000)]


def test_invalid_local_close_arguments_keep_the_state():
    proto = opened()
    for code in (999, 1005, 1006, 5000):
        with pytest.raises(ValueError):
            proto.close(code)
    with pytest.raises(ValueError):
        proto.close(1000, "x" * 124)
    assert proto.state is OPEN
    assert proto.close(None) == b"\x88\x00"


def test_violation_while_closing_sends_no_second_close():
    proto = opened()
    proto.close()
    feed(proto, [bytes((0xC1, 0x80))])  # RSV1 set
    assert proto.events == [("close", 1002)]
    assert proto.state is CLOSED


def test_connection_lost():
    proto = opened()
    feed(proto, [text("partial", fin=False)])
    proto.connection_lost()
    assert proto.events == [("close", 1006)]
    assert proto.state is CLOSED
    proto.connection_lost()
    assert proto.events == [("close", 1006)]


def test_nothing_is_processed_after_a_close_frame():
    proto = opened()
    data = text("a") + close(1000) + text("after") + ping()
    RECV[: len(data)] = data
    consumed = proto.receive(RECV, 0, len(data))
    assert consumed == len(text("a") + close(1000))
    assert proto.events == [("message", "a"), out_close(1000), ("close", 1000)]
    assert proto.receive(RECV, consumed, len(data)) == consumed


class FinalMarker(Recorder):
    __slots__ = ()

    def on_final_output(self, data):
        self.events.append(("final", data))


def test_only_the_reply_to_a_peer_close_is_final_output():
    """The glue closes TCP with final output (the FIN in the same segment), so it must be
    exactly the reply to the peer's close: never a pong, nor a violation's close frame,
    which goes out while the peer may still be sending."""
    proto = FinalMarker()
    proto.accept()
    data = ping(b"p") + close(1000)
    RECV[: len(data)] = data
    proto.receive(RECV, 0, len(data))
    assert proto.events == [
        ("output", fr.serialize_frame(fr.OP_PONG, b"p")),
        ("ping", b"p"),
        ("final", fr.serialize_frame(fr.OP_CLOSE, (1000).to_bytes(2, "big"))),
        ("close", 1000),
    ]
    violator = FinalMarker()
    violator.accept()
    data = bytes([0x81, 0x01]) + b"x"  # unmasked: 1002
    RECV[: len(data)] = data
    violator.receive(RECV, 0, len(data))
    assert [kind for kind, _ in violator.events] == ["output", "close"]
    assert violator.events[1] == ("close", 1002)
    closing = FinalMarker()  # our close went out first: the peer's completes it
    closing.accept()
    closing.close(1000)
    data = close(1000)
    RECV[: len(data)] = data
    closing.receive(RECV, 0, len(data))
    assert closing.events == [("close", 1000)]


def test_final_output_defaults_to_on_output():
    proto = opened()
    data = close(1001)
    RECV[: len(data)] = data
    proto.receive(RECV, 0, len(data))
    assert proto.events == [out_close(1001), ("close", 1001)]


def test_frames_after_the_handshake_in_the_same_read():
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    data = request + text("pipelined") + binary(b"\x01")
    buf = bytearray(data)
    proto = opened()
    assert proto.receive(buf, len(request), len(buf)) == len(buf)
    assert proto.events == [("message", "pipelined"), ("message", b"\x01")]
    assert buf[: len(request)] == request


def test_window_bounds_are_checked():
    proto = opened()
    with pytest.raises(ValueError):
        proto.receive(bytearray(4), 0, 5)
    with pytest.raises(ValueError):
        proto.receive(bytearray(4), 3, 2)


def test_receive_accepts_bytes_and_memoryviews():
    proto = opened()
    proto.receive(text("from bytes"))
    buf = bytearray(binary(b"from a view"))
    view = memoryview(buf)[0 : len(buf)]
    proto.receive(view, 0, len(view))
    view.release()  # the protocol kept no export of the reactor's view
    assert proto.events == [("message", "from bytes"), ("message", b"from a view")]


def test_many_frames_in_one_window_beyond_the_scan_capacity():
    count = fr.SCAN_CAPACITY * 2 + 7
    data = b"".join(text(str(i)) for i in range(count))
    assert feed(opened(), [data]) == [("message", str(i)) for i in range(count)]


def test_hook_closing_mid_window_stops_data_delivery():
    class Closer(Recorder):
        __slots__ = ()

        def on_message(self, data):
            super().on_message(data)
            self.events.append(("output", self.close(1000)))

    proto = Closer()
    proto.accept()
    feed(proto, [text("first") + text("dropped") + binary(b"dropped") + close(1000)])
    assert proto.events == [
        ("message", "first"),
        ("output", b"\x88\x02\x03\xe8"),
        ("close", 1000),
    ]


def test_hook_losing_the_connection_mid_window_stops_everything():
    class Dropper(Recorder):
        __slots__ = ()

        def on_message(self, data):
            super().on_message(data)
            self.connection_lost()

    proto = Dropper()
    proto.accept()
    data = text("first") + text("second")
    RECV[: len(data)] = data
    assert proto.receive(RECV, 0, len(data)) == len(text("first"))
    assert proto.events == [("message", "first"), ("close", 1006)]


def test_threads_with_their_own_buffers_do_not_interfere():
    """The C scan releases the GIL: two reactors in two threads, each with
    its own receive buffer, must still see only their own frames."""
    import threading

    def messages(tag):  # different lengths, so mixed-up descriptors would show
        return [f"{tag}-{i}-" + tag * (i if tag == "a" else 3 * i) for i in range(16)]

    def run(tag, results):
        buf = bytearray(4096)
        proto = opened()
        data = b"".join(text(m) for m in messages(tag))
        for _ in range(1000):
            buf[: len(data)] = data
            proto.receive(buf, 0, len(data))
        results[tag] = proto.events

    results = {}
    threads = [threading.Thread(target=run, args=(tag, results)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for tag in ("a", "b"):
        assert results[tag] == [("message", m) for m in messages(tag)] * 1000


def test_base_class_hooks_must_be_implemented():
    proto = pr.ServerProtocol()
    proto.accept()
    with pytest.raises(NotImplementedError):
        proto.receive(bytearray(text("x")))
    proto.on_ping(b"")  # ping/pong hooks are optional
    proto.on_pong(b"")


# ---- memory ------------------------------------------------------------------


class Idle(pr.ServerProtocol):
    __slots__ = ()

    def on_message(self, data):
        pass

    def on_close(self, code, reason):
        pass

    def on_output(self, data):
        pass


SHARED = (None, OPEN, CLOSING, CLOSED, CONNECTING, pr.DEFAULT_MAX_MESSAGE_SIZE)


def per_connection_bytes(proto):
    """sys.getsizeof of the object plus every referenced object that is not a
    shared singleton (None, the State members, the server-wide limit)."""
    size = sys.getsizeof(proto)
    for name in pr.ServerProtocol.__slots__:
        value = getattr(proto, name)
        if not any(value is shared for shared in SHARED):
            size += sys.getsizeof(value)
    return size


def test_idle_connection_holds_no_buffer_and_few_bytes():
    proto = Idle()
    proto.accept()
    assert per_connection_bytes(proto) <= 150
    assert (proto._head, proto._frame, proto._message) == (None, None, None)
    assert not hasattr(proto, "__dict__")


def test_buffers_are_dropped_when_done():
    proto = Idle()
    proto.accept()
    data = text("κόσμε", fin=False) + ping(b"x") + cont("!" * 3000) + binary(b"y" * 70000)
    pieces = [data[:3], data[3:9], data[9:5000], data[5000:5003], data[5003:]]
    seen = set()
    for piece in pieces:
        RECV[: len(piece)] = piece
        proto.receive(RECV, 0, len(piece))
        seen.update(n for n in ("_head", "_frame", "_message") if getattr(proto, n) is not None)
    assert seen == {"_head", "_frame", "_message"}  # each was used on the way...
    assert (proto._head, proto._frame, proto._message) == (None, None, None)  # ...and dropped
    assert per_connection_bytes(proto) <= 150


def test_tiny_fragments_cost_no_more_memory_than_the_message():
    """A text message in 2-byte fragments: the buffered state stays close to
    the payload size (no per-fragment objects)."""
    import tracemalloc

    count = 20_000
    data = text("é", fin=False) + b"".join(cont("é", fin=False) for _ in range(count))
    reads = chopped(data, 65536)
    proto = Idle()
    proto.accept()
    tracemalloc.start()
    try:
        for piece in reads:
            RECV[: len(piece)] = piece
            proto.receive(RECV, 0, len(piece))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    payload_size = 2 * (count + 1)
    assert proto._message.size == payload_size
    assert held < 2 * payload_size + 16384


# ---- Autobahn group 1: framing -----------------------------------------------------


@pytest.mark.parametrize("length", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_1_x_text_messages(length):
    expect(text("*" * length), [("message", "*" * length)])


@pytest.mark.parametrize("length", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_2_x_binary_messages(length):
    payload = bytes([0xFE]) * length
    expect(binary(payload), [("message", payload)])


def test_1_1_8_text_65536_in_chops_of_997():
    data = text("*" * 65536)
    got = feed(opened(), [data[i : i + 997] for i in range(0, len(data), 997)])
    assert got == [("message", "*" * 65536)]


# ---- Autobahn group 2: pings and pongs ----------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"Hello, world!", bytes([0, 255, 254, 253, 252, 251, 0, 255]), b"*" * 125]
)
def test_2_1_to_2_4_ping_gets_a_pong_with_the_same_payload(payload):
    expect(ping(payload), [out_pong(payload), ("ping", payload)])


def test_2_5_ping_over_125_bytes_fails():
    expect_fail(fr.frame_header(fr.OP_PING, 126, mask=True) + KEY + b"*" * 126, 1002)


def test_2_6_ping_125_in_chops_of_one_byte():
    data = ping(b"*" * 125)
    got = feed(opened(), [data[i : i + 1] for i in range(len(data))])
    assert got == [out_pong(b"*" * 125), ("ping", b"*" * 125)]


def test_2_7_to_2_9_unsolicited_pongs_are_reported_not_answered():
    expect(pong(), [("pong", b"")])
    expect(pong(b"unsolicited"), [("pong", b"unsolicited")])
    expect(pong(b"x") + ping(b"y"), [("pong", b"x"), out_pong(b"y"), ("ping", b"y")])


def test_2_10_and_2_11_ten_pings():
    data = b"".join(ping(b"payload-%d" % i) for i in range(10))
    events = []
    for i in range(10):
        events += [out_pong(b"payload-%d" % i), ("ping", b"payload-%d" % i)]
    expect(data, events, max_split=200)
    assert feed(opened(), [data[i : i + 1] for i in range(len(data))]) == events


# ---- Autobahn group 3: reserved bits --------------------------------------------------


def with_rsv(data, bits):
    return bytes((data[0] | bits,)) + data[1:]


def test_3_1_text_with_rsv1():
    expect_fail(with_rsv(text("Hello"), 0x40), 1002)


def test_3_2_to_3_4_valid_message_then_rsv_then_ping():
    for bits in (0x20, 0x60, 0x10):
        data = text("Hello") + with_rsv(text("Hello"), bits) + ping(b"never answered")
        expect_fail(data, 1002, before=[("message", "Hello")], max_split=64)


def test_3_5_to_3_7_binary_ping_and_close_with_rsv():
    expect_fail(with_rsv(binary(b"\xff" * 8), 0x50), 1002)
    expect_fail(with_rsv(ping(b"Hello"), 0x60), 1002)
    expect_fail(with_rsv(close(1000), 0x70), 1002)


# ---- Autobahn group 4: opcodes --------------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7])
def test_4_1_x_reserved_non_control_opcodes(opcode):
    expect_fail(frame(opcode), 1002)
    data = text("Hello") + frame(opcode, b"reserved") + ping(b"never answered")
    expect_fail(data, 1002, before=[("message", "Hello")], max_split=64)


@pytest.mark.parametrize("opcode", [0xB, 0xC, 0xD, 0xE, 0xF])
def test_4_2_x_reserved_control_opcodes(opcode):
    expect_fail(frame(opcode), 1002)
    data = text("Hello") + frame(opcode, b"reserved") + ping(b"never answered")
    expect_fail(data, 1002, before=[("message", "Hello")], max_split=64)


# ---- Autobahn group 5: fragmentation -------------------------------------------------------


def test_5_1_and_5_2_fragmented_control_frames():
    data = bytes((0x09, 0x80 | 9)) + KEY + b"fragment1"  # ping without FIN
    expect_fail(data, 1002)
    data = bytes((0x0A, 0x80 | 9)) + KEY + b"fragment1"  # pong without FIN
    expect_fail(data, 1002)


def test_5_3_to_5_5_text_in_two_fragments():
    expect(text("fragment1", fin=False) + cont("fragment2"), [("message", "fragment1fragment2")])


def test_5_6_to_5_8_ping_between_fragments():
    data = text("fragment1", fin=False) + ping(b"ping payload") + cont("fragment2")
    events = [
        out_pong(b"ping payload"),
        ("ping", b"ping payload"),
        ("message", "fragment1fragment2"),
    ]
    expect(data, events)


@pytest.mark.parametrize("fin", [True, False])
def test_5_9_to_5_14_continuation_without_a_message(fin):
    expect_fail(cont("non-continuation payload", fin=fin), 1002)
    data = cont("fragment", fin=fin) + text("Hello, world!")
    expect_fail(data, 1002, max_split=64)


def test_5_15_continuation_after_the_message_ended():
    data = text("fragment1", fin=False) + cont("fragment2") + cont("fragment3", fin=False)
    data += text("fragment4")
    expect_fail(data, 1002, before=[("message", "fragment1fragment2")], max_split=80)


@pytest.mark.parametrize("last_fin", [True, False])
def test_5_16_and_5_17_continuation_first(last_fin):
    data = cont("fragment1", fin=False) + text("fragment2", fin=False) + cont("fragment3")
    expect_fail(data, 1002, max_split=64)


def test_5_18_new_data_frame_inside_a_fragmented_message():
    expect_fail(text("fragment1", fin=False) + text("fragment2"), 1002)
    expect_fail(text("fragment1", fin=False) + binary(b"fragment2"), 1002)


def test_5_19_and_5_20_pings_between_five_fragments():
    data = text("fragment1", fin=False) + cont("fragment2", fin=False) + ping(b"pongme 1!")
    data += cont("fragment3", fin=False) + cont("fragment4", fin=False) + ping(b"pongme 2!")
    data += cont("fragment5")
    events = [out_pong(b"pongme 1!"), ("ping", b"pongme 1!")]
    events += [out_pong(b"pongme 2!"), ("ping", b"pongme 2!")]
    events.append(("message", "fragment1fragment2fragment3fragment4fragment5"))
    expect(data, events, max_split=100)
    chopped = [data[i : i + 1] for i in range(len(data))]
    assert feed(opened(), chopped) == events


# ---- Autobahn group 6: UTF-8 handling -------------------------------------------------------

KOSME = "κόσμε".encode()
VALID_UTF8 = [
    b"",
    b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",  # 6.2.1
    KOSME,  # 6.5.1
    b"\x00",
    b"\xc2\x80",
    b"\xe0\xa0\x80",
    b"\xf0\x90\x80\x80",  # 6.7.x: first sequence of each length
    b"\x7f",
    b"\xdf\xbf",
    b"\xef\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",  # 6.11.x: last of each length, U+10FFFF
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbd",  # around the surrogates
    b"\xef\xbf\xbe",
    b"\xef\xbf\xbf",  # noncharacters are valid UTF-8 (6.23.x)
]
INVALID_UTF8 = [
    KOSME + b"\xed\xa0\x80edited",  # 6.3.1: a surrogate
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",  # 6.4
    b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80",  # 6.8.x: 5- and 6-byte forms
    b"\xf4\x90\x80\x80",  # 6.10.1: above U+10FFFF
    b"\x80",
    b"\xbf",
    b"\x80\xbf\x80",  # 6.12.x: lone continuation bytes
    b"\xc0 ",
    b"\xe0\x80 ",
    b"\xf0\x80\x80 ",  # 6.14.x: missing continuation / lonely start
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",  # 6.17.x: overlong "/"
    b"\xc1\xbf",
    b"\xe0\x9f\xbf",
    b"\xf0\x8f\xbf\xbf",  # 6.18.x: maximum overlongs
    b"\xed\xa0\x80",
    b"\xed\xad\xbf",
    b"\xed\xbf\xbf",  # 6.19.x/6.20.x: surrogates
    b"\xed\xa0\x80\xed\xb0\x80",  # 6.21.1: a surrogate pair
    b"\xfe",
    b"\xff",
    b"\xfe\xfe\xff\xff",  # 6.16.x: impossible bytes
    b"\xce",
    b"\xe1\xbd",
    b"\xf0\x90\x80",  # truncated at the very end of the message
]


def test_6_1_empty_text_messages():
    expect(text(b""), [("message", "")])
    expect(text(b"", fin=False) + cont(b"", fin=False) + cont(b""), [("message", "")])
    expect(text(b"", fin=False) + cont(b"middle", fin=False) + cont(b""), [("message", "middle")])


@pytest.mark.parametrize("payload", VALID_UTF8)
def test_6_2_and_valid_utf8_whole_and_in_one_byte_fragments(payload):
    expected = [("message", payload.decode())]
    expect(text(payload), expected)
    fragments = [payload[i : i + 1] for i in range(len(payload))] or [b""]
    data = b"".join(
        frame(fr.OP_TEXT if i == 0 else fr.OP_CONTINUATION, p, fin=i == len(fragments) - 1)
        for i, p in enumerate(fragments)
    )
    expect(data, expected, max_split=200)


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_6_3_and_invalid_utf8_fails_1007(payload):
    expect_fail(text(payload), 1007)
    fragments = [payload[i : i + 1] for i in range(len(payload))]
    data = b"".join(
        frame(fr.OP_TEXT if i == 0 else fr.OP_CONTINUATION, p, fin=i == len(fragments) - 1)
        for i, p in enumerate(fragments)
    )
    expect_fail(data, 1007, max_split=200)


@given(
    message=st.text(max_size=60),
    cuts=st.lists(st.integers(0, 300), max_size=5),
    reads=st.lists(st.integers(1, 50), min_size=1, max_size=8),
)
@settings(max_examples=150, deadline=None)
def test_valid_utf8_split_anywhere_in_fragments_and_reads(message, cuts, reads):
    """Fragment boundaries and read boundaries inside code points."""
    payload = message.encode()
    bounds = sorted({0, len(payload), *(c for c in cuts if c < len(payload))})
    pieces = [payload[a:b] for a, b in pairwise(bounds)] or [b""]
    data = b"".join(
        frame(fr.OP_TEXT if i == 0 else fr.OP_CONTINUATION, p, fin=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    )
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        chunks.append(data[pos : pos + reads[i % len(reads)]])
        pos += reads[i % len(reads)]
        i += 1
    assert feed(opened(), chunks) == [("message", message)]


SEQUENCE_64 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"


def test_6_4_1_fail_fast_on_the_fragment_with_the_bad_bytes():
    proto = opened()
    feed(proto, [text(SEQUENCE_64, fin=False)])
    assert proto.events == []
    feed(proto, [cont(b"\xf4\x90\x80\x80", fin=False)])
    assert normalized(proto.events) == normalized(fail_events(1007))


def test_6_4_2_fail_fast_when_the_bad_byte_is_alone_in_its_fragment():
    proto = opened()
    feed(proto, [text(SEQUENCE_64 + b"\xf4", fin=False)])
    assert proto.events == []
    feed(proto, [cont(b"\x90", fin=False)])
    assert normalized(proto.events) == normalized(fail_events(1007))


@pytest.mark.parametrize("bad", [b"\xf4\x90\x80\x80", b"\xf4\x90", b"\xed\xa0", b"\xc0", b"\x80"])
def test_6_4_3_and_6_4_4_fail_fast_inside_one_frame_split_across_reads(bad):
    """One text frame whose payload arrives in parts: the invalid bytes fail
    the connection when they arrive, long before the frame is complete."""
    payload = SEQUENCE_64 + bad + b"edited" * 100
    data = text(payload)
    header_size = len(data) - len(payload)
    first = header_size + len(SEQUENCE_64)
    proto = opened()
    feed(proto, [data[:first]])
    assert proto.events == []
    feed(proto, [data[first : first + len(bad)]])
    assert normalized(proto.events) == normalized(fail_events(1007))


# ---- Autobahn group 7: close handling --------------------------------------------------------


def test_7_1_1_message_then_close():
    expect(text("Hello") + close(1000), [("message", "Hello"), out_close(1000), ("close", 1000)])


def test_7_1_2_to_7_1_4_nothing_after_the_close():
    closing = [out_close(1000), ("close", 1000)]
    expect(close(1000) + close(1000), closing)
    expect(close(1000) + ping(b"late"), closing)
    expect(close(1000) + text("late"), closing)


def test_7_1_5_close_between_fragments():
    expect(
        text("fragment1", fin=False) + close(1000) + cont("fragment2"),
        [
            out_close(1000),
            ("close", 1000),
        ],
    )


def test_7_1_6_large_message_then_close_then_ping():
    data = text("B" * 262144) + close(1000) + ping(b"late")
    expect(data, [("message", "B" * 262144), out_close(1000), ("close", 1000)])


def test_7_3_1_empty_close_gets_an_empty_close():
    expect(close(), [("output", b"\x88\x00"), ("close", 1005)])


def test_7_3_2_one_byte_close_payload():
    expect_fail(frame(fr.OP_CLOSE, b"\x03"), 1002)


def test_7_3_3_to_7_3_5_close_with_code_and_reason():
    expect(close(1000), [out_close(1000), ("close", 1000)])
    expect(close(1000, b"Hello World!"), [out_close(1000), ("close", 1000)])
    expect(close(1000, b"*" * 123), [out_close(1000), ("close", 1000)])


def test_7_3_6_close_reason_too_long():
    data = fr.frame_header(fr.OP_CLOSE, 126, mask=True) + KEY + b"\x03\xe8" + b"*" * 124
    expect_fail(data, 1002)


def test_7_5_1_close_reason_not_utf8():
    expect_fail(close(1000, SEQUENCE_64 + b"\xed\xa0\x80edited"), 1007)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
def test_7_7_x_valid_close_codes_are_echoed(code):
    expect(close(code), [out_close(code), ("close", code)])


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 1100, 2000, 2999])
def test_7_9_x_invalid_close_codes(code):
    expect_fail(close(code), 1002)


@pytest.mark.parametrize("code", [5000, 65535])
def test_7_13_x_close_codes_out_of_range(code):
    expect_fail(close(code), 1002)


# ---- Autobahn groups 9 and 10: sizes and fragmentation ----------------------------------------


def chopped(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [64 * 1024, 1 << 20, 16 << 20])
def test_9_1_x_large_text_messages(size):
    payload = "*" * size
    assert feed(opened(), chopped(text(payload), len(RECV))) == [("message", payload)]


@pytest.mark.parametrize("size", [256 * 1024, 4 << 20, 16 << 20])
def test_9_2_x_large_binary_messages(size):
    payload = b"\xfe" * size
    assert feed(opened(), chopped(binary(payload), len(RECV))) == [("message", payload)]


@pytest.mark.parametrize("fragment", [64, 4096, 65536, 1 << 20])
def test_9_3_x_and_9_4_x_four_mib_in_fragments(fragment):
    payload = b"*" * (4 << 20)
    for opcode, expected in ((fr.OP_TEXT, payload.decode()), (fr.OP_BINARY, payload)):
        pieces = chopped(payload, fragment)
        data = b"".join(
            frame(opcode if i == 0 else fr.OP_CONTINUATION, p, fin=i == len(pieces) - 1)
            for i, p in enumerate(pieces)
        )
        assert feed(opened(), chopped(data, len(RECV))) == [("message", expected)]


@pytest.mark.parametrize("chop", [64, 4096, 131072])
def test_9_5_x_and_9_6_x_one_mib_in_chops(chop):
    payload = b"*" * (1 << 20)
    assert feed(opened(), chopped(text(payload), chop)) == [("message", payload.decode())]
    assert feed(opened(), chopped(binary(payload), chop)) == [("message", payload)]


def test_9_7_and_9_8_many_small_messages():
    data = b"".join(text("*" * 16) + binary(b"\x01" * 16) for _ in range(1000))
    expected = [("message", "*" * 16), ("message", b"\x01" * 16)] * 1000
    assert feed(opened(), chopped(data, 4096)) == expected


def test_10_1_1_auto_fragmented_65536():
    payload = b"*" * 65536
    pieces = chopped(payload, 1300)
    data = b"".join(
        frame(fr.OP_TEXT if i == 0 else fr.OP_CONTINUATION, p, fin=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    )
    expect(data, [("message", payload.decode())])


# ---- message size limit ---------------------------------------------------------------


def test_exactly_the_limit_is_allowed():
    expect(binary(b"x" * 1000), [("message", b"x" * 1000)], max_message_size=1000)
    data = text("x" * 600, fin=False) + cont("x" * 400)
    expect(data, [("message", "x" * 1000)], max_message_size=1000)


def test_limit_is_checked_from_the_header_before_buffering():
    data = binary(b"x" * 1001)
    proto = opened(max_message_size=1000)
    feed(proto, [data[:4]])  # the header alone: 2 bytes + 16-bit length
    assert normalized(proto.events) == normalized(fail_events(1009))
    expect_fail(data, 1009, max_message_size=1000)


def test_limit_counts_the_fragments_already_buffered():
    first = text("x" * 600, fin=False)
    second = cont("x" * 401)
    proto = opened(max_message_size=1000)
    feed(proto, [first + second[:8]])  # the continuation's header (with its key) only
    assert normalized(proto.events) == normalized(fail_events(1009))
    expect_fail(first + second, 1009, max_message_size=1000)


def test_limit_applies_to_data_not_to_control_frames():
    data = ping(b"p" * 100) + text("x" * 10) + text("x" * 11)
    before = [out_pong(b"p" * 100), ("ping", b"p" * 100), ("message", "x" * 10)]
    expect_fail(data, 1009, before=before, max_message_size=10, max_split=200)


def test_default_limit_is_16_mib():
    assert pr.DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    proto = opened()
    feed(proto, [fr.frame_header(fr.OP_BINARY, (16 << 20) + 1, mask=True) + KEY])
    assert normalized(proto.events) == normalized(fail_events(1009))


def test_invalid_limits():
    with pytest.raises(ValueError):
        Recorder(max_message_size=-1)
    with pytest.raises(ValueError):
        Recorder(max_message_size=1 << 63)


# ---- property tests: random conversations, random reads --------------------------------

message_st = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=300)),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("ping"), st.binary(max_size=125)),
    st.tuples(st.just("pong"), st.binary(max_size=125)),
)


def conversation(items, fragment_sizes, keys):
    """Wire bytes and expected events for a list of (kind, payload)."""
    data, events = [], []
    for n, (kind, payload) in enumerate(items):
        key = keys[n % len(keys)]
        if kind in ("ping", "pong"):
            data.append(frame(fr.OP_PING if kind == "ping" else fr.OP_PONG, payload, key=key))
            events += (
                [out_pong(payload), ("ping", payload)] if kind == "ping" else [("pong", payload)]
            )
            continue
        raw = payload.encode() if kind == "text" else payload
        size = fragment_sizes[n % len(fragment_sizes)]
        pieces = chopped(raw, size) or [b""]
        opcode = fr.OP_TEXT if kind == "text" else fr.OP_BINARY
        for i, piece in enumerate(pieces):
            op = opcode if i == 0 else fr.OP_CONTINUATION
            data.append(frame(op, piece, fin=i == len(pieces) - 1, key=key))
        events.append(("message", payload))
    return b"".join(data), events


@given(
    items=st.lists(message_st, max_size=8),
    fragment_sizes=st.lists(st.integers(1, 400), min_size=1, max_size=4),
    keys=st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=3),
    reads=st.lists(st.integers(1, 700), min_size=1, max_size=6),
)
@settings(max_examples=150, deadline=None)
def test_random_conversations_random_reads(items, fragment_sizes, keys, reads):
    data, events = conversation(items, fragment_sizes, keys)
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = reads[i % len(reads)]
        chunks.append(data[pos : pos + size])
        pos, i = pos + size, i + 1
    data_close = close(1000)
    proto = opened()
    assert feed(proto, [*chunks, data_close]) == [*events, out_close(1000), ("close", 1000)]
    assert (proto._head, proto._frame, proto._message) == (None, None, None)


def test_python_fallback_and_c_paths_agree_on_garbage():
    """Random bytes after a valid prefix: both paths reach the same verdict."""
    import random

    rng = random.Random(6455)
    for _ in range(300):
        data = text("ok") + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        results = []
        for name in ("c", "python"):
            with native.using(name):
                results.append(normalized(feed(opened(max_message_size=64), [data])))
        assert results[0] == results[1]
    um.forget_cached_window()
