"""Every remedy and next step azrdp prints names only options the command printing it accepts.

Each command runs (in process, through the real CLI and SDK) against the emulator in every
scenario, and with the faults that end a fix early; every remedy, blocker, note, pending item, next
step, error hint and summary it prints is walked. An option inside a backticked `azrdp CMD ...`
must be one of CMD's; an option anywhere else must be one of the printing command's. (`az ...`
snippets are the Azure CLI's.) The wire's remedy tables are walked as well: the wire checks are
printed by probe, diagnose, fix, check and sweep alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

from azrdp.cli import cli
from azrdp.emulator import Emulator
from azrdp.emulator.scenarios import SCENARIOS

OPTION = re.compile(r"(?<![\w`-])--[a-z][a-z0-9-]*")
SNIPPET = re.compile(r"`([^`]*)`")
SPEED = 1000.0


def command_options(name: str) -> set[str]:
    ctx = click.Context(cli)
    command: Any = cli
    for part in name.split():
        command = command.get_command(ctx, part)
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def misnamed(text: str, printer: str) -> list[str]:
    """Options ``text`` names that the command they are meant for does not accept."""
    wrong = []
    for snippet in SNIPPET.findall(text):
        words = snippet.split()
        if words[:1] == ["azrdp"] and len(words) > 1:
            target = " ".join(words[1:3]) if words[1] == "emulator" else words[1]
            wrong += [f"{o} (for azrdp {target})" for o in OPTION.findall(snippet) if o not in command_options(target)]
    rest = SNIPPET.sub("", text)
    wrong += [f"{o} (for azrdp {printer})" for o in OPTION.findall(rest) if o not in command_options(printer)]
    return wrong


def advice_of_diagnosis(doc: dict[str, Any] | None) -> Iterator[str]:
    for check in (doc or {}).get("checks", []):
        if check.get("remedy"):
            yield check["remedy"]


def advice_of_fix(doc: dict[str, Any]) -> Iterator[str]:
    yield from advice_of_diagnosis(doc.get("before"))
    yield from advice_of_diagnosis(doc.get("after"))
    for plan in [doc.get("plan") or {}, *doc.get("plans", [])]:
        yield from plan.get("blockers", [])
        yield from plan.get("notes", [])
    yield from doc.get("pending", [])
    yield from doc.get("next_steps", [])
    yield doc.get("summary", "")
    if doc.get("error"):
        yield doc["error"].get("hint") or ""


def run(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any] | list[dict[str, Any]], str]:
    result = CliRunner().invoke(cli, args, env=env)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        return json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:       # sweep -o json: one object per line
        return [json.loads(line) for line in lines], result.stderr


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> list[tuple[str, str, str]]:
    """(command, scenario, text) for every piece of advice the commands printed."""
    out: list[tuple[str, str, str]] = []
    home = tmp_path_factory.mktemp("advice")
    base = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "CI": "true"}
    runs = [(scenario, ()) for scenario in SCENARIOS] + [
        ("0x904", ({"kind": "restart_failure"},)), ("0x904", ({"kind": "run_command_hang"},))]
    for scenario, faults in runs:
        with Emulator.start(scenario, speed=SPEED) as emu:
            for fault in faults:
                emu.inject(**fault)
            env = {**base, **emu.environment()}
            vm = emu.vm()
            name, rg = vm.name, vm.resource_group
            label = scenario + "".join(f"+{f['kind']}" for f in faults)
            extra = ["--run-command-timeout", "2s"] if faults else []
            doc, err = run(["fix", name, "-g", rg, "--yes", "-o", "json", "--probe-timeout", "1", "--wait-timeout",
                            "5s", *extra, "--audit-log", str(home / "audit.jsonl")], env)
            out += [("fix", label, text) for text in advice_of_fix(doc)]
            out += [("fix", label, line) for line in err.splitlines() if line.startswith("Error:")]
            if faults:
                continue
            doc, err = run(["diagnose", name, "-g", rg, "-o", "json", "--probe-timeout", "1"], env)
            out += [("diagnose", label, text) for text in advice_of_diagnosis(doc)]
            doc, err = run(["check", name, "-g", rg, "-o", "json", "--probe-timeout", "1"], env)
            out += [("check", label, text) for text in advice_of_diagnosis(doc.get("diagnosis"))]
            out += [("check", label, text) for text in doc.get("notes", [])]
    # the demo prints the fix report: where a fix stops short, its advice must name demo's options
    for scenario in ("nsg-blocked", "deallocated", "agent-not-ready", "0x904"):
        doc, err = run(["demo", "--scenario", scenario, "--speed", str(SPEED), "-o", "json"], base)
        out += [("demo", scenario, text) for text in advice_of_fix(doc)]
    with Emulator.start(fleet={scenario: 1 for scenario in SCENARIOS}, speed=SPEED) as emu:
        env = {**base, **emu.environment()}
        docs, err = run(["sweep", "--fix", "-o", "json", "--probe-timeout", "1",
                         "--audit-log", str(home / "sweep.jsonl")], env)
        for doc in docs:
            if doc.get("type") != "vm":
                continue
            out.append(("sweep", doc["name"] if "name" in doc else "fleet", doc.get("summary", "")))
            out += [("sweep", "fleet", text) for text in advice_of_diagnosis(doc)]
            repair = doc.get("repair") or {}
            out += [("sweep", "fleet", text) for text in (*repair.get("next_steps", []), *repair.get("blockers", []),
                                                          repair.get("summary", ""))]
    return out


def test_the_walk_saw_advice_from_every_command(printed):
    commands = {command for command, _, _ in printed}
    assert commands == {"fix", "diagnose", "check", "sweep", "demo"}
    texts = " ".join(text for _, _, text in printed)
    assert "--allow-from" in texts and "--start" in texts   # the advice the issue found misnamed is walked


def test_every_remedy_and_next_step_names_only_options_its_command_accepts(printed):
    wrong = [(command, scenario, text, bad) for command, scenario, text in printed
             for bad in [misnamed(text, command)] if bad]
    assert wrong == []


def test_the_wire_remedies_name_only_options_of_every_command_that_prints_them():
    from azrdp.rdp import checks as wire

    tables = [wire._TCP_REMEDIES, wire._NEGOTIATION_REMEDIES, wire._FAILURE_REMEDIES, {"cert": wire._REPLACE_CERT}]
    wrong = [(printer, text, bad) for table in tables for text in table.values()
             for printer in ("probe", "diagnose", "fix", "check", "sweep")
             for bad in [misnamed(text, printer)] if bad]
    assert wrong == []


def test_the_checker_itself_catches_a_misnamed_option():
    assert misnamed("pass --start", "sweep") == ["--start (for azrdp sweep)"]
    assert misnamed("run `azrdp fix vm -g rg --start`", "sweep") == []
    assert misnamed("raise --timeout", "fix") == ["--timeout (for azrdp fix)"]
    assert misnamed("`az vm repair run --run-id win-GA-fix`", "fix") == []


# Modules whose text (check remedies, error hints) any Azure-facing VM command may print.
SHARED_TEXT = ("azrdp/azure/checks.py", "azrdp/guest/checks.py", "azrdp/rdp/checks.py", "azrdp/azure/arm_errors.py",
               "azrdp/azure/runcommand.py", "azrdp/azure/power.py", "azrdp/azure/credentials.py",
               "azrdp/azure/nsg.py")


def test_text_every_vm_command_prints_names_only_options_all_of_them_accept():
    """The static half of the walk: every string in these modules (docstrings aside), including
    those no emulator scenario produces (a 429 that outlasts the retries, a VM without public IP)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    wrong = []
    for module in SHARED_TEXT:
        tree = ast.parse((root / module).read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)}
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if id(node) in docstrings or id(node) in parts:
                continue
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            wrong += [(module, node.lineno, bad) for printer in ("diagnose", "fix", "check", "sweep")
                      for bad in misnamed(text, printer)]
    assert wrong == []
