"""Every command the README and docs show parses: its subcommand, flags and Makefile variables exist.

Running them all would need real datasets and hours; parsing catches what goes stale when code changes (a
renamed flag, a removed subcommand, a Makefile variable that no longer reaches the command line). ``make -n``
prints what a ``make bench ...`` line runs, and that command line is parsed in turn.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from brainbench.cli import build_parser
from brainbench.config import add_request_options, split_argv

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_lines(page: Path) -> list[str]:
    """The command lines of a page's ``bash`` blocks: comments dropped, continuations joined."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _brainbench_argv(line: str) -> list[str] | None:
    """The arguments after ``brainbench`` (or ``python -m brainbench.cli``) in a command line."""
    words = shlex.split(line)
    for i, word in enumerate(words):
        if Path(word).name == "brainbench" or (word == "brainbench.cli" and words[i - 1 : i] == ["-m"]):
            return words[i + 1 :]
    return None


COMMANDS = [
    (page.name, line)
    for page in PAGES
    for line in _shell_lines(page)
    if line.startswith("make ") or _brainbench_argv(line) is not None
]


def _parse_brainbench(argv: list[str]) -> None:
    if argv[:1] == ["bench"]:
        request_tokens, _ = split_argv(argv[1:])
        parser = ArgumentParser(prog="brainbench bench", exit_on_error=False)
        add_request_options(parser)
        parser.parse_args([t for t in request_tokens if t != "--print-config"] + ["--print-config"])
    elif argv not in (["--help"], ["--version"]):
        build_parser(argv).parse_args(argv)


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{line[:60]}" for p, line in COMMANDS])
def test_the_command_parses(page, line):
    if line.startswith("make "):
        words = shlex.split(line)
        make = ["make", "--no-print-directory", "-n", *words[1:]]  # `make test` runs this inside make
        made = subprocess.run(make, cwd=ROOT, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        if words[1] not in ("bench", "federate"):
            return
        line = [printed for printed in made.stdout.splitlines() if "brainbench " in printed][-1]
    argv = _brainbench_argv(line)
    assert argv is not None, line
    _parse_brainbench(argv)


def test_the_pages_show_commands():
    assert sum(1 for _, line in COMMANDS if "brainbench" in line or line.startswith("make bench")) >= 15
