"""picows echo server (the reference peer, on uvloop by default).

Echoes every data frame as it arrives, with its opcode and FIN bit, so fragmented messages come
back fragmented the same way; pings are answered by picows itself (``enable_auto_pong``); a
close frame is answered with the same code, then the connection is closed.
"""

from __future__ import annotations

import sys

from peer_cli import MAX_MESSAGE, port_and_closer, run_asyncio_peer
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

CONTROL = (WSMsgType.PING, WSMsgType.PONG)


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type not in CONTROL:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)


async def start(host: str, port: int):
    server = await ws_create_server(
        lambda request: EchoListener(), host, port, max_frame_size=MAX_MESSAGE
    )
    return port_and_closer(server)


if __name__ == "__main__":
    sys.exit(run_asyncio_peer(start, __doc__.split("\n")[0]))
