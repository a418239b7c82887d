"""A non-editable install runs from anywhere, a repository root included.

Builds a wheel of the working tree and installs it into a fresh venv. Then
imports and starts the server from a clean copy of the checkout (tracked
files only, so no in-place cffi build: ./reactor shadows the installed
package and must still find the compiled module) and from an empty folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from testkit import REPO

pytestmark = pytest.mark.slow

CHECK = (
    "import http.client, urllib.request, sysconfig, reactor, reactor.ws.native, "
    "reactor.ws._speedups, reactor.http._speedups, reactor.http.request, reactor.cli, "
    "reactor._io, reactor.loop\n"
    "assert http.client.__file__.startswith(sysconfig.get_paths()['stdlib'])\n"
    "assert reactor.ws.native.active == 'c'\n"
    "assert reactor.http.request.HEAD_SCANNER == 'c'\n"
    "assert reactor.loop.IO_HELPER == 'c'\n"
    "print(reactor.__file__)\n"
)


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory):
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    wheel = next(wheels.glob("reactor-*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
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
