"""Scenario presets: a healthy Azure Windows VM with one or more problems applied.

Every VM gets the same realistic surroundings: a VNet and subnet whose NSG allows RDP to an
application security group from the admin's address, a NIC with its own NSG allowing RDP from that
address, and a public IP that is the VM's own loopback address (its RDP listener). Problems then
change the guest, the network or the power state. ``build`` makes one scenario for one or more
VMs; ``build_fleet`` mixes scenarios across many VMs (``{"healthy": 40, "0x904": 10}``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from azrdp.emulator.disks import give_os_disk
from azrdp.emulator.guest import BROKEN_MACHINEKEYS_SDDL, UNLISTABLE_MACHINEKEYS_SDDL
from azrdp.emulator.models import (
    NETWORK,
    ApplicationSecurityGroup,
    ArmBackend,
    IPConfiguration,
    NetworkInterface,
    NetworkSecurityGroup,
    PublicIPAddress,
    SecurityRule,
    Subnet,
    VirtualMachine,
    VirtualNetwork,
    resource_id,
)
from azrdp.emulator.profiles import GuestProfile
from azrdp.emulator.rdp_listener import AddressPool

SUBSCRIPTION_ID = "4b1d2c3e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
SUBSCRIPTION_NAME = "azrdp-emulator"
RESOURCE_GROUP = "rg-azrdp-demo"
FLEET_RESOURCE_GROUP = "rg-azrdp-fleet"
LOCATION = "westeurope"
VNET_PREFIX = "10.42.0.0/16"
SUBNET_PREFIX = "10.42.0.0/20"
ADMIN_USERS = ("azureadmin", "opsadmin")

Problem = Callable[[ArmBackend, VirtualMachine], None]


def _hours_ago(backend: ArmBackend, hours: float) -> float:
    return backend.timescale.now() - hours * 3600


def expired_cert(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The self-signed RDP certificate expired two days ago; TermService (up three days) has not
    restarted since, so Windows has not replaced it yet."""
    guest = vm.guest
    now = guest.real_now()
    guest.install_self_signed(now - timedelta(days=184), now - timedelta(days=2), replace_all=True)
    guest.booted_at = _hours_ago(backend, 72)


def machinekeys_acl(backend: ArmBackend, vm: VirtualMachine) -> None:
    """MachineKeys' ACL was "hardened": Everyone lost write on the folder (no new keys) and
    NETWORK SERVICE lost read on the RDP key container (TLS cannot use the key: Schannel 36870)."""
    guest = vm.guest
    guest.machinekeys.sddl = BROKEN_MACHINEKEYS_SDDL
    if guest.machinekeys.rdp_key:
        guest.machinekeys.rdp_key.network_service_read = False
    for hours in (20, 9, 3, 1):
        guest.log("schannel_36870", at=_hours_ago(backend, hours))


def renewal_blocked(backend: ArmBackend, vm: VirtualMachine) -> None:
    """MachineKeys' folder ACL lost Everyone's write: Windows cannot create the key for a new
    certificate, so each attempt to replace an expired one fails (event 1058, Access is denied).
    The existing key stays readable, so RDP keeps serving the old certificate."""
    vm.guest.machinekeys.sddl = BROKEN_MACHINEKEYS_SDDL
    for hours in (22, 16, 10, 4):
        vm.guest.log("rcm_1058", at=_hours_ago(backend, hours))


def corrupt_key(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The RDP key container file is empty (a disk or copy accident): "Keyset does not exist"."""
    guest = vm.guest
    if guest.machinekeys.rdp_key:
        guest.machinekeys.rdp_key.size = 0
    guest.log("rcm_1057", at=_hours_ago(backend, 30))
    for hours in (6, 2):
        guest.log("schannel_36870", at=_hours_ago(backend, hours))


def seat_taken(backend: ArmBackend, vm: VirtualMachine) -> None:
    """Two disconnected admin sessions hold both seats of a server without the Session Host role."""
    for user in ADMIN_USERS:
        vm.guest.add_session(user, "Disc", idle_min=2_880)


def active_users(backend: ArmBackend, vm: VirtualMachine) -> None:
    """Two admins are signed in and working (Active sessions, no seat free). Their sessions must
    survive the repair: the cert step's TermService restart turns them into Disc, and nothing may
    then log them off (review #1)."""
    for user, idle in zip(ADMIN_USERS, (0, 4), strict=False):
        vm.guest.add_session(user, "Active", idle_min=idle)


def hung_termservice(backend: ArmBackend, vm: VirtualMachine) -> None:
    """TermService hangs in StopPending when it is asked to stop (a known RDS failure with stuck
    sessions: review #2). Start-Service/Restart-Service would wait on it for ever."""
    vm.guest.services["TermService"].hang = "stop"


def ecc_cert(backend: ArmBackend, vm: VirtualMachine) -> None:
    """An admin bound RDP to a valid ECDSA (P-256) certificate in Cert:\\LocalMachine\\My. The key
    works; a key test that knows only RSA would call it unusable and clear the binding (review #5)."""
    from azrdp.emulator.guest import Certificate

    guest = vm.guest
    now = guest.real_now()
    cert = Certificate.make(f"{guest.computer_name.lower()}.contoso.com", now - timedelta(days=20),
                            now + timedelta(days=345), store="my", key_alg="ecdsa")
    cert.self_signed, cert.provider = False, "cng"
    guest.certificates.append(cert)
    guest.bound_thumbprint = cert.thumbprint


def machinekeys_unlistable(backend: ArmBackend, vm: VirtualMachine) -> None:
    """MachineKeys "locked down" to one local administrator account: SYSTEM cannot list it, no new
    key can be made, and NETWORK SERVICE cannot read the RDP key (review #18)."""
    guest = vm.guest
    guest.machinekeys.sddl = UNLISTABLE_MACHINEKEYS_SDDL
    if guest.machinekeys.rdp_key is not None:
        guest.machinekeys.rdp_key.network_service_read = False


def binding_as_text(backend: ArmBackend, vm: VirtualMachine) -> None:
    """An admin set SSLCertificateSHA1Hash by hand as a REG_SZ thumbprint string (Set-ItemProperty
    -Value 'THUMB'), not the 20-byte REG_BINARY Win32_TSGeneralSetting writes: RDP cannot use the
    binding (review #17; what TermService then serves is unverified, modelled as its self-signed one)."""
    guest = vm.guest
    cert = guest.newest_self_signed()
    guest.bound_thumbprint = cert.thumbprint if cert else "0" * 40
    guest.bound_kind = "String"


def licensing_expired(backend: ArmBackend, vm: VirtualMachine) -> None:
    """An RD Session Host whose 120-day RD Licensing grace period is over, with no licensing mode
    or license server set: RDP, TLS and NLA work, every non-admin logon is refused (review #20)."""
    guest = vm.guest
    guest.seat_mode, guest.licensing_type, guest.grace_days = "rdsh", 5, 0


def rdp_disabled(backend: ArmBackend, vm: VirtualMachine) -> None:
    """fDenyTSConnections=1: Remote Desktop is switched off in the guest."""
    vm.guest.registry["fDenyTSConnections"] = 1


def firewall(backend: ArmBackend, vm: VirtualMachine) -> None:
    """Windows Firewall is on and the "Remote Desktop" rule group is disabled."""
    for rule in vm.guest.firewall_rules:
        if rule.group == "Remote Desktop":
            rule.enabled = False


def nsg_blocked(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The NIC's NSG has a Deny for the RDP port, before the allow rule."""
    nic = backend.by_id(vm.nic_ids[0])
    nsg = backend.by_id(nic.nsg_id)
    nsg.rules["denyrdp-inbound"] = SecurityRule("DenyRDP-Inbound", {
        "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": str(vm.guest.port),
        "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Deny",
        "priority": 200, "direction": "Inbound", "provisioningState": "Succeeded"})


def agent_not_ready(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The Azure VM agent stopped: the platform reports Not Ready and Run Command cannot work
    (a reboot starts it again)."""
    vm.guest.services["WindowsAzureGuestAgent"].state = "Stopped"


def no_boot_rdp_disabled(backend: ArmBackend, vm: VirtualMachine) -> None:
    """Nothing reaches the guest from outside or through Azure: Remote Desktop is switched off
    (fDenyTSConnections=1), TermService and the VM agent's service are Disabled, so a restart
    brings neither back (Run Command never runs; only an offline repair of the disk helps)."""
    guest = vm.guest
    guest.registry["fDenyTSConnections"] = 1
    for name in ("TermService", "WindowsAzureGuestAgent"):
        guest.services[name].start = "Disabled"
        guest.services[name].state = "Stopped"


def deallocated(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The VM is stopped (deallocated): no guest, no listener; Run Command and restart refuse. Its
    public IP is Dynamic, as `az vm create` often makes it, so it has no address until the VM
    starts (real-azure-behaviour.md, "Smaller differences")."""
    for pip in backend.public_ips_of(vm):
        pip.allocation = "Dynamic"
    backend.stop(vm, deallocate=True)


def stopped(backend: ArmBackend, vm: VirtualMachine) -> None:
    """The VM is stopped from inside or with `az vm stop` (still allocated and billed): the guest is
    down, yet ARM still shows the agent's last report, Ready."""
    backend.stop(vm)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    problems: tuple[Problem, ...]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("healthy", "RDP answers; nothing to repair.", ()),
    Scenario("expired-cert", "The RDP self-signed certificate has expired.", (expired_cert,)),
    Scenario("machinekeys-acl", "The MachineKeys ACL is broken: TLS cannot open the RDP key.", (machinekeys_acl,)),
    Scenario("corrupt-key", "The RDP key container is corrupt (Keyset does not exist).", (corrupt_key,)),
    Scenario("seat-taken", "Two disconnected sessions hold both admin seats.", (seat_taken,)),
    Scenario("rdp-disabled", "Remote Desktop is disabled in the guest (fDenyTSConnections=1).", (rdp_disabled,)),
    Scenario("firewall", "Windows Firewall's Remote Desktop rules are disabled.", (firewall,)),
    Scenario("nsg-blocked", "The NIC's NSG denies the RDP port.", (nsg_blocked,)),
    Scenario("agent-not-ready", "The VM agent is not ready, so Run Command cannot run.", (agent_not_ready,)),
    Scenario("no-boot-rdp-disabled", "Remote Desktop, TermService and the VM agent are disabled in the guest: "
                                     "neither RDP nor Run Command reaches it, and a restart changes nothing.",
             (no_boot_rdp_disabled,)),
    Scenario("deallocated", "The VM is deallocated.", (deallocated,)),
    Scenario("stopped", "The VM is stopped but still allocated (its agent's last report still says Ready).", (stopped,)),
    Scenario("active-users", "Two admins work while the RDP certificate has expired; the repair must keep them "
                             "signed in.", (expired_cert, active_users)),
    Scenario("hung-termservice", "The RDP certificate expired and TermService hangs in StopPending when it is "
                                 "restarted.", (expired_cert, hung_termservice)),
    Scenario("licensing-expired", "An RD Session Host past its licensing grace period with no license server "
                                  "(the wire probe passes; users are refused).", (licensing_expired,)),
    Scenario("machinekeys-unlistable", "The MachineKeys folder ACL lets only one local administrator in: SYSTEM "
                                       "cannot list it, and NETWORK SERVICE cannot read the RDP key.",
             (machinekeys_unlistable,)),
    Scenario("binding-as-text", "RDP's certificate binding SSLCertificateSHA1Hash was set as a text (REG_SZ) "
                                "thumbprint, which RDP cannot use.", (binding_as_text,)),
    Scenario("ecc-cert", "RDP is bound to a valid ECDSA certificate (healthy: nothing to repair).", (ecc_cert,)),
    Scenario("0x904", "Error 0x904: the RDP certificate expired and Windows cannot replace it (MachineKeys "
                      "ACL, event 1058); disconnected sessions hold both admin seats.",
             (expired_cert, renewal_blocked, seat_taken)),
)}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}") from None


# -- building -------------------------------------------------------------------------------------

def _rule(name: str, priority: int, port: int, source: str, *, destination_asg: str | None = None) -> SecurityRule:
    props = {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": str(port),
             "sourceAddressPrefix": source, "access": "Allow", "priority": priority, "direction": "Inbound",
             "provisioningState": "Succeeded", "description": "RDP from the admin workstation"}
    if destination_asg:
        props["destinationApplicationSecurityGroups"] = [{"id": destination_asg}]
    else:
        props["destinationAddressPrefix"] = "*"
    return SecurityRule(name, props)


def _network(backend: ArmBackend, sub: str, rg_name: str, location: str) -> tuple[VirtualNetwork, ApplicationSecurityGroup]:
    """The resource group's VNet, subnet + NSG and the RDP hosts' ASG (made once per group)."""
    rg = backend.resource_group(sub, rg_name)
    if "vnet-azrdp" in rg.vnets:
        return rg.vnets["vnet-azrdp"], rg.asgs["asg-rdp-hosts"]
    asg = ApplicationSecurityGroup(sub, rg_name, "asg-rdp-hosts", location)
    rg.asgs[asg.name.lower()] = asg
    subnet_nsg = NetworkSecurityGroup(sub, rg_name, "snet-default-nsg", location)
    rule = _rule("AllowRDP-Admins-To-RDPHosts", 300, 3389, f"{backend.client_ip}/32", destination_asg=asg.id)
    subnet_nsg.rules[rule.name.lower()] = rule
    rg.nsgs[subnet_nsg.name.lower()] = subnet_nsg
    vnet = VirtualNetwork(sub, rg_name, "vnet-azrdp", location, [VNET_PREFIX])
    vnet.subnets["default"] = Subnet("default", SUBNET_PREFIX, subnet_nsg.id)
    rg.vnets[vnet.name.lower()] = vnet
    return vnet, asg


def _allow_port_on_subnet(subnet_nsg: NetworkSecurityGroup, port: int) -> None:
    """Where VMs cannot each have their own loopback address they listen on their own ports:
    the subnet's RDP rule then lists every one of them."""
    props = subnet_nsg.rules["allowrdp-admins-to-rdphosts"].properties
    ports = props.pop("destinationPortRanges", None) or [props.pop("destinationPortRange")]
    if str(port) not in ports:
        ports.append(str(port))
    if len(ports) == 1:
        props["destinationPortRange"] = ports[0]
    else:
        props["destinationPortRanges"] = ports


def add_vm(backend: ArmBackend, pool: AddressPool, name: str, *, subscription: str = SUBSCRIPTION_ID,
           resource_group: str = RESOURCE_GROUP, location: str = LOCATION) -> VirtualMachine:
    """A healthy Windows Server VM with its NIC, NSG and public IP, listening on its own address."""
    if subscription.lower() not in backend.subscriptions:
        backend.add_subscription(subscription, SUBSCRIPTION_NAME)
    rg = backend.add_resource_group(subscription, resource_group, location)
    vnet, asg = _network(backend, subscription, resource_group, location)
    address, port = pool.allocate()
    _allow_port_on_subnet(backend.by_id(vnet.subnets["default"].nsg_id), port)
    index = len(rg.vms) + 4
    private_ip = f"10.42.{index // 250}.{index % 250 + 4}"
    vm_id = resource_id(subscription, resource_group, "Microsoft.Compute", "virtualMachines", name)

    nsg = NetworkSecurityGroup(subscription, resource_group, f"{name}-nsg", location)
    allow = _rule("AllowRDP-Admin", 300, port, f"{backend.client_ip}/32")
    nsg.rules[allow.name.lower()] = allow
    rg.nsgs[nsg.name.lower()] = nsg
    nic_name = f"{name}-nic"
    nic_id = resource_id(subscription, resource_group, NETWORK, "networkInterfaces", nic_name)
    pip = PublicIPAddress(subscription, resource_group, f"{name}-ip", location, address,
                          ip_configuration_id=f"{nic_id}/ipConfigurations/ipconfig1")
    rg.public_ips[pip.name.lower()] = pip
    nic = NetworkInterface(subscription, resource_group, nic_name, location,
                           [IPConfiguration("ipconfig1", private_ip, f"{vnet.id}/subnets/default", pip.id, [asg.id])],
                           nsg_id=nsg.id, vm_id=vm_id,
                           mac="00-0D-3A-" + "-".join(f"{(index >> s) & 0xFF:02X}" for s in (16, 8, 0)))
    rg.nics[nic.name.lower()] = nic

    guest = backend.new_guest(name[:15].upper())
    guest.registry["PortNumber"] = port
    for rule in guest.firewall_rules:  # a VM built to listen elsewhere has its firewall rules on that port
        rule.port = port
    vm = VirtualMachine(subscription, resource_group, name, location, guest, [nic.id], address)
    rg.vms[name.lower()] = vm
    give_os_disk(backend, vm, name=f"{name}_OsDisk_1")   # the guest's Windows lives on it
    return vm


def _plant(backend: ArmBackend, pool: AddressPool, name: str, preset: Scenario, resource_group: str,
           profile: GuestProfile | None = None) -> VirtualMachine:
    vm = add_vm(backend, pool, name, resource_group=resource_group)
    if profile is not None:
        profile.apply(vm.guest)
    for problem in preset.problems:
        problem(backend, vm)
    return vm


def build(backend: ArmBackend, pool: AddressPool, name: str = "healthy", *, vms: int = 1,
          profile: GuestProfile | None = None,
          resource_group: str = RESOURCE_GROUP) -> list[VirtualMachine]:
    """Scenario ``name`` on ``vms`` VMs (vm-web-01, vm-web-02, ...)."""
    preset = scenario(name)
    return [_plant(backend, pool, f"vm-web-{n:02d}", preset, resource_group, profile) for n in range(1, vms + 1)]


@dataclass(frozen=True)
class FleetLayout:
    """How a fleet spreads: over ``subscriptions`` subscriptions, each with ``resource_groups``
    resource groups (VMs dealt round-robin, so every group gets its share of every scenario).
    The first subscription is the emulator's usual one; the others get fixed IDs of their own."""

    subscriptions: int = 1
    resource_groups: int = 1

    def __post_init__(self) -> None:
        if self.subscriptions < 1 or self.resource_groups < 1:
            raise ValueError("a fleet needs at least one subscription and one resource group")

    def places(self) -> list[tuple[str, str, str]]:
        """(subscription id, its display name, resource group) for every group of the layout."""
        out = []
        for s in range(self.subscriptions):
            sub_id = SUBSCRIPTION_ID if s == 0 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"azrdp-emulator/{s + 1}"))
            name = SUBSCRIPTION_NAME if s == 0 else f"{SUBSCRIPTION_NAME}-{s + 1:02d}"
            for g in range(self.resource_groups):
                out.append((sub_id, name, FLEET_RESOURCE_GROUP if g == 0 else f"{FLEET_RESOURCE_GROUP}-{g + 1:02d}"))
        return out

    def to_dict(self) -> dict[str, int]:
        return {"subscriptions": self.subscriptions, "resource_groups": self.resource_groups}


def build_fleet(backend: ArmBackend, pool: AddressPool, mix: dict[str, int], *,
                layout: FleetLayout = FleetLayout(), profile: GuestProfile | None = None) -> list[VirtualMachine]:
    """Many VMs: ``mix`` maps scenario -> count, spread over ``layout``. Names say the scenario
    (vm-0x904-003) so a sweep's report can be checked against what was planted; they are unique
    across the whole fleet."""
    presets = {name: scenario(name) for name in mix}
    places = layout.places()
    for sub_id, name, _group in places:
        if sub_id.lower() not in backend.subscriptions:
            backend.add_subscription(sub_id, name)
    width = max(3, len(str(max(mix.values(), default=1))))
    planted: list[VirtualMachine] = []
    for name, count in mix.items():
        for n in range(1, count + 1):
            sub_id, _sub_name, group = places[len(planted) % len(places)]
            vm = add_vm(backend, pool, f"vm-{name}-{n:0{width}d}", subscription=sub_id, resource_group=group)
            if profile is not None:
                profile.apply(vm.guest)
            for problem in presets[name].problems:
                problem(backend, vm)
            planted.append(vm)
    return planted
