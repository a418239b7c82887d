"""Write the seed corpus: ``python tests/fuzz/seeds.py`` (idempotent).

Seeds are the RFC examples (RFC 6455 §1.2, §4.1, §5.7; RFC 9110 and 9112
request, range and conditional examples) plus one input per rule each target
checks, so the fuzzer starts next to every branch. The first byte of each
seed is the target's configuration byte (see the target's docstring).
The files are committed; this script documents where each comes from.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY = bytes((0x37, 0xFA, 0x21, 0x3D))  # RFC 6455 §5.7's masking key


def masked(
    opcode: int, payload: bytes, fin: bool = True, key: bytes = KEY, rsv1: bool = False
) -> bytes:
    """A client frame, built here independently of ws/frames.py."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_frames() -> dict[str, bytes]:
    # RFC 6455 §5.7, verbatim. The unmasked ones are protocol errors from a client.
    rfc = {
        "rfc6455-5.7-masked-hello": bytes.fromhex("818537fa213d7f9f4d5158"),
        "rfc6455-5.7-unmasked-hello": bytes.fromhex("810548656c6c6f"),
        "rfc6455-5.7-fragmented-unmasked": bytes.fromhex("010348656c8002 6c6f".replace(" ", "")),
        "rfc6455-5.7-unmasked-ping": bytes.fromhex("890548656c6c6f"),
        "rfc6455-5.7-masked-pong": bytes.fromhex("8a8537fa213d7f9f4d5158"),
        "rfc6455-5.7-256-bytes-unmasked": bytes.fromhex("827e0100") + bytes(256),
        "rfc6455-5.7-64KiB-header-unmasked": bytes.fromhex("827f0000000000010000") + bytes(64),
    }
    text = "Grüße, κόσμε 🌍".encode()
    ours = {
        "masked-fragmented-hello": masked(1, b"Hel", fin=False) + masked(0, b"lo"),
        "masked-256-binary": masked(2, bytes(range(256))),
        "masked-64KiB-binary-truncated": masked(2, bytes(65536))[:4000],
        "ping-inside-fragmented-text": masked(1, text[:7], False)
        + masked(9, b"ping")
        + masked(0, text[7:]),
        "utf8-split-in-a-sequence": masked(1, text[:2], False) + masked(0, text[2:]),
        "invalid-utf8": masked(1, b"ok\xc0\xafno"),
        "surrogate-utf8": masked(1, b"\xed\xa0\x80"),
        "close-1000-reason": masked(8, b"\x03\xe8bye") + masked(1, b"ignored"),
        "close-empty": masked(8, b""),
        "close-one-byte": masked(8, b"\x03"),
        "close-1005-on-wire": masked(8, b"\x03\xed"),
        "close-invalid-reason": masked(8, b"\x03\xe8\xff"),
        "close-4999": masked(8, b"\x13\x87"),
        "rsv1-set": bytes((0xC1,)) + masked(1, b"x")[1:],
        "reserved-opcode-3": bytes((0x83,)) + masked(1, b"x")[1:],
        "fragmented-ping": bytes((0x09,)) + masked(9, b"x")[1:],
        "ping-126-bytes": masked(9, bytes(126)),
        "length-msb-set": bytes((0x82, 0xFF, 0x80)) + bytes(7) + KEY,
        "continuation-first": masked(0, b"x"),
        "new-message-inside-fragmented": masked(1, b"a", False) + masked(2, b"b"),
        "pipelined-messages": b"".join(masked(1 + i % 2, bytes([i]) * i) for i in range(40)),
        "non-minimal-length": bytes((0x82, 0xFE, 0, 5)) + KEY + bytes(5),
    }
    seeds = {f"{name}.bin": b"\x00" + wire for name, wire in {**rfc, **ours}.items()}
    # The same inputs under other configurations: CLOSING, small limits, odd read sizes.
    for config, name in ((0x08, "pipelined-messages"), (0x05, "masked-256-binary")):
        seeds[f"{name}-config-{config:02x}.bin"] = bytes((config,)) + ours[name]
    seeds["masked-fragmented-hello-limit-1.bin"] = b"\x02" + ours["masked-fragmented-hello"]
    seeds["ping-inside-fragmented-reads.bin"] = b"\xf0" + ours["ping-inside-fragmented-text"]
    # permessage-deflate negotiated (config bit 7), RFC 7692.
    for name, wire in compressed_frames().items():
        seeds[f"deflate-{name}.bin"] = wire
    return seeds


def deflated(payload: bytes, compressor=None) -> bytes:
    """RFC 7692 §7.2.1: deflate, sync flush, drop the 4-byte tail."""
    compressor = compressor or zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def compressed_frames() -> dict[str, bytes]:
    text = "Grüße, κόσμε 🌍 ".encode() * 20
    data = deflated(text)
    kept = zlib.compressobj(9, zlib.DEFLATED, -15)  # context kept across two messages
    two = masked(1, deflated(text, kept), rsv1=True) + masked(1, deflated(text, kept), rsv1=True)
    return {
        "text": b"\x80" + masked(1, data, rsv1=True),
        "fragments": b"\x80"
        + masked(1, data[:5], False, rsv1=True)
        + masked(9, b"ping")
        + masked(0, data[5:20], False)
        + masked(0, data[20:]),
        "context-kept": b"\x80" + two,
        "empty": b"\x80" + masked(2, b"\x00", rsv1=True) + masked(2, b"", rsv1=True),
        "rsv1-continuation": b"\x80"
        + masked(1, data[:5], False, rsv1=True)
        + masked(0, data[5:], rsv1=True),
        "rsv1-ping": b"\x80" + masked(9, b"x", rsv1=True),
        "rsv2": b"\x80" + bytes((0xA1,)) + masked(1, b"x")[1:],
        "bomb-limit-1000": b"\x85" + masked(2, deflated(bytes(100_000)), rsv1=True),
        "corrupt": b"\x80" + masked(2, b"\xff\xfe\xfd", rsv1=True),
        "invalid-utf8": b"\x80" + masked(1, deflated(b"ok\xc0\xafno" * 30), rsv1=True),
        "read-split": b"\xb0" + masked(1, data, rsv1=True) + masked(1, b"plain"),
    }


RFC6455_HANDSHAKE = (  # RFC 6455 §1.2 / §4.1, the client's opening handshake
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def ws_handshake() -> dict[str, bytes]:
    h = RFC6455_HANDSHAKE
    variants = {
        "rfc6455-1.2": h,
        "version-8": h.replace(b"Version: 13", b"Version: 8"),
        "no-version": h.replace(b"Sec-WebSocket-Version: 13\r\n", b""),
        "post": h.replace(b"GET", b"POST"),
        "http-1.0": h.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "short-key": h.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZQ=="),
        "two-keys": h.replace(b"Origin", b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nOrigin"),
        "firefox-connection": h.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
        "other-origin": h.replace(b"example.com\r\nSec", b"evil.example\r\nSec"),
        "no-origin": h.replace(b"Origin: http://example.com\r\n", b""),
        "subprotocol-v2": h.replace(b"chat, superchat", b"superchat, v2.chat"),
        "no-host": h.replace(b"Host: server.example.com\r\n", b""),
    }
    seeds = {}
    for name, request in variants.items():
        seeds[f"{name}.txt"] = b"\x04" + request  # through the HTTP parser
        seeds[f"{name}-origins-list-b.txt"] = b"\x07" + request
        # the same lines handed to the validator directly (not through the parser)
        seeds[f"{name}-direct.txt"] = b"\x00" + request.replace(b"\r\n", b"\n")
    return seeds


def http() -> dict[str, bytes]:
    get = b"GET /a.txt HTTP/1.1\r\nHost: www.example.com\r\n"
    post = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    requests = {
        # RFC 9110 §1 / RFC 9112 §2.1's example request
        "rfc9112-example": b"GET /hello.txt HTTP/1.1\r\nUser-Agent: curl/7.64.1\r\n"
        b"Host: www.example.com\r\nAccept-Language: en, mi\r\n\r\n",
        "rfc9112-3.2.2-absolute-form": b"GET http://www.example.org/pub/WWW/TheProject.html "
        b"HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
        "rfc9112-3.2.3-authority-form": b"CONNECT www.example.com:80 HTTP/1.1\r\n"
        b"Host: www.example.com\r\n\r\n",
        "rfc9112-3.2.4-asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "rfc9110-14.1.2-range-first-500": get + b"Range: bytes=0-499\r\n\r\n",
        "rfc9110-14.1.2-range-suffix": get + b"Range: bytes=-50\r\n\r\n",
        "rfc9110-14.1.2-range-open": get + b"Range: bytes=50-\r\n\r\n",
        "rfc9110-14.1.2-two-ranges": get + b"Range: bytes=0-0,-1\r\n\r\n",
        "rfc9110-14.1.2-unsatisfiable": get + b"Range: bytes=1000-2000\r\n\r\n",
        "rfc9110-13.1.2-if-none-match": get + b'If-None-Match: "xyzzy", W/"r2d2xxxx"\r\n\r\n',
        "rfc9110-13.1.3-if-modified-since": get
        + b"If-Modified-Since: Sat, 29 Oct 1994 19:43:31 GMT\r\n\r\n",
        "rfc9110-13.1.1-if-match-star": get + b"If-Match: *\r\n\r\n",
        "rfc9110-13.1.5-if-range-date": get
        + b"If-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\nRange: bytes=1-2\r\n\r\n",
        "rfc9110-5.6.7-asctime": get + b"If-Unmodified-Since: Sun Nov  6 08:49:37 1994\r\n\r\n",
        "http-1.0-no-host": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "head": b"HEAD /sub/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "bare-lf": b"GET /sub HTTP/1.1\nHost: x\n\n",
        "leading-crlf-pipelined": b"\r\n" + get + b"\r\n" + get + b"\r\n",
        "obs-fold": get + b"X-A: 1\r\n  continued\r\n\r\n",
        "te-and-cl": get + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "content-length-5": get + b"Content-Length: 5\r\n\r\nhello",
        "content-length-0-0": get + b"Content-Length: 0, 0\r\n\r\n",
        "two-hosts": get + b"Host: other\r\n\r\n",
        "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + bytes(32),
        "http-2.0-version": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "long-target": b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "many-fields": get + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        "space-before-colon": get + b"X-A : 1\r\n\r\n",
        "traversal-request": b"GET /sub/../../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        "encoded-traversal-request": b"GET /%2e%2e/%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        # dates no calendar holds, in each condition and format, then a request behind
        "year-0000-if-modified-since": get
        + b"If-Modified-Since: Sat, 01 Jan 0000 00:00:00 GMT\r\n\r\n"
        + get
        + b"\r\n",
        "year-0000-if-unmodified-since-asctime": get
        + b"If-Unmodified-Since: Sat Jan  1 00:00:00 0000\r\n\r\n"
        + get
        + b"\r\n",
        "feb-31-if-range-rfc850": get
        + b"If-Range: Tuesday, 31-Feb-26 00:00:00 GMT\r\nRange: bytes=0-1\r\n\r\n",
        "dot-file-pipelined": b"GET /.env HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /.well-known/security.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /sub/.git/config HTTP/1.1\r\nHost: x\r\n\r\n",
        # request bodies (the endpoint glue, http/body.py): RFC 9112 §7.1's chunked
        # coding with extensions and trailers, then each of its faults
        "chunked-extensions-trailers": post
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b'4;a=1;b\r\nWiki\r\n5 ;q="x"\r\npedia\r\n0\r\nX-T: 1\r\n\r\n'
        + b"GET /json?a=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1; b\r\n\r\n",
        "chunked-bare-lf": post + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
        "chunked-bad-hex": post + b"Transfer-Encoding: chunked\r\n\r\n4g\r\nabcd\r\n0\r\n\r\n",
        "chunked-overflow": post
        + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\nffffffffffffffffff\r\n",
        "chunked-over-limit": post + b"Transfer-Encoding: chunked\r\n\r\n1001\r\n",
        "chunked-no-crlf-after-data": post
        + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "content-length-expect": post + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
        "content-length-over-limit": post + b"Content-Length: 4097\r\n\r\n",
        "endpoint-pipelined": b"PUT /raise HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
        b"DELETE /junk HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    seeds = {f"{name}.txt": b"\x02" + request for name, request in requests.items()}
    seeds["rfc9112-example-bytewise.txt"] = b"\x00" + requests["rfc9112-example"]
    targets = [
        "/",
        "/a.txt",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/.%2E/.%2e/secret.txt",
        "/sub/up",
        "/out",
        "/rel_out",
        "/dir_out/secret.txt",
        "/sibling/secret.txt",
        "/in",
        "/dir_in/",
        "/dir_in",
        "/sub",
        "/sub/deeper/x.css",
        "/100%25.txt",
        "/%C3%BC.txt",
        "/space%20file.txt",
        "/a.txt%00",
        "/sub%2fdeeper",
        "/..%5c..%5csecret.txt",
        "/fifo",
        "/loop",
        "/dangling",
        "/%2e/",
        "http://evil//out",
        "//etc/passwd",
        "/sub/?q=1#frag",
        "/a.txt/",
        "/.env",
        "/%2eenv",
        "/sub/.git/config",
        "/.well-known/security.txt",
        "/abs_in",
        "/up_and_in",
    ]
    for i, target in enumerate(targets):
        seeds[f"target-{i:02d}.txt"] = b"\x01" + target.encode()
    return seeds


def main() -> int:
    for name, seeds in (
        ("ws_frames", ws_frames()),
        ("ws_handshake", ws_handshake()),
        ("http", http()),
    ):
        folder = HERE / "corpus" / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename, content in seeds.items():
            (folder / filename).write_bytes(content)
        print(f"{folder.relative_to(HERE.parent.parent)}: {len(seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
