"""The kernel facts a stage needs that the shared readers do not give: sysctls, memory,
slab caches, listening sockets and the processes holding them."""

from __future__ import annotations

import os

import benchkit
from benchkit import read_text


def sysctl(name: str) -> str | None:
    text = read_text("/proc/sys/" + name.replace(".", "/"))
    return " ".join(text.split()) if text is not None else None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    info = {}
    for line in (read_text("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024
    return info


def process_uss(pid: int) -> int:
    """Private (unshared) bytes: what this process alone costs, from smaps_rollup."""
    total = 0
    for line in (read_text(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def slab_caches() -> dict[str, int]:
    """Bytes held by each kernel slab cache (/proc/slabinfo, root only; empty otherwise)."""
    caches = {}
    for line in (read_text("/proc/slabinfo") or "").splitlines()[2:]:
        f = line.split()
        if len(f) > 14:  # name active num objsize perslab pages : tunables ... : slabdata a n s
            caches[f[0]] = int(f[14]) * int(f[5]) * os.sysconf("SC_PAGE_SIZE")
    return caches


def slab_growth(base: dict[str, int], held: dict[str, int], count: int, top: int = 8):
    """The caches that grew most, in bytes per connection, largest first."""
    if not count:
        return {}
    growth = {name: (held[name] - base.get(name, 0)) / count for name in held}
    largest = sorted(growth.items(), key=lambda item: -item[1])[:top]
    return {name: round(value, 1) for name, value in largest if value > 0}


def softirq_threads() -> list[int]:
    return [
        p
        for p in benchkit.all_pids()
        if (read_text(f"/proc/{p}/comm") or "").startswith("ksoftirqd/")
    ]


def listening_ports() -> set[int]:
    """Local ports in LISTEN state (IPv4 and IPv6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(name) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def listener_pids(ports: set[int]) -> list[int]:
    """Processes holding a listening socket on one of `ports` (a server we did not start)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(name) or "").splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rpartition(":")[2], 16) in ports:
                inodes.add(f"socket:[{f[9]}]")
    return sorted({pid for pid in benchkit.all_pids() if _holds_any(pid, inodes)})


def _holds_any(pid: int, targets: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        return any(_readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds)
    except OSError:
        return False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
