"""The README's `azrdp demo` lines work as written after its install lines, and its demo transcript
is what the demo prints (addresses, thumbprints and dates aside)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from azrdp.cli import cli

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()


def block_after(heading: str, fence: str = "```sh\n") -> str:
    start = README.index(fence, README.index(heading)) + len(fence)
    return README[start:README.index("```", start)]


def demo_lines() -> list[str]:
    return [line.split("#", 1)[0].strip() for line in block_after("## See it work").splitlines() if line.strip()]


def test_the_demo_lines_use_the_command_the_install_lines_create():
    install = block_after("## Install")
    assert "python3 -m venv .venv && .venv/bin/pip install ." in install
    assert demo_lines() and all(line.startswith(".venv/bin/azrdp demo") for line in demo_lines())


def normalized(text: str) -> list[str]:
    text = re.sub(r"\b[0-9A-F]{8,40}\b", "<hex>", text)
    text = re.sub(r"127\.\d+\.\d+\.\d+:\d+", "<addr>", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", text)
    text = re.sub(r"\(\d+ days left\)", "(<n> days left)", text)
    return [line.rstrip() for line in text.splitlines()]


@pytest.mark.parametrize("line", demo_lines())
def test_each_demo_line_works_as_written(line, tmp_path):
    """Run as written, only faster (--speed scales the simulated latencies and nothing else)."""
    args = shlex.split(line)[1:]
    if "--speed" in args:
        args[args.index("--speed") + 1] = "1000"
    else:
        args += ["--speed", "1000"]
    result = CliRunner().invoke(cli, args, env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    if args[:2] == ["demo", "--speed"]:   # the plain `azrdp demo`: the README shows how its report ends
        start = README.index("```text\n", README.index("and how the report ends")) + len("```text\n")
        transcript = normalized(README[start:README.index("```", start)])
        printed = normalized(result.stdout)
        first = printed.index(transcript[0])
        assert [line for line in printed[first:] if line in transcript] == transcript
