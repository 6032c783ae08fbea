"""Two admins fix two VMs behind one subnet NSG at the same time (issue 12, item 4), each with the
real CLI in its own process against one emulator: each run makes its own rule on the shared NSG
(names unique per run, priorities chosen free and retried on SecurityRuleConflict), each rule names
its VM and run, and `revoke` of one VM removes only that VM's rule. Rules on one NSG are written by
ARM one at a time per NSG; two PUTs at one priority get the second a 409 SecurityRuleConflict
(Learn, "Network security groups": priority is unique within an NSG)."""

from __future__ import annotations

import json
import subprocess
import sys

from azrdp.emulator import Emulator
from tests.support.e2e_support import PROBE_TIMEOUT, RUN_LIMIT, SPEED, cli_environment

VMS = ("vm-web-01", "vm-web-02")


def _azrdp(emu, folder, *argv):
    return subprocess.Popen([sys.executable, "-m", "azrdp", *argv], env=cli_environment(emu, folder),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)


def _subnet_nsg(backend, emu):
    return backend.resource_group(emu.subscription_id, emu.vm().resource_group).nsgs["snet-default-nsg"]


def test_two_fixes_behind_one_subnet_nsg_make_one_owned_rule_each(tmp_path):
    with Emulator.start("healthy", vms=2, speed=SPEED, seed=11) as emu:
        rg = emu.vm().resource_group
        # the subnet NSG no longer lets the admin in: both runs need a rule on that one shared NSG
        emu.update(lambda backend: _subnet_nsg(backend, emu).rules.pop("allowrdp-admins-to-rdphosts"))
        source = f"{emu.state.client_ip}/32"
        runs = []
        for name in VMS:
            folder = tmp_path / name
            folder.mkdir()
            runs.append((folder, _azrdp(emu, folder, "fix", name, "-g", rg, "--yes", "-o", "json",
                                        "--allow-from", source, "--source-ip", emu.state.client_ip,
                                        "--probe-timeout", PROBE_TIMEOUT, "--audit-log", str(folder / "audit.jsonl"))))
        results = []
        for _folder, process in runs:
            stdout, stderr = process.communicate(timeout=RUN_LIMIT)
            results.append((process.returncode, stdout, stderr))
        rules = emu.update(lambda backend: [dict(r.properties, name=r.name)
                                            for r in _subnet_nsg(backend, emu).rules.values()
                                            if r.name.startswith("azrdp-")])

        for (code, stdout, stderr), name in zip(results, VMS, strict=True):
            assert code == 0, f"{name}: exit {code}\n{stdout[-2000:]}\n{stderr[-2000:]}"
            assert json.loads(stdout)["verdict"] == "verified"
        assert len(rules) == 2 and len({r["name"] for r in rules}) == 2
        assert len({r["priority"] for r in rules}) == 2
        owners = sorted(r["description"].split("; vm ")[1].split(";")[0] for r in rules)
        assert owners == sorted(VMS)
        assert all(r["sourceAddressPrefix"] == emu.state.client_ip for r in rules)   # never wider than asked

        folder = tmp_path / "revoke"
        folder.mkdir()
        process = _azrdp(emu, folder, "revoke", VMS[0], "-g", rg, "--audit-log", str(folder / "audit.jsonl"))
        stdout, stderr = process.communicate(timeout=RUN_LIMIT)
        left = emu.update(lambda backend: [r.properties["description"] for r in _subnet_nsg(backend, emu).rules.values()
                                           if r.name.startswith("azrdp-")])
    assert process.returncode == 0, stdout + stderr
    assert len(left) == 1 and f"vm {VMS[1]}" in left[0]
