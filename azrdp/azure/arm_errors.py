"""Turn Azure SDK exceptions into azrdp's typed errors, with one line a user can act on.

One place for this, so every ARM call (reads, Run Command, restart, NSG writes) reports a 403,
a 404 or an unreachable endpoint the same way.
"""

from __future__ import annotations

import re

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from azrdp.errors import AuthError, AzrdpError, AzureOperationError, NotFoundError

_ACTION_RE = re.compile(r"perform action '([^']+)' over scope '([^']+)'", re.IGNORECASE)
_NOT_FOUND_CODES = {"resourcenotfound", "resourcegroupnotfound", "notfound", "subscriptionnotfound",
                    "parentresourcenotfound", "invalidsubscriptionid"}

ROLE_HINT = ("Ask an owner of the subscription to assign a role with that action "
             "(scripts/azrdp-role.json lists exactly what azrdp needs).")


def arm_error_code(err: HttpResponseError) -> str:
    """The ARM error code (e.g. 'AuthorizationFailed'), or '' when the body had none."""
    code = getattr(getattr(err, "error", None), "code", None)
    return str(code or "")


def arm_error_message(err: AzureError) -> str:
    """The service's own message, first line only, without the SDK's '(Code) ' prefix."""
    error = getattr(err, "error", None)
    message = getattr(error, "message", None) or getattr(err, "message", None) or str(err)
    message = str(message).strip().splitlines()[0] if str(message).strip() else type(err).__name__
    return re.sub(r"^\([A-Za-z0-9_.]+\)\s*", "", message)


def translate(err: AzureError, *, doing: str, subscription: str | None = None) -> AzrdpError:
    """Map an SDK exception raised while ``doing`` (e.g. "reading VM rg/vm") to a typed error."""
    if isinstance(err, ClientAuthenticationError) and not isinstance(err, HttpResponseError):
        return AuthError(f"could not sign in to Azure while {doing}: {arm_error_message(err)}")
    if isinstance(err, HttpResponseError):
        status = err.status_code or 0
        code = arm_error_code(err)
        message = arm_error_message(err)
        where = f" in subscription {subscription}" if subscription else ""
        if status == 401 or isinstance(err, ClientAuthenticationError):
            return AuthError(f"Azure rejected the sign-in while {doing}: {message}",
                             hint="Sign in again (e.g. `az login`) or check the credential azrdp uses.")
        if status == 403 or code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
            found = _ACTION_RE.search(message)
            if found:
                action, scope = found.groups()
                return AuthError(f"permission denied while {doing}: the signed-in identity lacks "
                                 f"'{action}' on {scope}.", hint=ROLE_HINT)
            return AuthError(f"permission denied while {doing}: {message}", hint=ROLE_HINT)
        if status == 404 or code.lower() in _NOT_FOUND_CODES:
            return NotFoundError(f"not found while {doing}{where}: {message}")
        if status == 429:
            retry = err.response.headers.get("Retry-After") if err.response is not None else None
            after = f" (Azure asks to retry after {retry} s)" if retry else ""
            return AzureOperationError(f"Azure is throttling requests while {doing}{after}: {message}",
                                       hint="Wait and run azrdp again (a sweep sends fewer requests at once with "
                                            "`azrdp sweep --max-parallel 4`).")
        label = f"{status} {code}".strip() if code else str(status)
        return AzureOperationError(f"Azure failed while {doing} ({label}): {message}")
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        return AzureOperationError(f"could not reach Azure Resource Manager while {doing}: "
                                   f"{arm_error_message(err)}",
                                   hint="Check the network path to Azure (proxy, firewall, DNS).")
    return AzureOperationError(f"Azure error while {doing}: {arm_error_message(err)}")
