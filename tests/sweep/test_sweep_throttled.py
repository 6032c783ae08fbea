"""A sweep meeting Compute's throttling (issue 11, item 2): a 429 beyond the command's budget ends
only the VM it hit, reported as throttled with its operation group; VMs whose requests fall in
other operation groups go on without pausing."""

from __future__ import annotations

import pytest

from azrdp.azure.session import RetrySettings
from azrdp.azure.throttle import SharedBackoff, group_family, request_group
from azrdp.clock import ManualClock
from azrdp.sweep import sweep
from tests.support.sweep_support import outcomes, tenant_session

PROBE_TIMEOUT = 2.0


@pytest.mark.parametrize("resource_graph, read", [(False, "VirtualMachines_InstanceView"), (True, "VirtualMachines_Get")],
                         ids=["arm-lists", "resource-graph"])
def test_a_vm_throttled_beyond_the_budget_is_reported_throttled_and_the_others_go_on(fleet, resource_graph, read):
    clock = ManualClock()
    # a sweep reads a VM of its own only where the fleet's rows cannot answer: after the ARM lists
    # the agent of a VM whose RDP does not answer (VirtualMachines_InstanceView), after Resource
    # Graph (which lags ARM) the VM itself (VirtualMachines_Get); both LowCostGet
    fleet.inject("throttle", operation=read, vm="vm-nsg-blocked-001", count=None, retry_after=1200)
    session = tenant_session(fleet, clock=clock)
    result = sweep(session, probe_timeout=PROBE_TIMEOUT, source_ip=fleet.state.client_ip, resource_graph=resource_graph)
    got = outcomes(result)
    assert got["vm-nsg-blocked-001"] == "error" and got["vm-healthy-001"] == "healthy"
    assert got["vm-0x904-001"] == "unhealthy" and got["vm-healthy-002"] == "healthy"
    throttled = next(r for r in result.results if r.vm.name == "vm-nsg-blocked-001")
    assert throttled.error["type"] == "Throttled"
    assert throttled.error["throttled"] == {"group": "Microsoft.Compute/LowCostGet3Min", "retry_after": 1200.0}
    assert "retry after 1200 s" in throttled.summary
    assert max(clock.sleeps, default=0) <= session.retry.throttle_budget    # never the 1200 s
    assert fleet.count(read, status=429) == 1                                # and not hammered


def test_a_group_throttle_pauses_only_that_group():
    clock = ManualClock()
    gate = SharedBackoff("subscription s", clock=clock)
    gate.hold(120, "virtualMachines/vm1", group_family("Microsoft.Compute/LowCostGet3Min"))
    poll = "https://management.azure.com/subscriptions/s/providers/Microsoft.Compute/locations/x/operations/1"
    nic = "https://management.azure.com/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/n"
    vm = "https://management.azure.com/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"
    gate.wait(request_group("GET", poll))
    gate.wait(request_group("GET", nic))
    assert clock.monotonic() == 0                                # other groups go on at once
    gate.wait(request_group("GET", vm))
    assert clock.monotonic() == 120                              # the throttled group waits it out
    assert request_group("POST", vm + "/runCommand") == "Microsoft.Compute/UpdateVM"
    assert RetrySettings().throttle_budget == 300.0
