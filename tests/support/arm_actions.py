"""Which Azure RBAC action each ARM operation azrdp can call needs.

Keyed by the emulator's operationIds (azrdp/emulator/urls.py), so every route the emulator serves
must appear here (a test checks it). ``None``: the operation needs no permission of its own.
Sources: the Microsoft.Compute and Microsoft.Network resource provider operation lists ("Azure
permissions for Compute / Networking"), and ARM: asynchronous-operation status and result URLs are
reads of ``{provider}/locations/operations`` (Compute serves both from it; Network has
``operationResults`` too). Listing subscriptions needs no action: ARM returns every subscription
where the caller has any role assignment.
"""

from __future__ import annotations

ACTIONS: dict[str, str | tuple[str, ...] | None] = {
    "VirtualMachines_Get": "Microsoft.Compute/virtualMachines/read",
    "VirtualMachines_List": "Microsoft.Compute/virtualMachines/read",
    "VirtualMachines_ListAll": "Microsoft.Compute/virtualMachines/read",
    "VirtualMachines_InstanceView": "Microsoft.Compute/virtualMachines/instanceView/read",
    "VirtualMachines_RunCommand": "Microsoft.Compute/virtualMachines/runCommand/action",
    "VirtualMachines_Restart": "Microsoft.Compute/virtualMachines/restart/action",
    "VirtualMachines_Start": "Microsoft.Compute/virtualMachines/start/action",
    "VirtualMachines_RetrieveBootDiagnosticsData": "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
    "ComputeOperations_Get": "Microsoft.Compute/locations/operations/read",
    "ComputeOperationResults_Get": "Microsoft.Compute/locations/operations/read",
    "NetworkInterfaces_Get": "Microsoft.Network/networkInterfaces/read",
    "NetworkInterfaces_List": "Microsoft.Network/networkInterfaces/read",
    "NetworkInterfaces_ListAll": "Microsoft.Network/networkInterfaces/read",
    "NetworkInterfaces_ListEffectiveNetworkSecurityGroups":
        "Microsoft.Network/networkInterfaces/effectiveNetworkSecurityGroups/action",
    "VirtualNetworks_Get": "Microsoft.Network/virtualNetworks/read",
    "VirtualNetworks_List": "Microsoft.Network/virtualNetworks/read",
    "VirtualNetworks_ListAll": "Microsoft.Network/virtualNetworks/read",
    "Subnets_Get": "Microsoft.Network/virtualNetworks/subnets/read",
    "NetworkSecurityGroups_Get": "Microsoft.Network/networkSecurityGroups/read",
    "NetworkSecurityGroups_List": "Microsoft.Network/networkSecurityGroups/read",
    "NetworkSecurityGroups_ListAll": "Microsoft.Network/networkSecurityGroups/read",
    "SecurityRules_Get": "Microsoft.Network/networkSecurityGroups/securityRules/read",
    "SecurityRules_CreateOrUpdate": "Microsoft.Network/networkSecurityGroups/securityRules/write",
    "SecurityRules_Delete": "Microsoft.Network/networkSecurityGroups/securityRules/delete",
    "DefaultSecurityRules_Get": "Microsoft.Network/networkSecurityGroups/defaultSecurityRules/read",
    "PublicIPAddresses_Get": "Microsoft.Network/publicIPAddresses/read",
    "PublicIPAddresses_List": "Microsoft.Network/publicIPAddresses/read",
    "PublicIPAddresses_ListAll": "Microsoft.Network/publicIPAddresses/read",
    "ApplicationSecurityGroups_Get": "Microsoft.Network/applicationSecurityGroups/read",
    "NetworkOperations_Get": "Microsoft.Network/locations/operations/read",
    "NetworkOperationResults_Get": "Microsoft.Network/locations/operationResults/read",
    "Subscriptions_List": None,
    # Resource Graph's query ("Submits a query on resources within specified subscriptions"); its
    # rows are only those the caller may read (the emulator models no per-resource RBAC)
    "Resources": "Microsoft.ResourceGraph/resources/read",
    # azrdp rescue
    # creating a VM on an existing NIC and attaching/swapping managed disks also needs join rights on
    # the NIC and write on the disks (Learn "Azure built-in roles": Virtual Machine Contributor's
    # networkInterfaces/join/action, disks/write)
    "VirtualMachines_CreateOrUpdate": ("Microsoft.Compute/virtualMachines/write",
                                       "Microsoft.Network/networkInterfaces/join/action",
                                       "Microsoft.Compute/disks/write"),
    "VirtualMachines_Update": ("Microsoft.Compute/virtualMachines/write", "Microsoft.Compute/disks/write"),
    "VirtualMachines_PowerOff": "Microsoft.Compute/virtualMachines/powerOff/action",
    "VirtualMachines_Delete": "Microsoft.Compute/virtualMachines/delete",
    "Disks_Get": "Microsoft.Compute/disks/read",
    # a copy reads its source (Learn "Create a snapshot": read on the source disk) and writes the copy
    "Disks_CreateOrUpdate": ("Microsoft.Compute/disks/write", "Microsoft.Compute/snapshots/read"),
    "Disks_Delete": "Microsoft.Compute/disks/delete",
    "Snapshots_Get": "Microsoft.Compute/snapshots/read",
    "Snapshots_CreateOrUpdate": ("Microsoft.Compute/snapshots/write", "Microsoft.Compute/disks/read"),
    "Snapshots_Delete": "Microsoft.Compute/snapshots/delete",
    "VirtualNetworks_CreateOrUpdate": "Microsoft.Network/virtualNetworks/write",
    "NetworkInterfaces_CreateOrUpdate": ("Microsoft.Network/networkInterfaces/write",
                                         "Microsoft.Network/virtualNetworks/subnets/join/action"),
    "ResourceGroups_CreateOrUpdate": "Microsoft.Resources/subscriptions/resourceGroups/write",
    "ResourceGroups_Get": "Microsoft.Resources/subscriptions/resourceGroups/read",
    "ResourceGroups_Delete": "Microsoft.Resources/subscriptions/resourceGroups/delete",
    "ResourceOperationResults_Get": None,
}


def actions_for(operations: set[str]) -> set[str]:
    unknown = operations - set(ACTIONS)
    assert not unknown, f"map these operations to RBAC actions in tests/support/arm_actions.py: {sorted(unknown)}"
    out: set[str] = set()
    for op in operations:
        action = ACTIONS[op]
        if action:
            out.update((action,) if isinstance(action, str) else action)
    return out
