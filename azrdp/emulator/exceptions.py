"""ARM errors as data: each class carries the HTTP status, the real ARM error code and Microsoft's
message format, and renders ARM's envelope ``{"error": {"code", "message"}}``.

Raised by models.py and responses.py; rendered in one place (server.py).
"""

from __future__ import annotations

import json
from typing import Any

GATEWAY = {"x-ms-failure-cause": "gateway"}
"""ARM's gateway answers its own 404s (the resource provider never saw the request) with this
header (real-azure-behaviour.md, "Smaller differences")."""


class ArmError(Exception):
    status = 400
    code = "BadRequest"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = dict(headers or {})
        self.details = details

    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    def body(self) -> dict[str, Any]:
        return {"error": self.error()}


class SubscriptionNotFound(ArmError):
    status, code = 404, "SubscriptionNotFound"

    def __init__(self, subscription: str):
        super().__init__(f"The subscription '{subscription}' could not be found.", headers=GATEWAY)


class ResourceGroupNotFound(ArmError):
    status, code = 404, "ResourceGroupNotFound"

    def __init__(self, resource_group: str):
        super().__init__(f"Resource group '{resource_group}' could not be found.", headers=GATEWAY)


class ComputeNotFound(ArmError):
    """Compute's own 404 for a VM it no longer finds (one being deleted): real-azure-behaviour.md,
    "Smaller differences"."""

    status, code = 404, "NotFound"

    def __init__(self) -> None:
        super().__init__("The entity was not found in this Azure location.")


class ResourceNotFound(ArmError):
    """A top-level resource (``Microsoft.Compute/virtualMachines/vm1``) that does not exist."""

    status, code = 404, "ResourceNotFound"

    def __init__(self, resource_type: str, name: str, resource_group: str):
        super().__init__(f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' "
                         "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", headers=GATEWAY)


class ChildResourceNotFound(ArmError):
    """A nested network resource (subnet, security rule): the network RP's own 404."""

    status, code = 404, "NotFound"

    def __init__(self, resource_id: str):
        super().__init__(f"Resource {resource_id} not found.")


class OperationNotFound(ArmError):
    status, code = 404, "NotFound"

    def __init__(self, operation_id: str):
        super().__init__(f"The operation '{operation_id}' could not be found.")


class RunCommandNotFound(ArmError):
    """An unknown ``commandId`` (documented: "The entity was not found in this Azure location")."""

    status, code = 404, "NotFound"

    def __init__(self) -> None:
        super().__init__("The entity was not found in this Azure location.")


class RunCommandConflict(ArmError):
    status, code = 409, "Conflict"

    def __init__(self) -> None:
        super().__init__("Run command extension execution is in progress. "
                         "Please wait for completion before invoking a run command.")


class OperationNotAllowed(ArmError):
    status, code = 409, "OperationNotAllowed"


class VmNotRunning(OperationNotAllowed):
    def __init__(self) -> None:
        super().__init__("The operation requires the VM to be running (or set to run).")


class TooManyRequests(ArmError):
    """Compute's throttling answer as real Azure sends it (real-azure-behaviour.md, "Throttling";
    Microsoft's "Troubleshooting API throttling errors" article): OperationNotAllowed with a
    TooManyRequests detail whose ``target`` is the window group (``HighCostGet3Min``) and whose
    message keys are lower-case; Retry-After 120 s usually, 1200 s at times."""

    status, code = 429, "OperationNotAllowed"

    def __init__(self, retry_after: str, operation_group: str, started: str, ends: str,
                 allowed: int = 300, measured: int = 1238):
        detail = json.dumps({"operationgroup": operation_group, "starttime": started, "endtime": ends,
                             "allowedrequestcount": allowed, "measuredrequestcount": measured},
                            separators=(",", ":"))
        super().__init__(
            "The server rejected the request because too many requests have been received for this subscription.",
            headers={"Retry-After": str(retry_after),
                     "x-ms-ratelimit-remaining-resource": f"Microsoft.Compute/{operation_group};0"},
            details=[{"code": "TooManyRequests", "target": operation_group, "message": detail}])


class InternalServerError(ArmError):
    status, code = 500, "InternalServerError"

    def __init__(self) -> None:
        super().__init__("Encountered internal server error. Please try again later.")


class ServiceUnavailable(ArmError):
    status, code = 503, "ServiceUnavailable"

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("The service is currently unavailable. Please try again later.",
                         headers={"Retry-After": f"{retry_after:g}"} if retry_after else None)


class InternalExecutionError(ArmError):
    """How Compute reports a failed platform operation inside an async-operation status."""

    status, code = 500, "InternalExecutionError"

    def __init__(self) -> None:
        super().__init__("An internal execution error occurred. Please retry later.")


class OperationPreempted(ArmError):
    status, code = 409, "OperationPreempted"

    def __init__(self) -> None:
        super().__init__("Operation execution has been preempted by a more recent operation.")


class VmAgentNotResponding(ArmError):
    status, code = 409, "VMAgentStatusCommunicationError"

    def __init__(self, vm: str) -> None:
        super().__init__(f"VM '{vm}' has not reported status for VM agent or extensions. Verify that the "
                         "OS is up and healthy, the VM has a running VM agent, and that it can establish "
                         "outbound connections to Azure storage.")


class MissingApiVersionParameter(ArmError):
    status, code = 400, "MissingApiVersionParameter"

    def __init__(self) -> None:
        super().__init__("The api-version query parameter (?api-version=) is required for all requests.")


class InvalidApiVersionParameter(ArmError):
    status, code = 400, "InvalidApiVersionParameter"

    def __init__(self, given: str, supported: list[str]):
        super().__init__(f"The api-version '{given}' is invalid. The supported versions are "
                         f"'{','.join(supported)}'.")


class AuthenticationFailed(ArmError):
    status, code = 401, "AuthenticationFailed"

    def __init__(self) -> None:
        super().__init__("Authentication failed. The 'Authorization' header is missing.",
                         headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                                                      'error="invalid_token", error_description="The authentication failed '
                                                      'because of missing \'Authorization\' header."'})


class InvalidAuthenticationToken(ArmError):
    status, code = 401, "InvalidAuthenticationToken"

    def __init__(self) -> None:
        super().__init__("The access token is invalid.")


class InvalidRequestContent(ArmError):
    status, code = 400, "InvalidRequestContent"


class SecurityRuleInvalid(ArmError):
    """The network RP's validation errors for a security rule (code names the problem)."""

    status = 400


class RouteNotImplemented(ArmError):
    """Not an ARM answer: the emulator names what it does not implement instead of guessing."""

    status, code = 501, "NotImplementedInEmulator"

    def __init__(self, method: str, path: str):
        super().__init__(f"The azrdp ARM emulator does not implement {method} {path}. "
                         "docs/emulator.md lists the operations it serves.")
