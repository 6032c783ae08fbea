"""Authentication as the emulator sees it.

* ARM side: every ARM request must carry ``Authorization: Bearer <token>`` (ARM's 401
  ``AuthenticationFailed`` otherwise). Any non-empty token is accepted: a static test credential,
  or one this emulator's managed-identity endpoint issued. Tokens are never logged or stored.
* A managed-identity token endpoint in the shape Azure Automation (and App Service) exposes:
  ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``; ``GET {endpoint}?api-version=2019-08-01&resource=R``
  with header ``X-IDENTITY-HEADER: {secret}``. So azure-identity's real
  ``ManagedIdentityCredential`` (and ``DefaultAzureCredential``) work against it unchanged.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from typing import Any

from azrdp.emulator import exceptions as err

IDENTITY_PATH = "/_emulator/identity/oauth2/token"
IDENTITY_API_VERSION = "2019-08-01"
TOKEN_LIFETIME = 3600


def require_bearer(headers: Mapping[str, str]) -> None:
    value = headers.get("authorization") or ""
    if not value:
        raise err.AuthenticationFailed()
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise err.InvalidAuthenticationToken()


class ManagedIdentity:
    """One emulated managed identity: its header secret and the count of tokens it issued."""

    def __init__(self, client_id: str = "7f4f6c1e-2f36-4b7e-9d0a-5d2b3c9e8a01") -> None:
        self.secret = secrets.token_hex(16)
        self.client_id = client_id
        self.issued: list[str] = []        # the resources tokens were issued for (never the tokens)
        self._lock = threading.Lock()

    def environment(self, base_url: str) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": base_url + IDENTITY_PATH, "IDENTITY_HEADER": self.secret}

    def token(self, query: Mapping[str, str], headers: Mapping[str, str], *, now: float) -> tuple[int, dict[str, Any]]:
        """(status, body) for one token request, as the App Service/Automation endpoint answers."""
        if not secrets.compare_digest(headers.get("x-identity-header", ""), self.secret):
            return 401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER header is missing or wrong."}
        if query.get("api-version") != IDENTITY_API_VERSION:
            return 400, {"statusCode": 400,
                         "message": f"Bad request: api-version must be {IDENTITY_API_VERSION}."}
        resource = query.get("resource")
        if not resource:
            return 400, {"statusCode": 400, "message": "Bad request: the resource parameter is required."}
        if query.get("client_id") and query["client_id"] != self.client_id:
            return 400, {"statusCode": 400,
                         "message": f"Bad request: no managed identity with client_id {query['client_id']}."}
        with self._lock:
            self.issued.append(resource)
        return 200, {"access_token": "emulator-mi-" + secrets.token_urlsafe(24),
                     "expires_on": str(int(now) + TOKEN_LIFETIME), "resource": resource,
                     "token_type": "Bearer", "client_id": self.client_id}
