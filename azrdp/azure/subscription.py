"""Which subscription: `--subscription` (id or name), else AZURE_SUBSCRIPTION_ID, else the Azure
CLI's default subscription, else a UsageError that says how to pass one.

The Azure CLI keeps its accounts in ``$AZURE_CONFIG_DIR/azureProfile.json`` (default
``~/.azure``), written with a UTF-8 byte-order mark. Reading it needs no network and no `az`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from azrdp.errors import UsageError

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

HOW_TO_PASS = ("Pass --subscription ID_OR_NAME, set AZURE_SUBSCRIPTION_ID, "
               "or choose a default with `az account set --subscription ID_OR_NAME`.")


@dataclass(frozen=True)
class Subscription:
    id: str
    name: str | None = None
    source: str = "--subscription"  # where it came from, for messages and --debug

    def label(self) -> str:
        return f"{self.name} ({self.id})" if self.name and self.name != self.id else self.id


def is_subscription_id(text: str) -> bool:
    return bool(_GUID_RE.match(text.strip()))


def cli_profile_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    folder = environ.get("AZURE_CONFIG_DIR") or str(Path.home() / ".azure")
    return Path(folder) / "azureProfile.json"


def cli_subscriptions(environ: Mapping[str, str] | None = None) -> list[dict]:
    """The accounts the Azure CLI knows (empty when it was never signed in)."""
    path = cli_profile_path(environ)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the Azure CLI profile {path}: {err}.", hint=HOW_TO_PASS) from None
    subscriptions = document.get("subscriptions") if isinstance(document, dict) else None
    return [s for s in subscriptions or [] if isinstance(s, dict) and s.get("id")]


def resolve_subscription(requested: str | None = None, *,
                         environ: Mapping[str, str] | None = None,
                         list_subscriptions: Callable[[], Iterable[tuple[str, str]]] | None = None,
                         ) -> Subscription:
    """Pick the subscription. ``list_subscriptions`` (id, name pairs, e.g. from ARM) is asked only
    to resolve a name the Azure CLI profile does not know."""
    environ = os.environ if environ is None else environ
    if requested and requested.strip():
        return _by_id_or_name(requested.strip(), environ, list_subscriptions)
    from_env = (environ.get("AZURE_SUBSCRIPTION_ID") or "").strip()
    if from_env:
        if not is_subscription_id(from_env):
            raise UsageError(f"AZURE_SUBSCRIPTION_ID={from_env!r} is not a subscription ID.", hint=HOW_TO_PASS)
        return Subscription(from_env, source="AZURE_SUBSCRIPTION_ID")
    for account in cli_subscriptions(environ):
        if account.get("isDefault"):
            return Subscription(account["id"], account.get("name"), source="Azure CLI default")
    raise UsageError("no Azure subscription chosen.", hint=HOW_TO_PASS)


def _by_id_or_name(requested: str, environ: Mapping[str, str],
                   list_subscriptions: Callable[[], Iterable[tuple[str, str]]] | None) -> Subscription:
    known = [(a["id"], a.get("name") or "") for a in cli_subscriptions(environ)]
    if is_subscription_id(requested):
        name = next((n for i, n in known if i.lower() == requested.lower()), None)
        return Subscription(requested, name)
    matches = [(i, n) for i, n in known if n.lower() == requested.lower()]
    if not matches and list_subscriptions is not None:
        matches = [(i, n) for i, n in list_subscriptions() if (n or "").lower() == requested.lower()]
    ids = sorted({i.lower(): i for i, _ in matches}.values())
    if len(ids) == 1:
        return Subscription(ids[0], matches[0][1])
    if len(ids) > 1:
        raise UsageError(f"subscription name {requested!r} is ambiguous ({', '.join(ids)}).",
                         hint="Pass the subscription ID instead.")
    raise UsageError(f"no subscription named {requested!r} is visible to this sign-in.",
                     hint="Pass the subscription ID, or list yours with `az account list -o table`.")
