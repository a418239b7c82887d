"""Install it as users do: sdist -> wheel built from the sdist -> a fresh venv.

The source distribution is built from a clean copy of the checkout (tracked
files only), the wheel from that sdist, both without build isolation (the
test extra brings setuptools and build), and the wheel is installed into a
fresh venv. That install then imports and starts the server from a clean copy
of the checkout (no in-place cffi build: ./reactor shadows the installed
package and must still find the compiled module) and from an empty folder,
and its `reactor` command serves the default page and echoes over WebSocket
from an unrelated folder.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from testkit import LISTENING, REPO
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

CHECK = (
    "import http.client, urllib.request, sysconfig, reactor, reactor.ws.native, "
    "reactor.ws._speedups, reactor.http._speedups, reactor.http.request, reactor.cli, "
    "reactor._io, reactor.loop\n"
    "assert http.client.__file__.startswith(sysconfig.get_paths()['stdlib'])\n"
    "assert reactor.ws.native.active == 'c'\n"
    "assert reactor.http.request.switch.active == 'c'\n"
    "assert reactor.loop.switch.active == 'c'\n"
    "print(reactor.__file__)\n"
)


# What a build may print that means the package definition needs care.
BUILD_WARNINGS = re.compile(r"deprecat|BuildBackendWarning|absent from the .packages.", re.I)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, str]:
    """(sdist, wheel built from it, the build output)."""
    root = tmp_path_factory.mktemp("build")
    source = clean_checkout(root / "source")
    dist = root / "dist"
    sdist_build = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(dist), str(source)],
        capture_output=True,
        text=True,
    )
    assert sdist_build.returncode == 0, sdist_build.stdout + sdist_build.stderr
    sdist = next(dist.glob("reactor-*.tar.gz"))
    wheel_build = subprocess.run(  # -v: the backend's own output (its warnings) is shown
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
        + ["-w", str(dist), str(sdist)],
        capture_output=True,
        text=True,
    )
    assert wheel_build.returncode == 0, wheel_build.stdout + wheel_build.stderr
    output = "".join(
        (sdist_build.stdout, sdist_build.stderr, wheel_build.stdout, wheel_build.stderr)
    )
    return sdist, next(dist.glob("reactor-*.whl")), output


@pytest.fixture(scope="module")
def installed_python(built, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("install") / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(built[1])], check=True, capture_output=True
    )
    return python


def clean_checkout(dest: Path) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = REPO / os.fsdecode(name)
        target = dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return dest


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_installed_package_imports_and_runs(installed_python, where, tmp_path):
    cwd = clean_checkout(tmp_path / "checkout") if where == "checkout" else tmp_path
    assert not list(cwd.rglob("*.so"))
    # -c puts the current folder first on sys.path, like `python -m` does.
    out = subprocess.run(
        [str(installed_python), "-c", CHECK], cwd=cwd, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    helped = subprocess.run(
        [str(installed_python), "-m", "reactor", "--help"], cwd=cwd, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--proto" in helped.stdout, helped.stderr


def test_the_builds_print_no_packaging_warnings(built):
    found = [line for line in built[2].splitlines() if BUILD_WARNINGS.search(line)]
    assert not found, "\n".join(found)


def test_sdist_carries_every_c_source_and_the_wheel_the_page_and_py_typed(built):
    sdist, wheel, _ = built
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for folder in ("ws", "http", "reactor"):
        assert any(n.startswith(f"{folder}/csrc/") and n.endswith(".c") for n in in_sdist)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    page = {f"reactor/html/{p.name}" for p in (REPO / "html").iterdir()}
    assert page <= in_wheel and "reactor/py.typed" in in_wheel
    assert not [n for n in in_wheel if "/csrc/" in n]  # sources only in the sdist


def test_version_and_license_come_from_one_place(installed_python, tmp_path):
    check = (
        "import importlib.metadata as m, reactor\n"
        "assert m.version('reactor') == reactor.__version__, m.version('reactor')\n"
        "assert m.metadata('reactor')['License-Expression'] == 'MIT'\n"
    )
    done = subprocess.run([str(installed_python), "-c", check], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_reactor_command_serves_the_page_and_echoes_from_any_folder(installed_python, tmp_path):
    command = installed_python.parent / "reactor"
    server = subprocess.Popen(
        [str(command), "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in server.stderr:
            if found := LISTENING.search(line):
                break
        else:
            pytest.fail(f"the server exited with {server.wait()} before listening")
        port = int(found.group(2))
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client.request("GET", "/")
        response = client.getresponse()
        assert response.status == 200
        assert response.read() == (REPO / "html" / "index.html").read_bytes()
        client.close()
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send("hello from a fresh install")
            assert ws.recv(timeout=10) == "hello from a fresh install"
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(15)
        server.stderr.close()
    assert code == 0


def test_make_clean_removes_every_built_extension_and_the_install_stamps(tmp_path):
    checkout = clean_checkout(tmp_path / "checkout")
    built = [
        "reactor/_io.abi3.so",
        "ws/_speedups.abi3.so",
        "http/_speedups.abi3.so",
        "reactor/handlers/_other.cpython-311-x86_64-linux-gnu.so",
        ".venv/.installed",
        ".venv/.runtime",
    ]
    for name in built:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(b"")
    done = subprocess.run(["make", "clean"], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [name for name in built if (checkout / name).exists()] == []


def test_make_run_installs_only_what_running_needs(tmp_path):
    checkout = clean_checkout(tmp_path / "checkout")

    def plan(target: str) -> str:
        done = subprocess.run(["make", "-n", target], cwd=checkout, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run, test = plan("run"), plan("test")
    assert "pip install -q -e .\n" in run and "[test]" not in run, run
    assert "-e '.[test]'" in test and "pytest" in test, test
