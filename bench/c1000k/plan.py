"""The plan of a stage: how many workers and clients, which ports and source addresses."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field

from .procfs import sysctl

# Capacity of one process: the open-file hard limit minus a reserve for the listener, epoll,
# pipes, logs and the reactor's own fds (19,600 at a 20,000 limit).
FD_RESERVE = 400
SOURCES_PER_CLIENT = 4  # 4 x ~28k ephemeral ports per destination: ample for 19.6k


@dataclass
class Plan:
    connections: int
    workers: int
    per_process_max: int
    base_port: int
    host: str = "127.0.0.1"
    shared_port: bool = False
    target: bool = False  # a running server: nothing to start or stop
    in_flight: int = 512
    echo_window: int = 1024
    size: int = 32
    close_mode: str = "handshake"
    sources_per_client: int = SOURCES_PER_CLIENT
    server_args: list[str] = field(default_factory=list)

    @property
    def clients(self) -> int:
        return self.workers

    def per_client(self) -> list[int]:
        """Connections of each client: an even split, the first ones taking the remainder."""
        base, extra = divmod(self.connections, self.clients)
        return [base + (1 if i < extra else 0) for i in range(self.clients)]

    def port_of(self, client: int) -> int:
        return self.base_port if self.shared_port else self.base_port + client

    def ports(self) -> list[int]:
        return sorted({self.port_of(i) for i in range(self.clients)})

    def sources_of(self, client: int) -> str:
        """127.(1 + i // 256).(i % 256).1-4: every client its own source addresses."""
        return f"127.{1 + client // 256}.{client % 256}.1-{self.sources_per_client}"


def per_process_max(hard_limit: int) -> int:
    return max(1, hard_limit - FD_RESERVE)


def workers_needed(connections: int, per_process: int) -> int:
    return max(1, math.ceil(connections / per_process))


def port_range() -> tuple[int, int]:
    low, high = (sysctl("net.ipv4.ip_local_port_range") or "32768 60999").split()
    return int(low), int(high)


def pick_base_port(count: int, host: str) -> int:
    """The first run of `count` free ports above the ephemeral range (never handed out to our
    own clients' connects), or below it when there is no room above."""
    low, high = port_range()
    candidates = list(range(high + 1, 65536 - count + 1)) + list(range(1024, low - count + 1))
    for base in candidates:
        if all(port_is_free(host, base + i) for i in range(count)):
            return base
    raise SystemExit(f"no run of {count} free ports outside ip_local_port_range {low}-{high}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
