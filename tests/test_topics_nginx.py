"""The deployment of docs/deployment.md, end to end: nginx (started here, its own
prefix, config and free port) balancing WebSocket clients over two servers
attached to one redis-server; clients talk to nginx only. A publish from a
client on one server reaches subscribers on the other, and --forwarded-allow-ips
gives the application the client named in X-Forwarded-For, for the listed proxy only.

nginx connects to the servers from 127.0.0.2 (``proxy_bind``), so a server can
trust the proxy's address while a direct client (127.0.0.1) is not trusted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from test_browser import CHROMIUM, Browser, drive_echo_page
from test_topics_redis import Redis, free_port, synchronized
from test_topics_workers import APP
from test_ws_server import client
from testkit import ServerProcess

pytest.importorskip("hiredis")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(
    NGINX is None or shutil.which("redis-server") is None, reason="needs nginx and redis-server"
)
PROXY_ADDRESS = "127.0.0.2"  # nginx's source address towards the servers

NGINX_CONF = """
worker_processes 1;
error_log {prefix}/error.log info;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream servers {{ server 127.0.0.1:{one}; server 127.0.0.1:{two}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://servers;
            proxy_bind {proxy};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, prefix, one: int, two: int) -> None:
        self.port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(prefix=prefix, one=one, two=two, port=self.port, proxy=PROXY_ADDRESS)
        )
        argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start: {self.proc.stderr.read()!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def proxied(tmp_path, monkeypatch):
    """nginx on a free port in front of two servers attached to one redis-server."""
    (tmp_path / "proxied.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    redis = Redis(tmp_path)
    started: list = []
    try:
        args = ["--proto", "auto", "--app", "proxied:rooms", "--broker", redis.url]
        args += ["--forwarded-allow-ips", PROXY_ADDRESS]
        for _ in range(2):
            started.append(ServerProcess(args))
            started[-1].wait_for_log(r"redis 127.0.0.1:\d+: connected")
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        nginx = Nginx(prefix, started[0].port, started[1].port)
        started.append(nginx)
        yield started[0], started[1], nginx
    finally:
        for item in reversed(started):
            item.stop()
        redis.kill()


def test_nginx_in_front_of_two_servers_on_one_redis(proxied):
    one, two, nginx = proxied
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(client(nginx.port, "/room")) for _ in range(4)]
        pids = {}
        for ws in clients:
            ws.send("pid")
            pids[id(ws)] = ws.recv(timeout=10)
        assert len(set(pids.values())) == 2  # nginx spread them over both servers
        publisher = stack.enter_context(client(nginx.port))
        synchronized(publisher, clients, "/room")
        publisher.send("pub /room across the proxy")
        for ws in clients:  # on both servers
            assert ws.recv(timeout=10) == "across the proxy"
        # A client at 127.0.0.3 claiming to be 203.0.113.7: nginx appends the address
        # it saw, the servers trust nginx (127.0.0.2) only, so the client is 127.0.0.3.
        source = socket.socket()
        source.bind(("127.0.0.3", 0))
        source.connect(("127.0.0.1", nginx.port))
        claimed = stack.enter_context(
            client(
                nginx.port, "/", sock=source, additional_headers={"X-Forwarded-For": "203.0.113.7"}
            )
        )
        claimed.send("addr")
        assert claimed.recv(timeout=10) == "('127.0.0.3', 0)"  # port 0: from the header
    with client(one.port, "/", additional_headers={"X-Forwarded-For": "198.51.100.1"}) as ws:
        ws.send("addr")  # a direct client is no trusted proxy: its claim is ignored
        assert ws.recv(timeout=10).startswith("('127.0.0.1', ")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_page_works_through_nginx_in_chromium(proxied, tmp_path):
    one, two, nginx = proxied
    text = f"through nginx {os.urandom(4).hex()}"
    browser = Browser(tmp_path / "profile")
    try:
        shown = drive_echo_page(browser, f"http://127.0.0.1:{nginx.port}/", text)
    finally:
        browser.stop()
    assert shown == f"echo: {text}"
