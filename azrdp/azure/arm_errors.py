"""Turn Azure SDK exceptions into azrdp's typed errors, with one line a user can act on.

One place for this, so every ARM call (reads, Run Command, restart, NSG writes) reports a 403,
a 404 or an unreachable endpoint the same way.
"""

from __future__ import annotations

import re
from typing import Any

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


class Throttled(AzureOperationError):
    """Azure throttled a request for longer than azrdp may wait (exit 5). ``group`` is the
    throttled operation group, ``retry_after`` the seconds Azure asked for."""

    def __init__(self, message: str, *, hint: str | None = None, group: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message, hint=hint)
        self.group = group
        self.retry_after = retry_after


def throttled(err: HttpResponseError, *, doing: str) -> Throttled:
    """One line for a 429 azrdp did not wait out: the operation group and when to retry."""
    from datetime import timedelta

    from azrdp.azure.lro import http_date
    from azrdp.azure.throttle import BUDGET_ENV, DEFAULT_BUDGET, operation_group, retry_after_seconds

    response: Any = err.response
    headers = response.headers if response is not None else {}
    try:
        body = response.json() if response is not None else None
    except Exception:  # noqa: BLE001 - a 429 without a JSON body
        body = None
    group = operation_group(body, headers)
    retry = retry_after_seconds(headers.get("Retry-After"))
    when = ""
    if retry is not None:
        answered = http_date(headers.get("Date"))
        at = f" (at {answered + timedelta(seconds=retry):%H:%M:%S} UTC)" if answered else ""
        when = f": retry after {retry:g} s{at}"
    return Throttled(f"Azure is throttling {group or 'requests'} while {doing}{when}.",
                     hint=f"azrdp waits out throttling only within {BUDGET_ENV} seconds in all (default "
                          f"{DEFAULT_BUDGET:g}); run it again after that time, or spread the work "
                          "(a sweep: fewer VMs at once with `azrdp sweep --max-parallel 4`).",
                    group=group, retry_after=retry)


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
            return throttled(err, doing=doing)
        label = f"{status} {code}".strip() if code else str(status)
        return AzureOperationError(f"Azure failed while {doing} ({label}): {message}")
    if isinstance(err, (ServiceRequestError, ServiceResponseError)):
        return AzureOperationError(f"could not reach Azure Resource Manager while {doing}: "
                                   f"{arm_error_message(err)}",
                                   hint="Check the network path to Azure (proxy, firewall, DNS).")
    return AzureOperationError(f"Azure error while {doing}: {arm_error_message(err)}")
