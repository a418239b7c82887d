"""The user documentation stays true: the option reference matches the parser,
every relative link resolves, and the README stays a front page."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from testkit import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *DOCS]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_option_reference_is_generated_from_the_parser() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO / "docs" / "make_options.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    current = (REPO / "docs" / "options.md").read_text()
    assert current == generated, "docs/options.md is stale: run docs/make_options.py"


def test_option_reference_lists_every_option() -> None:
    from reactor.cli import build_parser

    text = (REPO / "docs" / "options.md").read_text()
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}`" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to missing {target}"


def test_readme_is_a_front_page() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    commands = [line.split("#")[0].strip() for line in lines[2:4]]
    assert commands == ["make run", "make test"]  # the two set-up commands come first
    linked = set(LINK.findall("\n".join(lines)))
    for page in DOCS:  # every page of docs/ is reachable from the front page
        assert f"docs/{page.name}" in linked, f"README does not link docs/{page.name}"


def readme_server_commands() -> list[list[str]]:
    """The arguments of every `python -m reactor ...` command in the README."""
    commands = []
    for line in (REPO / "README.md").read_text().splitlines():
        match = re.match(r"\s+\.venv/bin/python -m reactor (.*?)\s*(#.*)?$", line)
        if match:
            args = match.group(1).split()
            if "--port" in args:  # the test picks a free port
                index = args.index("--port")
                del args[index : index + 2]
            commands.append(args)
    return commands


@pytest.mark.parametrize("args", readme_server_commands(), ids=" ".join)
def test_readme_server_commands_start(server_factory, args) -> None:
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    server = server_factory(*args, workers=workers)  # waits for every "listening on" line
    with server.connect() as sock:
        sock.sendall(b"ping")  # accepted: whatever the protocol, the listener is live
    assert server.stop() == 0
