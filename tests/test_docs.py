from pathlib import Path

from azrdp.checks import CHECK_IDS
from azrdp.errors import EXIT_AUTH, EXIT_AZURE, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_PROBLEM, EXIT_USAGE

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_check_id_is_documented():
    for check_id, (side, what) in CHECK_IDS.items():
        assert f"| `{check_id}` | {side} | {what} |" in README, check_id


def test_exit_codes_are_documented():
    for code in (0, EXIT_PROBLEM, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_AZURE, EXIT_INTERRUPTED):
        assert f"\n| {code} |" in README, code


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "```sh\nscripts/test\n```" in README
    assert "exec scripts/test\n" in ci


def _reference_module():
    from scripts import readme_reference

    return readme_reference


def test_the_command_reference_is_exactly_what_help_prints():
    reference = _reference_module()
    assert reference.current(README) == reference.reference(), \
        "README.md's command reference has drifted from --help: run scripts/readme_reference.py"
    for args in reference.COMMANDS:
        assert f"### `azrdp {' '.join(args)} --help`" in README


def test_an_option_added_without_documenting_it_fails_the_reference_check(monkeypatch):
    import click

    from azrdp.commands.revoke import revoke_command

    reference = _reference_module()
    monkeypatch.setattr(revoke_command, "params",
                        [*revoke_command.params, click.Option(["--brand-new"], is_flag=True, help="Undocumented.")])
    assert "--brand-new" in reference.reference() and "--brand-new" not in README
    assert reference.current(README) != reference.reference()


def test_the_reference_lists_what_the_hand_kept_one_missed():
    section = _reference_module().current(README)
    serve = section[section.index("azrdp emulator serve --help"):]
    assert all(option in serve for option in ("--port", "--vms", "--seed", "--read-limit"))
    revoke = section[section.index("azrdp revoke --help"):section.index("azrdp check --help")]
    assert "--audit-log" in revoke
    demo = section[section.index("azrdp demo --help"):section.index("azrdp emulator serve --help")]
    assert "--allow-from" in demo and "--start" in demo


def test_the_readme_says_when_azrdp_sets_log_off_only_when_full():
    # the plan sets it whenever azrdp chose the sessions step itself (tests/fix: an interactive fix sends it too)
    assert "`azrdp fix --yes` sets it" not in README
    assert "`azrdp fix` sets it whenever it plans the sessions step itself" in README


def test_every_command_azrdp_lists_is_in_the_reference():
    from azrdp.cli import COMMANDS

    reference = _reference_module()
    listed = {args[0] for args in reference.COMMANDS}
    assert listed == set(COMMANDS)     # derived from the CLI: a new command cannot be left out
    for args in reference.COMMANDS:
        assert f"### `azrdp {' '.join(args)} --help`" in README


def test_a_command_called_without_its_group_keeps_its_help_and_the_reference():
    """Click builds a command's help option once, from the first context it sees: a command that
    took ``-h`` from the group only lost it for good after one call on its own (a sweep test did
    that), and the reference check then failed for every later test. Each command has ``-h`` of
    its own (a fresh one here: the real ones' help options are already built by earlier tests)."""
    from click.testing import CliRunner

    from azrdp.options import AzrdpCommand

    fresh = AzrdpCommand("fresh", callback=lambda: None, help="A command on its own.")
    result = CliRunner().invoke(fresh, ["-h"])
    assert result.exit_code == 0 and "-h, --help" in result.output
    reference = _reference_module()
    assert reference.current(README) == reference.reference()
