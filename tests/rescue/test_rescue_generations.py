"""A Gen1 VM gets a Gen1 rescue VM and its Gen1 copy swaps in; the emulator refuses a copy of
another generation, as Azure does."""

from __future__ import annotations

from azrdp.audit import AuditLog
from azrdp.emulator import Emulator
from azrdp.rescue import rescue
from tests.support.rescue_support import TARGET, options, session_for


def test_a_gen1_vm_is_rescued_with_a_gen1_rescue_vm_and_disk():
    with Emulator.start("no-boot-rdp-disabled", speed=5000.0, seed=9) as emu:
        def gen1(backend):
            vm = backend.all_vms()[0]
            vm.hyper_v_generation = "V1"
            backend.by_id(vm.os_disk_id).hyper_v_generation = "V1"
        emu.update(gen1)
        result = rescue(session_for(emu), TARGET, options(emu, keep_rescue=True), audit=AuditLog(None))
        assert result.verdict == "verified", result.to_dict()["error"]
        assert result.state["generation"] == "V1"
        with emu.state.lock:
            assert emu.state.by_id(result.state["copy_id"]).hyper_v_generation == "V1"
            rescue_vm = emu.vm("azrdp-rescue")
            assert rescue_vm.hyper_v_generation == "V1" and rescue_vm.image_reference["sku"] == "2022-datacenter-smalldisk"
            assert emu.vm().os_disk_name == result.state["copy"]
