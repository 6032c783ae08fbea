"""Build the credential `--auth` asks for, and make every sign-in failure one line (exit 3) that
says the exact next step for that method: `az login`, which AZURE_* variables are missing, ...

The credential is wrapped so a failure to get a token surfaces as AuthError straight out of the
SDK pipeline (it is not an AzureError, so the retry policy does not retry it).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from azrdp.errors import AuthError, UsageError

AUTH_METHODS = ("auto", "cli", "msi", "env", "workload", "device-code", "browser")

NEXT_STEP: dict[str, str] = {
    "auto": ("Sign in with `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, "
             "or run where a managed identity is assigned; --auth chooses one method explicitly."),
    "cli": "Run `az login` (for another cloud first `az cloud set --name ...`), then run azrdp again.",
    "msi": ("Run azrdp where a managed identity is assigned (Azure VM, Automation account, App Service); "
            "for a user-assigned identity pass --client-id."),
    "env": ("Set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
            "(or AZURE_CLIENT_CERTIFICATE_PATH) for a service principal."),
    "workload": "Set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (workload identity federation).",
    "device-code": "Run azrdp again and complete the device-code sign-in before the code expires.",
    "browser": "Run azrdp again and finish the browser sign-in; without a browser use --auth device-code.",
}

_ENV_SECRET_CHOICES = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")


class ExplainedCredential:
    """A TokenCredential that turns a failed sign-in into AuthError with the next step."""

    def __init__(self, inner: Any, method: str):
        self.inner = inner
        self.method = method

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self.inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as err:
            raise sign_in_error(self.method, err) from err
        except OSError as err:  # a credential file (AZURE_FEDERATED_TOKEN_FILE) missing or unreadable
            raise sign_in_error(self.method, err) from err

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close:
            close()


def sign_in_error(method: str, err: BaseException) -> AuthError:
    reason = _first_line(getattr(err, "message", None) or str(err)) or type(err).__name__
    if method == "auto":
        reason = "no credential in the default chain (environment, workload identity, managed identity, " \
                 "Azure CLI, Azure PowerShell, Azure Developer CLI) could get a token"
    return AuthError(f"not signed in to Azure (--auth {method}): {reason.rstrip('.')}.", hint=NEXT_STEP[method])


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def missing_variables(method: str, environ: Mapping[str, str], *, client_id: str | None = None) -> list[str]:
    """The AZURE_* variables ``method`` needs but the environment lacks (e.g. for --auth env)."""
    def has(name: str) -> bool:
        return bool((environ.get(name) or "").strip())

    missing: list[str] = []
    if method == "env":
        missing = [n for n in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID") if not has(n)]
        if not any(has(n) for n in _ENV_SECRET_CHOICES):
            missing.append(" or ".join(_ENV_SECRET_CHOICES))
    elif method == "workload":
        needed = ["AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"] + ([] if client_id else ["AZURE_CLIENT_ID"])
        missing = [n for n in needed if not has(n)]
    return missing


def make_credential(method: str = "auto", *, client_id: str | None = None, authority: str | None = None,
                    environ: Mapping[str, str] | None = None) -> ExplainedCredential:
    """The credential for ``--auth method``; raises AuthError (exit 3) when the method cannot work
    here, before any request is made. ``authority`` is the cloud's sign-in host."""
    environ = os.environ if environ is None else environ
    if method not in AUTH_METHODS:
        raise UsageError(f"unknown --auth {method!r}.", hint=f"Choose one of {', '.join(AUTH_METHODS)}.")
    missing = missing_variables(method, environ, client_id=client_id)
    if missing:
        raise AuthError(f"--auth {method} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                        f"not set.", hint=NEXT_STEP[method])
    if method == "cli" and not shutil.which("az", path=environ.get("PATH")):
        raise AuthError("--auth cli needs the Azure CLI, but `az` is not on PATH.",
                        hint="Install the Azure CLI and run `az login`, or choose another --auth.")

    import azure.identity as identity  # lazily: ~130 ms

    kwargs: dict[str, Any] = {"authority": authority} if authority else {}
    try:
        inner = _build(identity, method, client_id, environ, kwargs)
    except (OSError, ValueError) as err:  # azure-identity reads AZURE_* (tenant, certificate file) here
        reason = _first_line(str(err)) or type(err).__name__
        raise AuthError(f"--auth {method} cannot sign in with this configuration: {reason.rstrip('.')}.",
                        hint=NEXT_STEP[method]) from err
    return ExplainedCredential(inner, method)


def _build(identity: Any, method: str, client_id: str | None, environ: Mapping[str, str],
           kwargs: dict[str, Any]) -> Any:
    if method == "auto":
        inner = identity.DefaultAzureCredential(
            managed_identity_client_id=client_id, workload_identity_client_id=client_id,
            exclude_interactive_browser_credential=True, exclude_shared_token_cache_credential=True,
            exclude_visual_studio_code_credential=True, exclude_broker_credential=True, **kwargs)
    elif method == "cli":
        inner = identity.AzureCliCredential()
    elif method == "msi":
        inner = identity.ManagedIdentityCredential(client_id=client_id)
    elif method == "env":
        inner = identity.EnvironmentCredential(**kwargs)
    elif method == "workload":
        inner = identity.WorkloadIdentityCredential(
            tenant_id=environ["AZURE_TENANT_ID"], client_id=client_id or environ["AZURE_CLIENT_ID"],
            token_file_path=environ["AZURE_FEDERATED_TOKEN_FILE"], **kwargs)
    elif method == "device-code":
        inner = identity.DeviceCodeCredential(client_id=client_id, prompt_callback=_device_code_prompt, **kwargs) \
            if client_id else identity.DeviceCodeCredential(prompt_callback=_device_code_prompt, **kwargs)
    else:  # browser
        inner = identity.InteractiveBrowserCredential(client_id=client_id, **kwargs) \
            if client_id else identity.InteractiveBrowserCredential(**kwargs)
    return inner


def _device_code_prompt(verification_uri: str, user_code: str, _expires_on: Any) -> None:
    # stderr: stdout carries the result (JSON must stay parseable).
    print(f"To sign in, open {verification_uri} and enter the code {user_code}", file=sys.stderr, flush=True)
