"""Which VM: a reference the way the az CLI takes it, and ARM resource IDs compared the way ARM
does (case-insensitively: ARM hands back `RG1` inside a NIC id for a group created as `rg1`).

Accepted forms:
    NAME -g RESOURCE_GROUP
    /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME
(the resource ID positionally or with --ids). No Azure SDK import here: parsing is instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from azrdp.errors import UsageError

ACCEPTED_FORMS = ("NAME -g RESOURCE_GROUP, or a resource ID "
                  "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME")

# ARM names: resource groups allow letters, digits, '_', '-', '.', '(', ')'; VM names are stricter.
_SEGMENT = r"[^/\s]+"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_GROUP_RE = re.compile(r"^[-\w._()]{1,90}$")


@dataclass(frozen=True)
class ResourceId:
    """A parsed ARM resource ID. ``types`` and ``names`` run from the provider's top-level type
    down to child resources (``virtualNetworks``/``subnets``)."""

    subscription: str
    resource_group: str
    namespace: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[-1]

    @property
    def type(self) -> str:
        """e.g. ``microsoft.network/virtualnetworks/subnets`` (lower case, for comparison)."""
        return "/".join((self.namespace, *self.types)).lower()

    def parent(self) -> ResourceId:
        if len(self.names) < 2:
            raise ValueError(f"{self} has no parent resource")
        return ResourceId(self.subscription, self.resource_group, self.namespace,
                          self.types[:-1], self.names[:-1])

    def __str__(self) -> str:
        tail = "/".join(f"{t}/{n}" for t, n in zip(self.types, self.names, strict=False))
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/{self.namespace}/{tail}")


_ID_RE = re.compile(
    rf"^/subscriptions/(?P<sub>{_SEGMENT})/resourceGroups/(?P<rg>{_SEGMENT})"
    rf"/providers/(?P<ns>{_SEGMENT})/(?P<rest>{_SEGMENT}/{_SEGMENT}(?:/{_SEGMENT}/{_SEGMENT})*)/?$",
    re.IGNORECASE,
)


def parse_resource_id(resource_id: str) -> ResourceId:
    """Parse an ARM resource ID; ValueError if it is not one."""
    match = _ID_RE.match((resource_id or "").strip())
    if not match:
        raise ValueError(f"not an ARM resource ID: {resource_id!r}")
    parts = match["rest"].split("/")
    return ResourceId(match["sub"], match["rg"], match["ns"], tuple(parts[0::2]), tuple(parts[1::2]))


def id_key(resource_id: str | None) -> str:
    """The form under which IDs are compared and looked up: ARM treats IDs case-insensitively."""
    return (resource_id or "").strip().rstrip("/").lower()


def same_id(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and id_key(a) == id_key(b)


@dataclass(frozen=True)
class Target:
    """A VM to work on. ``subscription`` is set only when a resource ID named it."""

    name: str
    resource_group: str
    subscription: str | None = None

    def resource_id(self, subscription: str) -> str:
        return (f"/subscriptions/{subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Compute/virtualMachines/{self.name}")

    def __str__(self) -> str:
        return f"{self.resource_group}/{self.name}"


def _usage(problem: str) -> UsageError:
    return UsageError(f"{problem}.", hint=f"Name a VM as {ACCEPTED_FORMS}.")


def parse_target(reference: str | None = None, *, resource_group: str | None = None,
                 ids: str | None = None) -> Target:
    """Turn the command line's VM reference into a Target, or raise UsageError (exit 2)."""
    if reference and ids:
        raise _usage("give the VM either as NAME/resource ID or with --ids, not both")
    text = (ids or reference or "").strip()
    if not text:
        raise _usage("no VM given")
    if text.startswith("/"):
        try:
            rid = parse_resource_id(text)
        except ValueError:
            raise _usage(f"{text!r} is not a VM resource ID") from None
        if rid.type != "microsoft.compute/virtualmachines":
            raise _usage(f"{text!r} is a {'/'.join(rid.types)} ID, not a virtual machine ID")
        if resource_group and resource_group.lower() != rid.resource_group.lower():
            raise _usage(f"-g {resource_group} contradicts the resource group "
                         f"{rid.resource_group} inside the resource ID")
        return Target(rid.name, rid.resource_group, rid.subscription)
    if ids:
        raise _usage(f"--ids takes a resource ID, not {text!r}")
    if "/" in text or not _NAME_RE.match(text):
        raise _usage(f"{text!r} is not a VM name or resource ID")
    if not resource_group:
        raise _usage(f"VM {text!r} needs its resource group (-g/--resource-group)")
    if not _GROUP_RE.match(resource_group):
        raise _usage(f"{resource_group!r} is not a valid resource group name")
    return Target(text, resource_group)
