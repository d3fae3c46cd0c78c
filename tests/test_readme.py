"""The README's examples must stay true: its policy loads, and every
`agentwall ...` command line in it parses with the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agentwall.cli import build_parser
from agentwall.policy import loads_policy

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _command_lines() -> list[list[str]]:
    lines: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            text = raw.split("#", 1)[0].strip()
            for part in re.split(r"&&", text):
                words = shlex.split(part)
                if words[:1] == ["agentwall"] and not any(w.endswith("...") for w in words):
                    lines.append(words[1:])
    return lines


def test_readme_policy_loads() -> None:
    block = re.search(r"```yaml\n(.*?)```", README, re.S)
    assert block is not None
    policy = loads_policy(block.group(1))
    assert policy.hash


@pytest.mark.parametrize("argv", _command_lines(), ids=lambda a: " ".join(a[:2]))
def test_readme_command_parses(argv: list[str]) -> None:
    parser = build_parser(argv[0])
    args = parser.parse_args(argv)
    assert getattr(args, "_module", None) is not None


def test_readme_shows_commands() -> None:
    assert len(_command_lines()) >= 8
