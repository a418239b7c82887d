"""Layering and packaging rules from docs/DESIGN.md, checked on the source."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO

CORE = REPO / "reactor"
# Composition roots may import every layer; the rest of reactor/ is the core.
COMPOSITION = {"cli.py", "__main__.py", "server.py"}
# The application API describes what the WebSocket glue implements (it re-exports
# the protocol's close codes): glue, like reactor/handlers/, not core.
GLUE = {"app.py"}


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "csrc" not in p.parts)


def core_files() -> list[Path]:
    return [
        p
        for p in python_files(CORE)
        if p.name not in COMPOSITION | GLUE
        and "handlers" not in p.relative_to(CORE).parts
        and not p.resolve().is_relative_to(REPO / "ws")
        and not p.resolve().is_relative_to(REPO / "http")
        and not p.resolve().is_relative_to(REPO / "html")
    ]


def forbidden(names: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_reactor_core_imports_no_protocol(path):
    names = imported_modules(path, "reactor")
    assert not forbidden(names, ("reactor.ws", "reactor.http", "reactor.handlers"))


# Leaves both protocol layers may import: the HTTP field grammar they both read, and
# the switch between a package's C routines and Python (one owner for each).
SHARED_LEAVES = ("reactor.rfc9110", "reactor.native")


def outside(names: set[str], own: str) -> set[str]:
    """What of the reactor package ``names`` reaches beyond ``own`` and the grammar leaf."""
    return {
        n
        for n in forbidden(names, ("reactor",))
        if not n.startswith(own)
        and not any(n == leaf or n.startswith(leaf + ".") for leaf in SHARED_LEAVES)
        and n != "reactor"  # "from .. import rfc9110" names the package itself
    }


@pytest.mark.parametrize("path", python_files(REPO / "ws"), ids=lambda p: p.name)
def test_ws_imports_neither_http_nor_the_reactor(path):
    names = imported_modules(path, "reactor.ws")
    assert not forbidden(names, ("reactor.http", "http")) | outside(names, "reactor.ws")


@pytest.mark.parametrize("path", python_files(REPO / "http"), ids=lambda p: p.name)
def test_http_imports_neither_ws_nor_the_reactor(path):
    names = imported_modules(path, "reactor.http")
    assert not forbidden(names, ("reactor.ws",)) | outside(names, "reactor.http")


@pytest.mark.parametrize("leaf", SHARED_LEAVES)
def test_the_shared_modules_are_leaves(leaf):
    path = CORE / (leaf.split(".")[-1] + ".py")
    names = imported_modules(path, "reactor")
    assert not forbidden(names, ("reactor",)), f"{leaf} may import the standard library only"


def test_layer_check_catches_a_forbidden_edge(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from .ws import frames\nimport reactor.http.request\n")
    names = imported_modules(bad, "reactor")
    assert forbidden(names, ("reactor.ws", "reactor.http")) == {
        "reactor.ws",
        "reactor.ws.frames",
        "reactor.http.request",
    }


def test_protocol_folders_never_shadow_the_stdlib():
    for folder in ("ws", "http"):
        assert not (REPO / folder / "__init__.py").exists()
    assert not [p for p in REPO.rglob("http.py") if ".venv" not in p.parts]
    assert os.path.islink(CORE / "ws") and os.path.islink(CORE / "http")


@pytest.mark.parametrize("cwd", ["repo", "elsewhere"])
def test_stdlib_http_wins_and_the_package_imports(cwd, tmp_path):
    code = (
        "import http, http.client, urllib.request, sysconfig, os\n"
        "import reactor.ws.frames, reactor.http.request, reactor.ws.unmask\n"
        "stdlib = sysconfig.get_paths()['stdlib']\n"
        "assert http.client.__file__.startswith(stdlib), http.client.__file__\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO if cwd == "repo" else tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---- the connection owns every syscall on its socket ---------------------------

# Only reactor/loop.py (and the C it calls) reads, writes or borrows a connection's fd:
# anything else would bypass its ordering, backpressure and error rules (and, once
# bytes are encrypted, the encryption).
CONNECTION_SYSCALLS = {
    "os.read",
    "os.readv",
    "os.write",
    "os.writev",
    "os.send",
    "os.sendfile",
    "os.sendmsg",
    "os.recv",
}
FD_OWNER = CORE / "loop.py"
# Modules that read or write fds of their own which are no connection, and why.
OTHER_FD_OWNERS = {
    CORE / "workers.py": "the supervisor's start-up pipes from its workers",
}


def connection_syscalls(path: Path) -> list[str]:
    """Calls in `path` that would read, write or wrap a socket fd directly."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in CONNECTION_SYSCALLS:
            found.append(f"{path.name}:{node.lineno} {name}()")
        elif name == "socket.socket" and any(k.arg == "fileno" for k in node.keywords):
            found.append(f"{path.name}:{node.lineno} socket.socket(fileno=...)")
    return found


def modules_outside_the_fd_owner() -> list[Path]:
    files = python_files(CORE) + python_files(REPO / "ws") + python_files(REPO / "http")
    owners = {FD_OWNER.resolve(), *(p.resolve() for p in OTHER_FD_OWNERS)}
    return [p for p in dict.fromkeys(p.resolve() for p in files) if p not in owners]


@pytest.mark.parametrize(
    "path", modules_outside_the_fd_owner(), ids=lambda p: str(p.relative_to(REPO))
)
def test_only_the_reactor_makes_syscalls_on_connections(path):
    assert connection_syscalls(path) == []


def test_connection_syscall_check_catches_a_bypass(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, socket\n"
        "def f(conn, parts):\n"
        "    os.writev(conn.fd, parts)\n"
        "    socket.socket(fileno=conn.fd).send(b'x')\n"
    )
    assert connection_syscalls(bad) == [
        "bad.py:3 os.writev()",
        "bad.py:4 socket.socket(fileno=...)",
    ]
