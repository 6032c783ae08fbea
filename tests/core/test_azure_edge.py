"""One typed Azure edge (issue 14): the SDK is imported only under azrdp/azure/ (and by the
emulator), jobs reach ARM only through the VM handle, and both sessions the jobs see are Sessions."""

from __future__ import annotations

import ast
from pathlib import Path

import azrdp

PACKAGE = Path(azrdp.__file__).resolve().parent
EDGE = ("azure", "emulator")            # the only folders of azrdp/ that may import the Azure SDK
JOBS = ("repair.py", "diagnose.py", "rescue.py", "smoke.py", "sweep.py", "demo.py", "revoke.py", "guest/__init__.py")


def sdk_imports(source: str, *, package: str = "azure") -> list[tuple[int, str]]:
    """(line, module) of every import of ``package`` (or a module under it) in ``source``: top
    level or lazy (inside a function, a class, a try or an if), ``import x``, ``from x import y``,
    and ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name. Text that only
    names the package (a docstring, a comment, a string) is no import."""
    def ours(name: str | None) -> bool:
        return bool(name) and (name == package or name.startswith(package + "."))  # type: ignore[union-attr]

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if ours(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module):
            found.append((node.lineno, str(node.module)))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and ours(str(node.args[0].value)):
                found.append((node.lineno, str(node.args[0].value)))
    return found


def modules_outside_the_edge() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in EDGE]


def test_no_module_outside_azrdp_azure_imports_azure_mgmt():
    offenders = {str(p.relative_to(PACKAGE)): hits for p in modules_outside_the_edge()
                 if (hits := sdk_imports(p.read_text(encoding="utf-8"), package="azure.mgmt"))}
    assert offenders == {}


def test_nor_any_other_part_of_the_azure_sdk():
    """azure.core and azure.identity too: exceptions, requests and credentials are the edge's."""
    offenders = {str(p.relative_to(PACKAGE)): hits for p in modules_outside_the_edge()
                 if (hits := sdk_imports(p.read_text(encoding="utf-8")))}
    assert offenders == {}


def test_the_walk_sees_lazy_and_indirect_imports_and_not_docstrings():
    source = '''
"""Uses azure.mgmt.compute (only named here, and below: import azure.mgmt.network)."""
import azurelike
from azrdp.azure import session
from . import azure
def lazy():
    from azure.mgmt.compute import ComputeManagementClient
    try:
        import azure.mgmt.network as network
    except ImportError:
        pass
    importlib.import_module("azure.mgmt.resource")
    __import__("azure.mgmt")
    return "from azure.mgmt.x import y"
class K:
    if True:
        from azure.core.exceptions import AzureError
'''
    assert sdk_imports(source, package="azure.mgmt") == [
        (7, "azure.mgmt.compute"), (9, "azure.mgmt.network"), (12, "azure.mgmt.resource"), (13, "azure.mgmt")]
    assert (17, "azure.core.exceptions") in sdk_imports(source)
    assert sdk_imports("import azure_mgmt\nfrom azurerm import x\n") == []


def test_the_walk_covers_the_job_modules():
    walked = {str(p.relative_to(PACKAGE)) for p in modules_outside_the_edge()}
    assert set(JOBS) <= walked and not any(w.startswith(EDGE) for w in walked)


def test_jobs_reach_arm_through_the_vm_handle():
    """No job takes the session apart: no ``.compute`` client and no ``poll_interval(session)``
    in the job modules; the handle (``session.vm(target)``) fills those in."""
    spreads = {}
    for name in JOBS:
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        hits = [node.lineno for node in ast.walk(tree)
                if (isinstance(node, ast.Attribute) and node.attr == "compute")
                or (isinstance(node, ast.Name) and node.id == "poll_interval")
                or (isinstance(node, ast.alias) and node.name == "poll_interval")]
        if hits:
            spreads[name] = hits
    assert spreads == {}


def test_both_sessions_are_sessions_and_hand_out_vm_handles(fake_credential):
    from azrdp.azure.session import AzureSession
    from azrdp.azure.shared_reads import shared_reads
    from azrdp.azure.vm import AzureVm, Session
    from azrdp.clock import ManualClock
    from azrdp.target import Target

    clock, other = ManualClock(), ManualClock()
    plain = AzureSession(fake_credential, "00000000-0000-0000-0000-0000000000aa", polling_interval=30.0, clock=clock)
    shared = shared_reads(plain)
    for session in (plain, shared):
        assert isinstance(session, Session)
        vm = session.vm(Target("vm1", "rg1"))
        assert isinstance(vm, AzureVm) and vm.session is session
        assert (vm.resource_group, vm.name, vm.subscription_id) == ("rg1", "vm1", plain.subscription_id)
        assert vm.clock is clock and vm.polling_interval == 5.0      # the session's 30 s, capped (lro.POLL_CAP)
        assert session.vm(Target("vm1", "rg1"), clock=other).clock is other
    assert shared.vm(Target("vm1", "rg1")).session.network is shared.network   # reads stay shared


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports from, at any depth (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


PURE_RULES = PACKAGE / "azure" / "nsg_rules.py"


def test_the_rule_logic_is_pure():
    """nsg_rules.py parses --allow-from, plans rules and judges whose they are: it imports no SDK,
    no ARM module, no audit or terminal, and touches no client (its writes are the VM handle's)."""
    allowed = {"azrdp.checks", "azrdp.errors", "azrdp.logsafe", "azrdp.target", "azrdp.azure.nsg"}
    ours = {m for m in imported_modules(PURE_RULES) if m.startswith(("azrdp", "azure"))}
    assert ours <= allowed, ours - allowed
    tree = ast.parse(PURE_RULES.read_text(encoding="utf-8"))
    clients = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("network", "compute")]
    assert clients == []
    assert not any(isinstance(n, ast.FunctionDef) and n.name.endswith("_stage") for n in ast.walk(tree))


def test_the_planner_imports_only_pure_azure_modules():
    azure = {m for m in imported_modules(PACKAGE / "plan.py") if m.startswith("azrdp.azure")}
    assert azure <= {"azrdp.azure.nsg_rules", "azrdp.azure.nsg"}, azure


def test_no_diagnose_stage_lives_in_the_azure_edge():
    """The nsg.azrdp_rules and boot.health stages are the diagnose job's (they read the job's
    context); no module of the ARM edge knows that context (review B4)."""
    from azrdp.diagnose import BUILTIN_STAGES, azrdp_rules_stage, boot_health_stage

    assert azrdp_rules_stage in BUILTIN_STAGES
    assert azrdp_rules_stage.__module__ == boot_health_stage.__module__ == "azrdp.diagnose"
    for path in sorted((PACKAGE / "azure").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        stages = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.endswith("_stage")]
        assert (path.name, stages, "ctx." in source, "DiagnoseContext" in source) == (path.name, [], False, False)
