"""Writes the option reference (docs/options.md) from the command line's own parser.

    .venv/bin/python docs/make_options.py > docs/options.md

tests/test_docs.py fails when docs/options.md differs from what this prints, so
the reference cannot drift from `--help`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import reactor
from reactor.cli import build_parser

HEADER = """\
# Option reference

Every option of `python -m reactor` (and of the `reactor` script), grouped as `--help` groups
them. Each one is also a keyword argument of `reactor.server.serve()` (dashes become
underscores). Generated from the parser by `docs/make_options.py`; do not edit by hand.
"""

# A help text that spells out its default ("... (default: the kernel's somaxconn)") moves
# that text to the Default column.
_DEFAULT_SUFFIX = re.compile(r"\s*\(default: ((?:[^()]|\([^()]*\))*)\)\s*$")
PACKAGE_DIR = Path(reactor.__file__).resolve().parent


def describe_default(action: argparse.Action) -> str:
    spelled_out = _DEFAULT_SUFFIX.search(action.help or "")
    if spelled_out:  # minus what describes this machine only ("4096 here")
        return re.sub(r", [^,]* here$", "", spelled_out.group(1))
    if isinstance(action.default, Path):  # e.g. --root: the page shipped in the package
        return f"`{action.default.resolve().relative_to(PACKAGE_DIR.parent)}/` (in the package)"
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if isinstance(action, argparse._AppendAction) and not action.default:
        return "none"
    if action.default is None:
        return "see meaning"
    return f"`{action.default}`"


def expand_help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": "reactor"}
    text = _DEFAULT_SUFFIX.sub("", text)
    if action.choices is not None and not isinstance(action.choices, dict):
        text = f"one of {', '.join(f'`{c}`' for c in action.choices)}: {text}"
    return text.replace("|", "\\|")


def option_name(action: argparse.Action) -> str:
    name = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs != 0 and action.metavar:
        name += f" {action.metavar}"
    return name


def render(parser: argparse.ArgumentParser) -> str:
    parts = [HEADER]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = "General" if group.title == "options" else group.title
        parts.append(f"\n## {title}\n\n| option | default | meaning |\n|---|---|---|\n")
        for action in actions:
            parts.append(
                f"| {option_name(action)} | {describe_default(action)} | {expand_help(action)} |\n"
            )
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render(build_parser()))
