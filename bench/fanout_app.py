"""The application bench/fanout.py runs: ``/sub`` connections join the topic
"bench"; every message from ``/pub`` is published to it as it came (text)."""

from reactor.app import WebSocketApp

TOPIC = "bench"


class Fanout(WebSocketApp):
    def on_open(self, conn, request):
        if request.target == "/sub":
            conn.subscribe(TOPIC)

    def on_message(self, conn, data):
        self.server.publish(TOPIC, data)


app = Fanout()
