"""Options every Azure-facing command shares (diagnose, fix, sweep, check, revoke).

    @click.command("fix")
    @vm_options            # VM (NAME or resource ID), -g/--resource-group, --ids
    @azure_options         # --auth, --client-id, --cloud, --subscription
    @shared_options
    def fix_command(azure: AzureOptions, ...):
        target = azure.target()
        session = azure.session(progress=progress)

Both decorators fold their values into one ``azure`` keyword argument (an AzureOptions). No
Azure SDK import happens here: `azrdp --help` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from azrdp.ui import SILENT

AUTH_CHOICES = ("auto", "cli", "msi", "env", "workload", "device-code", "browser")
CLOUD_CHOICES = ("public", "china", "usgov")

_AZURE_KEYS = ("auth", "client_id", "cloud", "subscription")
_VM_KEYS = ("vm", "resource_group", "ids")


@dataclass
class AzureOptions:
    auth: str = "auto"
    client_id: str | None = None
    cloud: str = "public"
    subscription: str | None = None
    vm: str | None = None
    resource_group: str | None = None
    ids: str | None = None
    auth_explicit: bool = False

    def target(self) -> Any:
        """The VM the command line names (azrdp.target.Target); UsageError when malformed."""
        from azrdp.target import parse_target

        return parse_target(self.vm, resource_group=self.resource_group, ids=self.ids)

    def tenant_session(self, *, progress: Any = SILENT, **kwargs: Any) -> Any:
        """A session not bound to one subscription (fleet commands; see open_tenant_session)."""
        from azrdp.azure.session import open_tenant_session

        kwargs.setdefault("on_wait", progress.info)
        return open_tenant_session(auth=self.auth, client_id=self.client_id, cloud=self.cloud,
                                   auth_explicit=self.auth_explicit, **kwargs)

    def session(self, *, target: Any = None, progress: Any = SILENT, **kwargs: Any) -> Any:
        """The AzureSession these options describe. Waits on Azure (throttling, retries) are
        announced on ``progress``."""
        from azrdp.azure.session import open_session

        kwargs.setdefault("on_wait", progress.info)
        return open_session(auth=self.auth, client_id=self.client_id, cloud=self.cloud,
                            subscription=self.subscription, auth_explicit=self.auth_explicit,
                            target_subscription=getattr(target, "subscription", None), **kwargs)


def _fold(fn: Callable[..., Any], keys: tuple[str, ...]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        options = kwargs.get("azure") or AzureOptions()
        for key in keys:
            setattr(options, key, kwargs.pop(key))
        if "auth" in keys:
            source = ctx.get_parameter_source("auth")
            options.auth_explicit = source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")
        kwargs["azure"] = options
        return fn(*args, **kwargs)

    return wrapper


def azure_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--auth, --client-id, --cloud, --subscription."""
    wrapper = _fold(fn, _AZURE_KEYS)
    for decorator in reversed((
        *_sign_in_options(),
        click.option("--subscription", metavar="ID_OR_NAME",
                     help="Subscription (default: AZURE_SUBSCRIPTION_ID, else the Azure CLI's default)."),
    )):
        wrapper = decorator(wrapper)
    return wrapper


def fleet_azure_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--auth, --client-id, --cloud for commands that choose their subscriptions themselves (sweep);
    they take --subscription as their own, repeatable option."""
    wrapper = _fold(fn, _AZURE_KEYS[:3])
    for decorator in reversed(_sign_in_options()):
        wrapper = decorator(wrapper)
    return wrapper


def _sign_in_options() -> tuple[Callable[..., Any], ...]:
    return (
        click.option("--auth", type=click.Choice(AUTH_CHOICES), default="auto", show_default=True,
                     envvar="AZRDP_AUTH",
                     help="How to sign in: auto (environment, workload identity, managed identity, Azure CLI, "
                          "Azure PowerShell, azd), cli, msi, env, workload, device-code, browser."),
        click.option("--client-id", metavar="ID",
                     help="Client ID of a user-assigned managed identity or app registration."),
        click.option("--cloud", type=click.Choice(CLOUD_CHOICES), default="public", show_default=True,
                     help="Azure cloud: sets the sign-in authority, ARM endpoint and token scope together."),
    )


def vm_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The VM: positional NAME (with -g) or resource ID, or --ids RESOURCE_ID."""
    wrapper = _fold(fn, _VM_KEYS)
    for decorator in reversed((
        click.argument("vm", metavar="VM", required=False),
        click.option("-g", "--resource-group", metavar="RG", help="Resource group of the VM named by NAME."),
        click.option("--ids", metavar="RESOURCE_ID", help="The VM's full resource ID (instead of NAME -g RG)."),
    )):
        wrapper = decorator(wrapper)
    return wrapper

