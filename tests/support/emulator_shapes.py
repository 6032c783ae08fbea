"""Compare an emulated ARM body with Microsoft's example and with what the SDK model declares."""

from __future__ import annotations

from typing import Any

FREE_FORM = ("tags",)  # maps whose keys are the user's, not the schema's


def paths(value: Any, prefix: str = "$") -> dict[str, str]:
    """Every JSON path in ``value`` (list items as ``[]``) -> its JSON type."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out[f"{prefix}.{key}"] = _kind(item)
            if key not in FREE_FORM:
                out.update(paths(item, f"{prefix}.{key}"))
    elif isinstance(value, list):
        for item in value:
            out.update(paths(item, f"{prefix}[]"))
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}[type(value)]


def undeclared(model: Any, raw: Any, path: str = "$") -> list[str]:
    """Paths of ``raw`` that the SDK model class does not declare: fields a typed caller
    (``vm.properties.instance_view``) would never see, although ``as_dict()`` keeps them."""
    fields = getattr(type(model), "_attr_to_rest_field", None)
    if fields is None or not isinstance(raw, dict):
        return []
    by_rest = {field._rest_name: attr for attr, field in fields.items()}
    missing: list[str] = []
    for key, value in raw.items():
        attr = by_rest.get(key)
        if attr is None:
            missing.append(f"{path}.{key}")
            continue
        typed = getattr(model, attr)
        if isinstance(value, dict):
            missing += undeclared(typed, value, f"{path}.{key}")
        elif isinstance(value, list) and isinstance(typed, list):
            for item_model, item_raw in zip(typed, value, strict=False):
                missing += undeclared(item_model, item_raw, f"{path}.{key}[]")
    return missing


# What real Azure sends beyond Microsoft's examples (../shared/reference/real-azure-behaviour.md, "Smaller
# differences", read off recorded traffic): a VM's NIC references carry `primary`; rules carry `type`,
# `etag` and the empty plural arrays beside the singular fields; NSGs carry `etag`, `resourceGuid` and
# their `subnets[]` / `networkInterfaces[]` back-references.
VM_REAL = ("$.properties.networkProfile.networkInterfaces[].properties",)
RULE_REAL = ("$.etag", "$.type", "$.properties.sourcePortRanges", "$.properties.destinationPortRanges",
             "$.properties.sourceAddressPrefixes", "$.properties.destinationAddressPrefixes")
NSG_REAL = ("$.etag", "$.properties.resourceGuid", "$.properties.networkInterfaces", "$.properties.subnets",
            *(p.replace("$.", "$.properties.securityRules[].", 1) for p in RULE_REAL),
            *(p.replace("$.", "$.properties.defaultSecurityRules[].", 1) for p in RULE_REAL))


def check_round_trip(raw: Any, model: Any, example_body: Any, *, extras: tuple[str, ...] = ()) -> None:
    """The emulated body survives the SDK (every field typed, ``as_dict()`` equal to the wire),
    uses only fields Microsoft's example has (plus the documented ``extras`` prefixes), and gives
    shared fields the example's JSON types."""
    assert undeclared(model, raw) == []
    assert model.as_dict() == raw
    ours, theirs = paths(raw), paths(example_body)
    invented = [p for p in ours if p not in theirs and not p.startswith(extras)]
    assert invented == [], f"fields not in Microsoft's example: {invented}"
    retyped = {p: (ours[p], theirs[p]) for p in ours if p in theirs and theirs[p] != "null" and ours[p] != theirs[p]}
    assert retyped == {}
