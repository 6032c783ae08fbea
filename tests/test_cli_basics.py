import subprocess
import sys

from click.testing import CliRunner

from azrdp import __version__
from azrdp.cli import COMMANDS, cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"azrdp, version {__version__}\n"


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "azrdp", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"azrdp, version {__version__}"


def test_help_imports_no_command_and_not_the_azure_sdk():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from azrdp.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('azure', 'azrdp.commands.', 'logging')))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_command_imports_and_has_help():
    for name, (_, summary) in COMMANDS.items():
        command = cli.get_command(None, name)
        assert command is not None and command.help, name
        assert summary.endswith(".") and len(summary) <= 72, name


def test_help_lists_every_command_with_its_summary():
    result = CliRunner().invoke(cli, ["--help"], terminal_width=120)
    listing = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listing] == list(COMMANDS)
    assert [line.split(None, 1)[1] for line in listing] == [summary for _, summary in COMMANDS.values()]


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
