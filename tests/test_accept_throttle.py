"""At the open-file limit the accept warning is throttled, and its end is reported.

A server whose open-file limit is a few dozen fds gets more connections than
it can hold: accept() fails with EMFILE every retry period while they stay.
The log must name the failures at 1, 2, 4, 8... occurrences only, and say once
that accepting works again when the clients leave.
"""

from __future__ import annotations

import re
import resource

from testkit import recv_exactly

FD_LIMIT = 48  # the server's whole budget: a few fds for itself, the rest connections
CLIENTS = 80


def small_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_emfile_warning_is_throttled_and_its_end_summarised(server_factory):
    server = server_factory(
        "--proto", "echo", "--idle-timeout", "0", "--max-connections", "1000",
        preexec_fn=small_fd_limit,
    )  # fmt: skip
    clients = [server.connect() for _ in range(CLIENTS)]  # the surplus waits in the backlog
    try:
        # Eight failures take about 2 s (one retry per 250 ms).
        server.wait_for_log(r"accept failed 8 times so far: Too many open files", timeout=30)
    finally:
        for sock in clients:
            sock.close()
    summary = server.wait_for_log(r"accepting again after \d+ failed accepts", timeout=30)
    failures = int(re.search(r"after (\d+) failed", summary[0]).group(1))
    # Up to the summary: the closed clients still queued in the backlog may run the
    # server out of fds once more while it accepts and closes them (a new episode).
    log = server.log_text()
    logged = re.findall(r"accept failed (\d+) times so far", log[: log.index(summary[0])])
    powers = [n for n in (1 << k for k in range(failures.bit_length())) if n <= failures]
    assert [int(n) for n in logged] == powers, server.log_text()
    assert len(summary) == 1
    with server.connect() as sock:  # and it serves again
        sock.sendall(b"back")
        assert recv_exactly(sock, 4) == b"back"
