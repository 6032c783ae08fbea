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
