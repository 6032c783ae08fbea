"""README.md documents every probe outcome exactly as the code names and describes it."""

from pathlib import Path

from azrdp.rdp.wire_probe import OUTCOMES
from azrdp.rdp.x224 import FAILURE_CODES

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()


def test_every_outcome_is_in_the_readme_table():
    for name, meaning in OUTCOMES.items():
        assert f"| `{name}` | {meaning} |" in README, name


def test_readme_lists_no_outcome_the_code_does_not_have():
    section = README.split("### `azrdp probe", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]
    assert rows == list(OUTCOMES)


def test_every_failure_code_is_named_in_the_readme():
    for code, (name, _meaning) in FAILURE_CODES.items():
        assert f"{code} `{name}`" in README, name
