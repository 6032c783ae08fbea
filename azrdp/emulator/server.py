"""The emulator as a running thing: a threaded HTTP server on 127.0.0.1 (port 0 by default) that
serves the ARM routes, the control endpoint ``/_emulator/...`` and the managed-identity token
endpoint; one real RDP listener per VM; and :class:`Emulator`, the Python API tests use::

    with Emulator.start(scenario="0x904", speed=1000) as emu:
        compute = ComputeManagementClient(cred, emu.subscription_id, base_url=emu.base_url, ...)
        emu.inject("throttle", operation="VirtualMachines_Get", count=2)
        ...
        assert emu.count("VirtualMachines_RunCommand") == 2

Control endpoint (no auth; loopback only):

* ``GET  /_emulator/state``        everything: VMs, guests, listeners, operations, faults, time.
* ``GET  /_emulator/calls``        the ARM request log (operationId, method, path, status).
* ``POST /_emulator/reset``        back to the loaded scenario (or ``{"scenario", "vms", "fleet"}``).
* ``POST /_emulator/scenario``     load ``{"scenario": "0x904", "vms": 1}`` or ``{"fleet": {...}}``
  (with ``"layout": {"subscriptions": 10, "resource_groups": 4}`` to spread it).
* ``POST /_emulator/faults``       inject ``{"kind": "throttle", "operation": ..., "count": ...}``;
  ``GET`` lists them, ``DELETE`` clears them.
* ``GET  /_emulator/identity/oauth2/token``  the managed-identity endpoint (see auth.py).
* ``GET  /_emulator/blobs/...``    boot diagnostics: the screenshot (PNG) and the serial log.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from azrdp.clock import SYSTEM_CLOCK, Clock
from azrdp.emulator import auth, resource_graph, scenarios
from azrdp.emulator import exceptions as err
from azrdp.emulator import timescale as ts
from azrdp.emulator.faults import Fault
from azrdp.emulator.guest import WindowsGuest
from azrdp.emulator.models import ArmBackend, VirtualMachine
from azrdp.emulator.profiles import GuestProfile
from azrdp.emulator.rdp_listener import AddressPool, ListenerConfig, ListenerHub, RdpListener, TlsMaterial
from azrdp.emulator.responses import Reply, Request
from azrdp.emulator.throttling import REMAINING_READS, RateLimitHeaders, ReadLimit, ReadThrottle, compute_group
from azrdp.emulator.urls import resolve

CONTROL = "/_emulator"


@dataclass(frozen=True)
class Call:
    """One ARM request as the emulator answered it (never its token)."""

    method: str
    path: str
    query: dict[str, str]
    operation: str | None
    status: int | None         # None: the connection was reset
    simulated_time: float
    body: Any = None
    read: bool = False         # a read in the read accounting: an ARM GET, or a Resource Graph query page

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LISTENER_HUBS = 4
"""Threads serving the RDP listeners (each a selector loop over its share of them)."""


class Emulator:
    """One emulator: ARM over HTTP, simulated guests, RDP listeners. Use :meth:`start`."""

    def __init__(self, *, speed: float = 1.0, seed: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 clock: Clock = SYSTEM_CLOCK, read_limit: ReadLimit | None = None):
        if not speed > 0:
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.speed = speed
        self.read_limit = read_limit
        self.read_throttle: ReadThrottle | None = None
        self.seed = seed
        self.clock = clock
        self.identity = auth.ManagedIdentity()
        self._rng = random.Random(seed)
        self._tls = TlsMaterial()
        # A few accept loops for every VM's RDP port, VMs dealt round-robin: OpenSSL releases the GIL
        # in a handshake, so the TLS of many VMs at once is not held to one core
        self._hubs = [ListenerHub() for _ in range(LISTENER_HUBS)]
        self._pool = AddressPool()  # never from the seed: emulators started with one seed must not collide
        self._listeners: dict[str, RdpListener] = {}
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._swap = threading.RLock()
        self._loaded: dict[str, Any] = {"scenario": "healthy", "vms": 1, "fleet": None}
        self.backend = self._new_backend()
        self._httpd = _Server((host, port), _Handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="emulator-http", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, scenario: str = "healthy", *, vms: int = 1, fleet: dict[str, int] | None = None,
              speed: float = 1.0, seed: int | None = None, host: str = "127.0.0.1", port: int = 0,
              clock: Clock = SYSTEM_CLOCK, read_limit: ReadLimit | None = None,
              layout: scenarios.FleetLayout | None = None, profile: GuestProfile | None = None) -> Emulator:
        """Build the scenario (or ``fleet``: scenario -> count, spread over ``layout``'s
        subscriptions and resource groups) on guests of ``profile`` (Windows version, display
        language, role; default an English Server 2022) and start serving. ``clock`` drives
        simulated time: a :class:`~azrdp.clock.ManualClock` lets a test move it with :meth:`advance`.
        ``read_limit`` switches on ARM's subscription read throttling (see throttling.py)."""
        emulator = cls(speed=speed, seed=seed, host=host, port=port, clock=clock, read_limit=read_limit)
        try:
            emulator.load(scenario, vms=vms, fleet=fleet, layout=layout, profile=profile)
        except BaseException:
            emulator._httpd.server_close()
            emulator._teardown()
            for hub in emulator._hubs:
                hub.close()
            emulator._tls.close()
            raise
        emulator._thread.start()
        return emulator

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._teardown()
        for hub in self._hubs:
            hub.close()
        self._tls.close()

    def _new_backend(self) -> ArmBackend:
        backend = ArmBackend(ts.TimeScale(self.speed, seed=self._rng.randrange(2**32), clock=self.clock),
                             on_change=self._reconcile)
        backend.address_pool = self._pool     # VMs created over ARM (a rescue VM) get their own address
        backend.graph = resource_graph.ResourceGraphIndex(backend.timescale.now, speed=self.speed)
        if self.read_limit is not None:  # a fresh bucket on the fresh simulated clock
            self.read_throttle = ReadThrottle(self.read_limit, backend.timescale.now, self.speed)
        self.rate_limits = RateLimitHeaders(backend.timescale.now)
        return backend

    def _teardown(self) -> None:
        self.backend.scheduler.stop()
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()

    def load(self, scenario: str = "healthy", *, vms: int = 1, fleet: dict[str, int] | None = None,
             layout: scenarios.FleetLayout | None = None, profile: GuestProfile | None = None) -> None:
        """Replace all state with a fresh scenario (or fleet); faults and the call log are cleared."""
        if fleet:
            for name in fleet:
                scenarios.scenario(name)
        else:
            scenarios.scenario(scenario)
        if vms < 1:
            raise ValueError("vms must be at least 1")
        with self._swap:
            self._teardown()
            self.backend = self._new_backend()
            with self.backend.lock:
                if fleet:
                    scenarios.build_fleet(self.backend, self._pool, dict(fleet),
                                          layout=layout or scenarios.FleetLayout(), profile=profile)
                else:
                    scenarios.build(self.backend, self._pool, scenario, vms=vms, profile=profile)
                self.backend.every_vm_changed()
                resource_graph.observe(self.backend, self.backend.graph, at_once=True)   # indexed long ago
                self.backend.graph.baselined = True
            self._loaded = {"scenario": None if fleet else scenario, "vms": vms, "fleet": dict(fleet) if fleet else None,
                            "layout": (layout or scenarios.FleetLayout()).to_dict() if fleet else None,
                            "profile": profile.to_dict() if profile is not None else None}
            with self._calls_lock:
                self._calls.clear()

    def reset(self) -> None:
        """Back to the scenario loaded last, as it was built."""
        loaded = self._loaded
        layout = scenarios.FleetLayout(**loaded["layout"]) if loaded.get("layout") else None
        profile = GuestProfile(**loaded["profile"]) if loaded.get("profile") else None
        self.load(loaded["scenario"] or "healthy", vms=loaded["vms"], fleet=loaded["fleet"], layout=layout,
                  profile=profile)

    # -- addresses --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def state(self) -> ArmBackend:
        """The live backend (models). Change it inside ``with emu.state.lock:`` and call
        :meth:`refresh` so listeners follow."""
        return self.backend

    @property
    def subscription_id(self) -> str:
        return scenarios.SUBSCRIPTION_ID

    @property
    def resource_group(self) -> str:
        vms = self.backend.all_vms()
        return vms[0].resource_group if vms else scenarios.RESOURCE_GROUP

    @property
    def vm_names(self) -> list[str]:
        return [vm.name for vm in self.backend.all_vms()]

    def vm(self, name: str | None = None) -> VirtualMachine:
        """A VM by name (the first VM when no name is given)."""
        for vm in self.backend.all_vms():
            if name is None or vm.name.lower() == name.lower():
                return vm
        raise KeyError(f"no VM {name!r} in the emulator (VMs: {', '.join(self.vm_names)})")

    def guest(self, name: str | None = None) -> WindowsGuest:
        return self.vm(name).guest

    def rdp_endpoint(self, name: str | None = None) -> tuple[str, int]:
        vm = self.vm(name)
        return vm.rdp_address, vm.guest.port

    def environment(self) -> dict[str, str]:
        """What to export so azrdp (or a runbook) talks to this emulator: its endpoint and
        subscription, the managed-identity endpoint, and a polling interval scaled with the time
        scale like every other latency (Azure's operations take ``speed`` times longer)."""
        from azrdp.azure.lro import POLL_CAP

        return {"AZRDP_ARM_ENDPOINT": self.base_url, "AZURE_SUBSCRIPTION_ID": self.subscription_id,
                "AZRDP_POLLING_INTERVAL": f"{POLL_CAP / self.speed:g}",
                **self.identity.environment(self.base_url)}

    # -- control ----------------------------------------------------------------------------------
    def inject(self, kind: str, **options: Any) -> Fault:
        """Switch on a fault (see faults.py); returns it (``.fired`` counts its firings)."""
        return self.backend.faults.add(Fault(kind, **options))

    def clear_faults(self) -> None:
        self.backend.faults.clear()

    def update(self, change: Callable[[ArmBackend], Any], *, indexed: bool = True) -> Any:
        """Run ``change(backend)`` under the state lock, then bring every listener up to date.
        ``indexed``: Resource Graph shows the change at once (the world as a test sets it up);
        False: it shows ``backend.graph.lag`` seconds later, like a change made over ARM."""
        with self.backend.lock:
            result = change(self.backend)
            resource_graph.observe(self.backend, self.backend.graph, at_once=indexed)
        self.refresh()
        return result

    def refresh(self) -> None:
        with self.backend.lock:
            for vm in self.backend.all_vms():
                self._reconcile(vm)

    def advance(self, simulated_seconds: float) -> None:
        """Move a ManualClock-driven emulator forward and fire every transition now due."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise TypeError("advance() needs an emulator started with clock=ManualClock()")
        advance(self.backend.timescale.real(simulated_seconds))
        self.backend.scheduler.run_due()

    @property
    def calls(self) -> list[Call]:
        with self._calls_lock:
            return list(self._calls)

    def count(self, operation: str, *, status: int | None = None) -> int:
        """How many requests of an operationId were made (optionally: answered with ``status``)."""
        return sum(1 for c in self.calls if c.operation == operation and (status is None or c.status == status))

    def simulated_seconds(self) -> float:
        return self.backend.timescale.now()

    def snapshot(self) -> dict[str, Any]:
        backend = self.backend
        with backend.lock:
            return {
                "base_url": self.base_url, "speed": self.speed, "simulated_seconds": round(backend.timescale.now(), 3),
                "scenario": self._loaded, "client_ip": backend.client_ip,
                "subscriptions": [{"id": s.id, "name": s.display_name} for s in backend.subscriptions.values()],
                "vms": [self._vm_snapshot(vm) for vm in backend.all_vms()],
                "faults": backend.faults.to_list(),
                "operations": [{"id": op.id, "kind": op.kind, "status": op.status, "resource": op.resource_id}
                               for op in backend.operations.values()],
                "run_commands": list(backend.run_commands),
                "transition_errors": list(backend.transition_errors),
            }

    def _vm_snapshot(self, vm: VirtualMachine) -> dict[str, Any]:
        guest = vm.guest
        cert = guest.serving_certificate()
        listener = self._listeners.get(vm.id.lower())
        return {
            "name": vm.name, "resource_group": vm.resource_group, "id": vm.id, "power": vm.power,
            "booting": vm.booting, "agent_ready": vm.power == "running" and not vm.booting and guest.agent_ready,
            "rdp": {"address": vm.rdp_address, "port": guest.port, "mode": listener.mode if listener else "closed",
                    "error": listener.error if listener else None},
            "running_command": vm.running_command.id if vm.running_command else None,
            "guest": {
                "up": guest.up,
                "services": {name: s.state for name, s in guest.services.items()},
                "registry": dict(guest.registry),
                "certificate": {"thumbprint": cert.thumbprint, "not_after": cert.not_after.isoformat(),
                                "expired": cert.expired(guest.real_now())} if cert else None,
                "tls_usable": guest.tls_usable(),
                "machinekeys": {"sddl": guest.machinekeys.sddl, "default": guest.machinekeys.default,
                                "rdp_key": asdict(guest.machinekeys.rdp_key) if guest.machinekeys.rdp_key else None,
                                "backups": list(guest.machinekeys.backups)},
                "firewall_allows_rdp": guest.firewall_allows_rdp(),
                "sessions": [asdict(s) for s in guest.sessions],
                "events": guest.event_counts(24),
            },
        }

    # -- listeners ------------------------------------------------------------------------------------
    def _reconcile(self, vm: VirtualMachine) -> None:
        """Make the VM's RDP listener match its state (called under the backend lock)."""
        key = vm.id.lower()
        listener = self._listeners.get(key)
        if listener is None:
            listener = RdpListener(vm.rdp_address, self._listener_config(vm), self._tls, self._tls_failed(vm),
                                   self._hubs[len(self._listeners) % len(self._hubs)])
            self._listeners[key] = listener
        listener.apply(self.backend.rdp_mode(vm), vm.guest.port)

    def _listener_config(self, vm: VirtualMachine) -> Callable[[], ListenerConfig]:
        backend = self.backend

        def config() -> ListenerConfig:
            with backend.lock:
                guest = vm.guest
                return ListenerConfig(security_layer=int(guest.effective("SecurityLayer") or 0),
                                      nla_required=guest.effective("UserAuthentication") == 1,
                                      certificate=guest.serving_certificate(), tls_usable=guest.tls_usable())
        return config

    def _tls_failed(self, vm: VirtualMachine) -> Callable[[], None]:
        backend = self.backend

        def failed() -> None:
            with backend.lock:
                vm.guest.log("schannel_36870")
        return failed

    def record(self, call: Call) -> None:
        with self._calls_lock:
            self._calls.append(call)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, emulator: Emulator):
        self.emulator = emulator
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (Ctrl-C, a dropped keep-alive connection) is normal, as it is
        for ARM: no traceback on the console for it. Anything else is still printed."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _ConnectionReset(Exception):
    """A fault asked to reset the client's connection instead of answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        """Every answer's ``Date``, on the simulated wall clock ARM's timestamps use."""
        from email.utils import format_datetime

        if timestamp is not None:
            return super().date_time_string(timestamp)
        return format_datetime(self.server.emulator.backend.timescale.wall().astimezone(timezone.utc), usegmt=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    # -- plumbing ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if url.path == CONTROL or url.path.startswith(CONTROL + "/"):
            self._control(url.path[len(CONTROL):] or "/", query, raw, headers)
        else:
            self._arm(url.path, query, raw, headers)

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.emulator.base_url

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset_connection(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        raise _ConnectionReset()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _ConnectionReset:
            self.close_connection = True

    # -- ARM --------------------------------------------------------------------------------------
    def _arm(self, path: str, query: dict[str, str], raw: bytes, headers: dict[str, str]) -> None:
        emulator = self.server.emulator
        backend = emulator.backend
        backend.scheduler.run_due()
        operation: str | None = None
        found = None
        reply_headers = {"x-ms-request-id": str(uuid.uuid4()),
                         "x-ms-correlation-request-id": headers.get("x-ms-client-request-id", str(uuid.uuid4()))}
        try:
            auth.require_bearer(headers)
            found = resolve(self.command, path, query)
            if found is None:
                raise err.RouteNotImplemented(self.command, path)
            route, params = found
            operation = route.operation_id
            self._check_api_version(query, route.api_version)
            throttle = emulator.read_throttle
            if throttle is not None and self.command == "GET" and "subscription" in params:
                reply_headers.update(throttle.take(params["subscription"]))
            if operation == "Resources":   # Resource Graph's own per-user quota, not ARM's bucket
                allowed, quota = backend.graph.take_quota()
                reply_headers.update(quota)
                if not allowed:
                    raise resource_graph.RateLimited(backend.iso(), {})
            self._http_faults(backend, operation, params, path, query, raw)
            body = self._json(raw)
            backend.timescale.sleep(backend.timescale.draw(ts.ARM_LATENCY))
            request = Request(self.command, path, query, params, body, self._base_url(), headers)
            with backend.lock:
                reply = route.handler(backend, request)
            self._http_faults(backend, operation, params, path, query, raw, accepted=True)
        except err.ArmError as error:
            reply = Reply(error.status, error.body(), error.headers)
        subscription = found[1].get("subscription") if found else None
        if operation is not None and subscription is not None:
            reply_headers.update(emulator.rate_limits.headers(subscription, self.command, operation,
                                                              reads_header=REMAINING_READS not in reply_headers))
        # Logged before answering, so a client that got its answer always finds it in the log.
        read = operation == "Resources" or (self.command == "GET" and path.lower().startswith("/subscriptions/"))
        emulator.record(Call(self.command, path, query, operation, reply.status, backend.timescale.now(),
                             self._json_or_none(raw), read=read))
        self._send(reply.status, reply.body, {**reply_headers, **reply.headers})

    @staticmethod
    def _check_api_version(query: dict[str, str], current: str) -> None:
        """Any supported api-version is accepted, as Azure does (not only the SDK's)."""
        from azrdp.emulator.models import SUPPORTED_API_VERSIONS

        given = query.get("api-version")
        if not given:
            raise err.MissingApiVersionParameter()
        supported = SUPPORTED_API_VERSIONS.get(current, (current,))
        if given not in supported:
            raise err.InvalidApiVersionParameter(given, list(supported))

    def _http_faults(self, backend: ArmBackend, operation: str, params: dict[str, str], path: str,
                     query: dict[str, str], raw: bytes, *, accepted: bool = False) -> None:
        """HTTP faults before the handler ran, or (``accepted``) after it acted: then only the
        answer is lost, the ambiguous failure a client must find out about instead of resending."""
        method, vm = self.command, params.get("vm")
        if backend.faults.take("connection_reset", operation=operation, method=method, vm=vm, accepted=accepted):
            self.server.emulator.record(Call(method, path, query, operation, None, backend.timescale.now(),
                                             self._json_or_none(raw)))
            self._reset_connection()
        fault = None if accepted else backend.faults.take("throttle", operation=operation, method=method, vm=vm)
        if fault:
            now = backend.timescale.now()
            group = fault.group or f"{compute_group(operation) or ('LowCostGet' if method == 'GET' else 'UpdateVM')}3Min"
            retry = fault.retry_after if fault.retry_after is not None else 120
            raise err.TooManyRequests(f"{retry:g}", group, backend.iso(now), backend.iso(now + 180))
        fault = None if accepted else backend.faults.take("refuse", operation=operation, method=method, vm=vm)
        if fault:
            raise err.ArmError(f"The request was refused ({fault.code}): an injected fault.", code=fault.code,
                               status=fault.status)
        fault = backend.faults.take("server_error", operation=operation, method=method, vm=vm, accepted=accepted)
        if fault:
            raise err.InternalServerError() if fault.status == 500 else err.ServiceUnavailable(fault.retry_after)

    @staticmethod
    def _json(raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise err.InvalidRequestContent("The request content was invalid and could not be deserialized.") from None

    @staticmethod
    def _json_or_none(raw: bytes) -> Any:
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    # -- control ----------------------------------------------------------------------------------
    def _control(self, path: str, query: dict[str, str], raw: bytes, headers: dict[str, str]) -> None:
        emulator = self.server.emulator
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(400, {"error": "the body is not JSON"})
        try:
            if path == auth.IDENTITY_PATH[len(CONTROL):] and self.command == "GET":
                status, token = emulator.identity.token(query, headers, now=time.time())
                return self._send(status, token)
            if path.startswith("/blobs/") and self.command == "GET":
                return self._blob(path[len("/blobs/"):])
            if path == "/state" and self.command == "GET":
                return self._send(200, emulator.snapshot())
            if path == "/calls" and self.command == "GET":
                return self._send(200, [c.to_dict() for c in emulator.calls])
            if path in ("/reset", "/scenario") and self.command == "POST":
                if body.get("scenario") or body.get("fleet"):
                    layout = scenarios.FleetLayout(**body["layout"]) if body.get("layout") else None
                    emulator.load(body.get("scenario") or "healthy", vms=int(body.get("vms", 1)), fleet=body.get("fleet"),
                                  layout=layout)
                elif path == "/reset":
                    emulator.reset()
                else:
                    return self._send(400, {"error": "give a scenario or a fleet"})
                return self._send(200, emulator.snapshot())
            if path == "/faults":
                if self.command == "POST":
                    return self._send(201, emulator.inject(**body).to_dict())
                if self.command == "DELETE":
                    emulator.clear_faults()
                    return self._send(204)
                if self.command == "GET":
                    return self._send(200, emulator.backend.faults.to_list())
            if path in ("/", ""):
                return self._send(200, {"endpoints": ["/state", "/calls", "/reset", "/scenario", "/faults",
                                                      auth.IDENTITY_PATH[len(CONTROL):], "/blobs/..."]})
        except (TypeError, ValueError, KeyError) as problem:
            return self._send(400, {"error": str(problem)})
        return self._send(404, {"error": f"no control endpoint {self.command} {CONTROL}{path}"})

    def _blob(self, rest: str) -> None:
        parts = rest.split("/")
        if len(parts) != 4:
            return self._send(404, None)
        sub, rg, name, filename = parts
        backend = self.server.emulator.backend
        with backend.lock:
            try:
                vm = backend.vm(sub, rg, name)
            except err.ArmError:
                return self._send(404, None)
            if filename.endswith(".screenshot.bmp"):
                return self._send(200, screenshot_png(vm), content_type="image/png")
            if filename.endswith(".serialconsole.log"):
                return self._send(200, serial_log(vm).encode(), content_type="text/plain; charset=utf-8")
        return self._send(404, None)


# -- boot diagnostics blobs --------------------------------------------------------------------------

def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def screenshot_png(vm: VirtualMachine) -> bytes:
    """What the console shows: the blue sign-in screen when Windows is up, black otherwise."""
    up = vm.power == "running" and not vm.booting and vm.guest.up
    return png(320, 240, (0, 90, 158) if up else (0, 0, 0))


def serial_log(vm: VirtualMachine) -> str:
    guest = vm.guest
    sac = getattr(guest, "sac_enabled", True)   # Azure's Windows images enable SAC (EMS) by default
    lines = ["Windows Boot Manager", f"Computer is booting, SAC started and initialized. ({vm.name})" if sac
             else f"Computer is booting. ({vm.name})"]
    if vm.power != "running":
        lines.append(f"The virtual machine is {vm.power}.")
    elif vm.booting or not guest.up:
        lines.append("Windows is starting ...")
    else:
        lines.append(f"{guest.computer_name} is up. Remote Desktop Services: "
                     f"{guest.services['TermService'].state}.")
    from azrdp.emulator.health_report import health_report_lines

    lines += health_report_lines(vm)
    return "\n".join(lines) + "\n"


def serve(scenario: str = "healthy", *, vms: int = 1, fleet: dict[str, int] | None = None, speed: float = 10.0,
          port: int = 0, seed: int | None = None, on_ready: Callable[[Emulator], None] | None = None,
          stop: threading.Event | None = None, read_limit: ReadLimit | None = None,
          layout: scenarios.FleetLayout | None = None) -> None:
    """Run an emulator in the foreground until Ctrl-C (or ``stop`` is set); ``on_ready`` is
    called once it serves (to print where it is and what to export)."""
    emulator = Emulator.start(scenario, vms=vms, fleet=fleet, speed=speed, seed=seed, port=port,
                              read_limit=read_limit, layout=layout)
    try:
        if on_ready is not None:
            on_ready(emulator)
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
