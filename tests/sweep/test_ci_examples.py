"""The CI examples in scripts/ci parse as YAML, sign in without secrets, and every azrdp command
line in them is one the CLI accepts (parsed by Click itself, as the shell would pass it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from azrdp.cli import cli

CI = Path(__file__).resolve().parents[2] / "scripts" / "ci"
TEMPLATE = re.compile(r"\$\{\{[^}]*\}\}|\$\([^)]*\)")   # ${{ vars.X }}, $(Build.X), $(az ...)


def scripts_of(document) -> list[str]:
    """Every shell script string in a workflow or pipeline (run:, script:, inlineScript:)."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("run", "script", "inlineScript") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(document)
    return found


def azrdp_command_lines(document) -> list[list[str]]:
    lines = []
    for script in scripts_of(document):
        for line in script.splitlines():
            line = line.strip()
            if line.startswith("azrdp "):
                lines.append(shlex.split(TEMPLATE.sub("VALUE", line))[1:])
    return lines


def parse_with_click(args: list[str]) -> click.Context:
    """Parse like `azrdp COMMAND ARGS` would, without running anything."""
    parent = click.Context(cli, info_name="azrdp")
    command = cli.get_command(parent, args[0])
    if command is None:
        raise click.UsageError(f"no such command {args[0]!r}")
    return command.make_context(args[0], list(args[1:]), parent=parent)


@pytest.mark.parametrize("name", ["github-actions.yml", "azure-pipelines.yml"])
def test_yaml_parses_and_every_azrdp_line_is_valid(name):
    document = yaml.safe_load((CI / name).read_text())
    commands = azrdp_command_lines(document)
    assert commands, f"{name} runs no azrdp command"
    for args in commands:
        ctx = parse_with_click(args)
        assert ctx.command.name in ("check", "sweep", "diagnose")
        assert ctx.params.get("auth") in ("cli", "workload", "msi", "env"), \
            f"CI signs in non-interactively: {' '.join(args)}"


def test_the_checker_rejects_what_the_cli_rejects():
    with pytest.raises(click.UsageError):
        parse_with_click(["check", "vm", "--no-such-option"])
    with pytest.raises(click.BadParameter):
        parse_with_click(["sweep", "--max-parallel", "0"])


def test_github_workflow_uses_oidc_and_no_secret():
    text = (CI / "github-actions.yml").read_text()
    document = yaml.safe_load(text)
    assert document["permissions"]["id-token"] == "write"
    assert "secrets." not in text
    login = [step for job in document["jobs"].values() for step in job["steps"]
             if str(step.get("uses", "")).startswith("azure/login@")]
    assert login and set(login[0]["with"]) == {"client-id", "tenant-id", "subscription-id"}


def test_azure_pipeline_publishes_the_junit_result():
    document = yaml.safe_load((CI / "azure-pipelines.yml").read_text())
    publish = [s for s in document["steps"] if s.get("task") == "PublishTestResults@2"]
    assert publish and publish[0]["inputs"]["testResultsFormat"] == "JUnit"
