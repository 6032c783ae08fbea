"""The one factory that owns the credential and the ARM clients.

It is the only place that knows where Azure Resource Manager is: a public or sovereign cloud
(`--cloud public|china|usgov` sets the sign-in authority, the ARM endpoint and the token scope
together, through azure-core's cloud settings), or an explicit endpoint such as the local ARM
emulator (`AZRDP_ARM_ENDPOINT`, `AZRDP_ARM_SCOPE`, optional `AZRDP_ARM_CA_BUNDLE`). Retries, the
LRO polling interval and every wait are configured here, and each wait on Azure is announced.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.errors import UsageError

if TYPE_CHECKING:
    from azrdp.azure.vm import AzureVm, Session
    from azrdp.target import Target


@dataclass(frozen=True)
class Cloud:
    name: str            # what --cloud takes
    title: str
    azure_cloud: str     # the azure.core.AzureClouds member
    authority_host: str  # where Microsoft Entra ID signs you in

    def setting(self) -> Any:
        from azure.core import AzureClouds

        return getattr(AzureClouds, self.azure_cloud)

    def arm(self) -> tuple[str, str]:
        """(ARM endpoint, token scope), as azure-core defines them for this cloud."""
        from azure.mgmt.core.tools import get_arm_endpoints

        endpoints = get_arm_endpoints(self.setting())
        return endpoints["resource_manager"], endpoints["credential_scopes"][0]


CLOUDS: dict[str, Cloud] = {
    "public": Cloud("public", "Azure public cloud", "AZURE_PUBLIC_CLOUD", "login.microsoftonline.com"),
    "china": Cloud("china", "Azure operated by 21Vianet", "AZURE_CHINA_CLOUD", "login.chinacloudapi.cn"),
    "usgov": Cloud("usgov", "Azure US Government", "AZURE_US_GOVERNMENT", "login.microsoftonline.us"),
}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ArmEndpoint:
    """An explicit ARM endpoint instead of a cloud's: an emulator, Azure Stack Hub, a proxy."""

    base_url: str
    scope: str | None = None          # token scope; default `{base_url}/.default`
    verify: bool | str = True         # False, or a CA bundle path for a self-signed emulator

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"ARM endpoint {self.base_url!r} is not an http(s) URL.",
                             hint="Set AZRDP_ARM_ENDPOINT like http://127.0.0.1:8443 or https://host.")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise UsageError(f"refusing plain http to {parts.hostname}: a bearer token would travel unencrypted.",
                             hint="Use https, or an emulator on a loopback address (127.0.0.1, ::1, localhost).")

    @property
    def loopback(self) -> bool:
        return is_loopback(urlsplit(self.base_url).hostname)

    @property
    def token_scope(self) -> str:
        return self.scope or self.base_url.rstrip("/") + "/.default"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ArmEndpoint | None:
        environ = os.environ if environ is None else environ
        base_url = (environ.get("AZRDP_ARM_ENDPOINT") or "").strip()
        if not base_url:
            return None
        bundle = (environ.get("AZRDP_ARM_CA_BUNDLE") or "").strip()
        return cls(base_url, (environ.get("AZRDP_ARM_SCOPE") or "").strip() or None, bundle or True)


@dataclass(frozen=True)
class RetrySettings:
    """How hard to retry ARM (429 with Retry-After, 408, 5xx, connection errors on reads).

    azure-core's defaults leave a user waiting up to 2 minutes per backoff; these cap each
    backoff and the whole request, and every wait is announced."""

    total: int = 4
    backoff_factor: float = 0.8
    backoff_max: float = 30.0
    timeout: float = 300.0          # absolute, across all attempts of one request
    connection_timeout: float = 20.0
    read_timeout: float = 120.0
    throttle_budget: float = 300.0  # seconds one command may wait out throttling, in total

    def client_kwargs(self) -> dict[str, Any]:
        return {"retry_total": self.total, "retry_backoff_factor": self.backoff_factor,
                "retry_backoff_max": self.backoff_max, "timeout": self.timeout,
                "connection_timeout": self.connection_timeout, "read_timeout": self.read_timeout}


def _loopback_http_policy() -> Any:
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class AllowLoopbackHttp(SansIOHTTPPolicy):
        """Lift azure-core's https-only rule for bearer tokens, for loopback hosts only."""

        def on_request(self, request: Any) -> None:
            if is_loopback(urlsplit(request.http_request.url).hostname):
                request.context["enforce_https"] = False

    return AllowLoopbackHttp()


def _announcing_retry_policy(settings: RetrySettings, clock: Clock, notify: Callable[[str], None] | None,
                             budget: Any = None, pacer: Any = None) -> Any:
    from azure.core.pipeline.policies import RetryPolicy

    class AnnouncingRetryPolicy(RetryPolicy):
        """azure-core's RetryPolicy, sleeping on azrdp's Clock and saying why it waits.

        It never resends a POST that acts (Run Command, restart, start, ...): azure-core would resend
        one after a 500/503/504 or any answer carrying Retry-After (azure-sdk-notes.md section 4),
        and a second Run Command or restart is a second action. Only a 429 is resent (ARM did not
        act on a throttled request), and POSTs that only read (``SAFE_POST_ACTIONS``).

        A Retry-After is waited out only while it fits the command's throttling ``budget``
        (never a 24 h sleep because Azure said 86400); past it the answer goes up at once. Before
        each request the ``pacer`` slows down when Azure's rate-limit headers say a bucket is low."""

        def send(self, request: Any) -> Any:
            if pacer is not None:
                pacer.wait()
            response = super().send(request)
            if pacer is not None:
                pacer.observe(getattr(response.http_response, "headers", None))
            return response

        def is_retry(self, settings: dict, response: Any) -> bool:
            request = response.http_request
            status = response.http_response.status_code
            if request.method.upper() == "POST" and not is_safe_post(request.url) and status != 429:
                return False
            if getattr(response.http_response, "azrdp_throttle_spent", False):
                return False   # the shared back-off below already waited all this request may wait
            return super().is_retry(settings, response)

        def increment(self, settings: dict, response: Any = None, error: Any = None) -> bool:
            active = super().increment(settings, response=response, error=error)
            http = getattr(response, "http_response", None)
            if not active or http is None or budget is None:
                return active
            delay = self.get_retry_after(response)
            if delay is not None and not budget.take(max(delay, _min_pause(http.status_code))):
                return False   # longer than azrdp may still wait: the answer ends the request now
            return active

        def sleep(self, settings: dict, transport: Any, response: Any = None) -> None:  # noqa: D401
            delay = self.get_retry_after(response) if response is not None else None
            status = getattr(getattr(response, "http_response", None), "status_code", None)
            if delay is not None:
                delay = max(delay, _min_pause(status))
            else:
                delay = self.get_backoff_time(settings)
            if notify is not None:
                notify(_wait_message(settings, response, delay))
            clock.sleep(delay)

    return AnnouncingRetryPolicy(**{k: v for k, v in settings.client_kwargs().items()
                                    if k.startswith("retry_") or k == "timeout"})


def _min_pause(status: int | None) -> float:
    from azrdp.azure.throttle import MIN_PAUSE

    return MIN_PAUSE if status == 429 else 0.0


SAFE_POST_ACTIONS = frozenset({"effectivenetworksecuritygroups", "effectiveroutetable",
                               "retrievebootdiagnosticsdata", "listkeys"})
"""POST actions that only read: resending them changes nothing."""


def is_safe_post(url: str) -> bool:
    """True for a POST whose action only reads (see SAFE_POST_ACTIONS)."""
    action = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1].lower()
    return action in SAFE_POST_ACTIONS


def _wait_message(settings: dict, response: Any, delay: float) -> str:
    http = getattr(response, "http_response", None)
    status = getattr(http, "status_code", None)
    if status == 429:
        group = _throttled_group(http)
        why = f"Azure is throttling {group} (429)" if group else "Azure is throttling requests (429)"
    elif status:
        why = f"Azure answered {status}"
    else:
        why = "Azure Resource Manager did not answer"
    history = settings.get("history") or [None]
    request = getattr(getattr(history[-1], "http_request", None), "url", None) or ""
    what = "/".join(urlsplit(request).path.rstrip("/").split("/")[-2:]) if request else ""
    attempt = len(settings.get("history", [])) + 1
    wait = f"waiting {delay:g} s before attempt {attempt}" if delay > 0 else f"trying again (attempt {attempt})"
    return f"{why}{f' on {what}' if what else ''}; {wait} ..."


def _throttled_group(http: Any) -> str | None:
    from azrdp.azure.throttle import operation_group

    try:
        body = http.json()
    except Exception:  # noqa: BLE001 - a 429 without a JSON body still names its group in a header
        body = None
    return operation_group(body, getattr(http, "headers", None))


class AzureSession:
    """One credential, one subscription, lazily built Compute and Network clients.

    ``endpoint`` overrides the cloud's ARM endpoint (the emulator); ``transport`` replaces the
    HTTP transport (benchmarks, recording tests); ``on_wait`` hears every retry wait."""

    def __init__(self, credential: Any, subscription_id: str, *, cloud: str = "public",
                 endpoint: ArmEndpoint | None = None, polling_interval: float = 30.0,
                 retry: RetrySettings = RetrySettings(), transport: Any = None,
                 clock: Clock = SYSTEM_CLOCK, on_wait: Callable[[str], None] | None = None,
                 subscription_name: str | None = None):
        if cloud not in CLOUDS:
            raise UsageError(f"unknown --cloud {cloud!r}.", hint=f"Choose one of {', '.join(CLOUDS)}.")
        self.credential = credential
        self.subscription_id = subscription_id
        self.subscription_name = subscription_name
        self.cloud = CLOUDS[cloud]
        self.endpoint = endpoint
        self.polling_interval = polling_interval
        self.retry = retry
        self.transport = transport
        self.clock = clock
        self.on_wait = on_wait
        from azrdp.azure.throttle import RateLimitPacer, ThrottleBudget

        self.throttle = ThrottleBudget(retry.throttle_budget)
        self.pacer = RateLimitPacer(clock=clock, budget=self.throttle, notify=self._notify)

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url if self.endpoint else self.cloud.arm()[0]

    def describe(self) -> str:
        if self.endpoint:
            return f"ARM endpoint {self.endpoint.base_url}"
        return self.cloud.title

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "polling_interval": self.polling_interval,
            "retry_policy": _announcing_retry_policy(self.retry, self.clock, self._notify, self.throttle,
                                                     self.pacer),
            "connection_timeout": self.retry.connection_timeout,
            "read_timeout": self.retry.read_timeout,
        }
        if self.transport is not None:
            kwargs["transport"] = self.transport
        if self.endpoint is None:
            kwargs["cloud_setting"] = self.cloud.setting()
        else:
            kwargs["base_url"] = self.endpoint.base_url
            kwargs["credential_scopes"] = [self.endpoint.token_scope]
            if self.endpoint.verify is not True:
                kwargs["connection_verify"] = self.endpoint.verify
            if urlsplit(self.endpoint.base_url).scheme == "http":
                kwargs["per_call_policies"] = [_loopback_http_policy()]
        return kwargs

    def _notify(self, message: str) -> None:
        if self.on_wait is not None:
            self.on_wait(message)

    def for_subscription(self, subscription_id: str, name: str | None = None, **overrides: Any) -> AzureSession:
        """The same credential, cloud and settings bound to another subscription (fleet jobs);
        ``overrides`` replace constructor arguments, e.g. ``transport``."""
        kwargs: dict[str, Any] = {
            "cloud": self.cloud.name, "endpoint": self.endpoint, "polling_interval": self.polling_interval,
            "retry": self.retry, "transport": self.transport, "clock": self.clock, "on_wait": self.on_wait,
            "subscription_name": name}
        kwargs.update(overrides)
        return AzureSession(self.credential, subscription_id, **kwargs)

    @cached_property
    def compute(self) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        return self._own(ComputeManagementClient(self.credential, self.subscription_id, **self._client_kwargs()))

    @cached_property
    def network(self) -> Any:
        from azure.mgmt.network import NetworkManagementClient

        return self._own(NetworkManagementClient(self.credential, self.subscription_id, **self._client_kwargs()))

    def vm(self, target: Target, *, clock: Clock | None = None) -> AzureVm:
        """The handle that owns every ARM call about ``target`` (azrdp.azure.vm)."""
        from azrdp.azure.vm import AzureVm

        return AzureVm(self, target, clock=clock)

    def _own(self, client: Any) -> Any:
        """Tag a client with this session's throttling budget, so the POSTs azrdp resends itself
        after a 429 (run_lro, run_script) wait out of the same budget (throttle.budget_of)."""
        client.azrdp_throttle = self.throttle
        client.azrdp_notify = self._notify
        return client

    def list_subscriptions(self) -> list[tuple[str, str]]:
        """(id, display name) of every subscription the credential sees (GET /subscriptions)."""
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        from azrdp.azure.arm_errors import translate

        try:
            response = self.compute.send_request(HttpRequest("GET", "/subscriptions?api-version=2022-12-01"))
            response.raise_for_status()
            return [(s["subscriptionId"], s.get("displayName") or "") for s in response.json().get("value", [])]
        except AzureError as err:
            raise translate(err, doing="listing subscriptions") from err


class StaticTokenCredential:
    """The token azrdp sends to a local emulator when no --auth was chosen: a real Azure token
    never travels to a loopback endpoint unless the user asks for it."""

    def __init__(self, token: str = "azrdp-local-emulator"):
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, 2**31 - 1)


def open_session(*, auth: str = "auto", client_id: str | None = None, cloud: str = "public",
                 subscription: str | None = None, target_subscription: str | None = None,
                 endpoint: ArmEndpoint | None = None, credential: Any = None,
                 environ: Mapping[str, str] | None = None, auth_explicit: bool | None = None,
                 **session_kwargs: Any) -> AzureSession:
    """Build the session the command line asks for.

    ``target_subscription`` is the subscription inside a VM resource ID; it wins over the other
    sources (and must not contradict --subscription). ``credential`` injects a ready credential
    (library use, tests); otherwise `--auth` decides. ``endpoint`` defaults to AZRDP_ARM_ENDPOINT.
    """
    from azrdp.azure.subscription import is_subscription_id, resolve_subscription

    environ = os.environ if environ is None else environ
    lookup = open_tenant_session(auth=auth, client_id=client_id, cloud=cloud, endpoint=endpoint, credential=credential,
                                 environ=environ, auth_explicit=auth_explicit, **session_kwargs)
    if target_subscription:
        if subscription and is_subscription_id(subscription) and subscription.lower() != target_subscription.lower():
            raise UsageError(f"--subscription {subscription} contradicts the subscription {target_subscription} "
                             "inside the resource ID.", hint="Drop --subscription or fix the ID.")
        chosen = resolve_subscription(target_subscription, environ=environ)
    else:
        # Only a name the Azure CLI profile does not know costs a request (GET /subscriptions).
        chosen = resolve_subscription(subscription, environ=environ, list_subscriptions=lookup.list_subscriptions)
    return lookup.for_subscription(chosen.id, chosen.name)


def open_tenant_session(*, auth: str = "auto", client_id: str | None = None, cloud: str = "public",
                        endpoint: ArmEndpoint | None = None, credential: Any = None,
                        environ: Mapping[str, str] | None = None, auth_explicit: bool | None = None,
                        **session_kwargs: Any) -> AzureSession:
    """A session with its credential but no subscription yet: fleet jobs list the subscriptions
    it sees (``list_subscriptions()``) and bind each with ``for_subscription(id)``. Signs in the
    way `--auth` asks (a static token for a loopback emulator when no --auth was chosen)."""
    from azrdp.azure.credentials import make_credential

    environ = os.environ if environ is None else environ
    if cloud not in CLOUDS:
        raise UsageError(f"unknown --cloud {cloud!r}.", hint=f"Choose one of {', '.join(CLOUDS)}.")
    endpoint = endpoint or ArmEndpoint.from_environ(environ)
    if credential is None:
        explicit = auth_explicit if auth_explicit is not None else auth != "auto"
        if endpoint is not None and endpoint.loopback and not explicit and endpoint.scope is None:
            credential = StaticTokenCredential()
        else:
            credential = make_credential(auth, client_id=client_id, environ=environ,
                                         authority=None if endpoint else CLOUDS[cloud].authority_host)
    if "polling_interval" not in session_kwargs and environ.get("AZRDP_POLLING_INTERVAL"):
        session_kwargs["polling_interval"] = polling_interval_from(environ["AZRDP_POLLING_INTERVAL"])
    if "retry" not in session_kwargs and environ.get("AZRDP_THROTTLE_BUDGET"):
        from dataclasses import replace

        from azrdp.azure.throttle import budget_from

        session_kwargs["retry"] = replace(RetrySettings(), throttle_budget=budget_from(environ["AZRDP_THROTTLE_BUDGET"]))
    return AzureSession(credential, "", cloud=cloud, endpoint=endpoint, **session_kwargs)


def polling_interval_from(text: str) -> float:
    """AZRDP_POLLING_INTERVAL: seconds between polls of an ARM operation (an emulator running
    faster than Azure wants short ones; Azure itself is fine with the default)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60:
        raise UsageError(f"AZRDP_POLLING_INTERVAL={text!r} is not a number of seconds from 0 to 60.",
                         hint="Unset it, or set e.g. AZRDP_POLLING_INTERVAL=0.5.")
    return value


def caller_identity(session: Session | None = None) -> str:
    """Who is making the change: the signed-in identity's name from its token when it says
    (upn, preferred_username, unique_name, app id), else the OS user. The token is read only for
    those claims and never logged or stored."""
    credential = getattr(session, "credential", None)
    endpoint = getattr(session, "endpoint", None)   # an AzureSession's; a Session need not have one
    cloud: Any = getattr(session, "cloud", None)
    scope = None
    try:
        scope = endpoint.token_scope if endpoint is not None else cloud.arm()[1]
    except Exception:  # noqa: BLE001 - no session, or no cloud: fall back to the OS user
        scope = None
    if credential is not None and scope:
        try:
            claims = _jwt_claims(credential.get_token(scope).token)
        except Exception:  # noqa: BLE001 - identity names are a nicety, never a failure
            claims = {}
        for key in ("upn", "preferred_username", "unique_name", "email"):
            if claims.get(key):
                return str(claims[key])
        if claims.get("appid"):
            return f"app {claims['appid']}"
    import getpass

    try:
        return f"os user {getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name (containers)
        return "unknown user"


def _jwt_claims(token: str) -> dict[str, Any]:
    import base64
    import json

    parts = token.split(".")
    if len(parts) != 3:
        return {}
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(body.encode()))
