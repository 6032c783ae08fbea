"""The sweep job: check (and, when asked, repair) every Windows VM in a scope.

    result = sweep(session, Selection(subscriptions=("prod",), tags=(("rdp", "yes"),)),
                   policy=FixPolicy.unattended(allow_steps=("machinekeys-acl",)),
                   on_result=print_one_line)

Scope: subscriptions (ids or names; none given: every subscription the credential sees), resource
groups and tags; only Windows VMs. Azure is read by pages, not by VM: first with one Azure Resource
Graph query for every subscription (azrdp.azure.resource_graph: the VMs with their power state and
the NICs, NSGs, public IPs and virtual networks, 1,000 rows a page); where Resource Graph is
refused or unavailable (said once on the progress line), per subscription by ARM's lists
(azrdp.azure.fleet), all subscriptions side by side, a subscription's VMs starting as soon as its
lists are in. A VM is then checked from those rows (NSGs evaluated locally) and probed on the wire,
``probe_parallel`` (64) at a time; the VM agent is read (one read) only where it matters: before a
guest read, and for a running VM that fails a check or does not answer RDP. Resource Graph lags
ARM, so from its rows only a running VM that answers RDP and fails nothing is judged; every other
VM is read again from ARM (the per-VM path) before its verdict, and a sweep without the wire probe
(``probe=False``) or reading every guest (``guest=True``) lists through ARM from the start.

Each VM is handled by one worker from start to end, so it never gets two Run Commands at once;
``max_parallel`` of them read the guest or repair at a time. Every worker talking to one
subscription shares one back-off (azrdp.azure.throttle): a 429 pauses them all. A VM that fails is
reported with its error; the others go on.

Check only by default: the Azure side and the wire probe, plus the guest (one read-only Run Command)
with ``guest=True``. With a fix policy, unhealthy VMs are repaired through azrdp.repair with the
unattended policy: rdp-config, cert, sessions and reboot; machinekeys-acl and machinekeys-rename
only when allowed explicitly. A sweep never opens an NSG and never starts a deallocated VM.

Scale: a healthy fleet costs one Resource Graph page per 1,000 rows (a VM, its NIC, NSG and public IP
are four: 5 pages for 1,000 VMs, 0.005 reads per VM), or by ARM lists about 5 list pages per 50 VMs
(0.102 reads per VM), and no read per VM (bench/README.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azrdp.checks import Check
from azrdp.errors import EXIT_OK, EXIT_PROBLEM, AzrdpError, NotFoundError, UsageError
from azrdp.target import Target
from azrdp.ui import SILENT, ProgressSink

if TYPE_CHECKING:
    from azrdp.azure.session import AzureSession
    from azrdp.azure.shared_reads import SharedReadSession

DEFAULT_MAX_PARALLEL = 8
"""Eight VMs at a time read the guest or repair (Run Commands take 20-40 s each and come out of the
same subscription budget as every other tool of the tenant)."""

DEFAULT_PROBE_PARALLEL = 64
"""64 VMs at a time are checked from the fleet's lists and probed on the wire (each probe bounded
by its timeout): a check costs no ARM read for a healthy VM, so the wire sets the pace."""

UNATTENDED_STEPS = ("rdp-config", "cert", "sessions", "reboot")
GATED_STEPS = ("machinekeys-acl", "machinekeys-rename")
"""Every repair step (azrdp.plan.STEP_NAMES) is in exactly one of the two; a test keeps it so."""

OUTCOMES = {
    "healthy": "RDP answers and no check failed",
    "fixed": "a problem was found and repaired; RDP answers now",
    "unhealthy": "a problem was found and is still there (the report says why it was not repaired)",
    "unverified": "no check failed, but the RDP port could not be probed (no public IP, VM not running, --no-probe)",
    "busy": "another run is changing the VM (a Run Command or an Azure operation in flight, a restart Windows has "
            "not answered yet): not judged, not repaired",
    "error": "azrdp could not check this VM (permission, not found, an Azure failure)",
}
ANSWERING = ("healthy", "fixed")


# -- what to sweep --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    subscriptions: tuple[str, ...] = ()                      # ids or names; empty: all visible
    resource_groups: tuple[str, ...] = ()                    # empty: every group
    tags: tuple[tuple[str, str | None], ...] = ()            # (name, value); value None: the tag exists

    @staticmethod
    def parse_tag(text: str) -> tuple[str, str | None]:
        name, sep, value = text.partition("=")
        if not name.strip():
            raise UsageError(f"--tag {text!r} has no tag name.", hint="Use --tag NAME=VALUE, or --tag NAME for any value.")
        return name.strip(), (value if sep else None)

    def matches_tags(self, tags: dict[str, str] | None) -> bool:
        """Tag names compare case-insensitively (as in Azure), values exactly."""
        lowered = {k.lower(): v for k, v in (tags or {}).items()}
        return all(name.lower() in lowered and (value is None or lowered[name.lower()] == value)
                   for name, value in self.tags)

    def describe(self) -> str:
        parts = [f"subscription {', '.join(self.subscriptions)}" if self.subscriptions else "every visible subscription"]
        if self.resource_groups:
            parts.append(f"resource group {', '.join(self.resource_groups)}")
        if self.tags:
            parts.append("tags " + ", ".join(n if v is None else f"{n}={v}" for n, v in self.tags))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"subscriptions": list(self.subscriptions), "resource_groups": list(self.resource_groups),
                "tags": {n: v for n, v in self.tags}}


@dataclass(frozen=True)
class FixPolicy:
    """Which repair steps a sweep may run unattended (``enabled`` False: check only)."""

    enabled: bool = False
    steps: frozenset[str] = frozenset(UNATTENDED_STEPS)

    @classmethod
    def unattended(cls, allow_steps: Iterable[str] = ()) -> FixPolicy:
        """The default unattended steps plus ``allow_steps`` (names, or comma-separated lists)."""
        extra = set()
        for step in allow_steps:
            for name in str(step).split(","):
                name = name.strip()
                if not name:
                    continue
                if name not in GATED_STEPS + UNATTENDED_STEPS:
                    raise UsageError(f"--allow-step {name!r} is not a repair step.",
                                     hint=f"Steps that need it: {', '.join(GATED_STEPS)}.")
                extra.add(name)
        return cls(True, frozenset(UNATTENDED_STEPS) | extra)

    @property
    def skipped(self) -> list[str]:
        """Repair steps this policy never runs (given to the planner as skipped steps)."""
        return [s for s in UNATTENDED_STEPS + GATED_STEPS if s not in self.steps]

    def permits(self, plan: Any) -> bool:
        """Only allowed guest steps and reboot: never a start, never an NSG rule."""
        return all(step.name in self.steps for step in plan.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"fix": self.enabled,
                "steps": [s for s in UNATTENDED_STEPS + GATED_STEPS if s in self.steps] if self.enabled else []}


@dataclass(frozen=True)
class SelectedVm:
    subscription: str
    resource_group: str
    name: str
    id: str

    def target(self) -> Target:
        return Target(self.name, self.resource_group, self.subscription)


# -- results --------------------------------------------------------------------------------------

@dataclass
class VmResult:
    vm: SelectedVm
    outcome: str
    summary: str
    seconds: float = 0.0
    answers: bool | None = None          # the last wire probe said RDP answers (None: not probed)
    checks: list[Check] = field(default_factory=list)
    repair: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ANSWERING

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm.name, "resource_group": self.vm.resource_group, "subscription": self.vm.subscription,
                "id": self.vm.id, "outcome": self.outcome, "answers": self.answers, "summary": self.summary,
                "seconds": round(self.seconds, 3), "checks": [c.to_dict() for c in self.checks],
                "repair": self.repair, "error": self.error}


@dataclass
class SweepResult:
    selection: Selection
    policy: FixPolicy
    subscriptions: list[str]
    results: list[VmResult]                        # in the order the VMs finished
    seconds: float = 0.0
    throttling: dict[str, Any] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PROBLEM

    def counts(self) -> dict[str, int]:
        return {outcome: sum(1 for r in self.results if r.outcome == outcome) for outcome in OUTCOMES}

    def sorted_results(self) -> list[VmResult]:
        return sorted(self.results, key=lambda r: (r.vm.subscription.lower(), r.vm.resource_group.lower(),
                                                   r.vm.name.lower()))

    def to_dict(self) -> dict[str, Any]:
        return {"selection": self.selection.to_dict(), "policy": self.policy.to_dict(),
                "subscriptions": self.subscriptions, "vms": len(self.results), "counts": self.counts(),
                "ok": self.ok, "seconds": round(self.seconds, 3), "throttling": self.throttling,
                "reads": self.reads, "results": [r.to_dict() for r in self.sorted_results()]}


# -- selecting -------------------------------------------------------------------------------------

def resolve_subscriptions(session: AzureSession, selection: Selection) -> list[tuple[str, str | None]]:
    """(id, name) of each subscription to sweep: the given ones (names resolved through
    GET /subscriptions only when needed), or every subscription the credential sees."""
    from azrdp.azure.subscription import resolve_subscription

    if not selection.subscriptions:
        visible = session.list_subscriptions()
        if not visible:
            raise NotFoundError("this sign-in sees no subscription.",
                                hint="Assign the identity a role on the subscriptions to sweep, or pass --subscription.")
        return [(sub_id, name or None) for sub_id, name in visible]
    chosen: dict[str, tuple[str, str | None]] = {}
    for requested in selection.subscriptions:
        sub = resolve_subscription(requested, list_subscriptions=session.list_subscriptions)
        chosen.setdefault(sub.id.lower(), (sub.id, sub.name))
    return list(chosen.values())


def selected_vm(view: Any, body: dict[str, Any], selection: Selection) -> SelectedVm | None:
    """The listed VM ``body`` as a SelectedVm when it is a Windows VM the selection names."""
    from azrdp.target import parse_resource_id

    os_disk = ((body.get("properties") or {}).get("storageProfile") or {}).get("osDisk") or {}
    if str(os_disk.get("osType") or "").lower() != "windows" or not selection.matches_tags(body.get("tags")):
        return None
    rid = parse_resource_id(body["id"])
    if selection.resource_groups and rid.resource_group.lower() not in {g.lower() for g in selection.resource_groups}:
        return None
    return SelectedVm(view.subscription, rid.resource_group, rid.name, body["id"])


# -- sweeping --------------------------------------------------------------------------------------

@dataclass
class _Scope:
    """One subscription as the workers see it: its session (shared back-off, shared reads), what
    its fleet listing has said so far, and its VMs still waiting for their evidence."""

    session: AzureSession        # the plain session, for repairs
    checking: SharedReadSession  # the same with shared network reads, for the check phase
    backoff: Any
    view: Any = None       # azrdp.azure.fleet.FleetView
    per_vm_reads: int = 0  # read calls the lists could not answer (agent, unlisted references); a shared
    #                      read counts for every VM it answered, a list read whole once (README, sweep)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cursor: int = 0        # how many of view.vms were looked at
    waiting: list[tuple[SelectedVm, str | None]] = field(default_factory=list)   # (VM, a reference not listed yet)
    queued: set[str] = field(default_factory=set)     # VMs handed to a worker (never twice)

    def counted(self, reads: int) -> None:
        with self.lock:
            self.per_vm_reads += reads

    def listed_anew(self, view: Any) -> None:
        """The fleet is read again into ``view`` (Resource Graph gave up half way: the lists
        now); VMs already handed to a worker stay theirs, with the view they were found in."""
        with self.lock:
            self.view, self.cursor, self.waiting = view, 0, []

    def ready(self, selection: Selection, want_vnet: bool) -> list[tuple[SelectedVm, Any]]:
        """The VMs whose whole RDP path and run time status the view now holds (every selected VM
        left, once it is complete), each with that view: they can be checked and probed now."""
        from azrdp.azure.inventory import listed_gap
        from azrdp.target import id_key

        with self.lock:
            view = self.view
            while self.cursor < len(view.vms):
                vm = selected_vm(view, view.vms[self.cursor], selection)
                self.cursor += 1
                if vm is not None and id_key(vm.id) not in self.queued:
                    self.waiting.append((vm, None))
            ready: list[tuple[SelectedVm, Any]] = []
            still: list[tuple[SelectedVm, str | None]] = []
            for vm, missing in self.waiting:
                if not view.complete:
                    if missing is not None and view.get(missing) is None:
                        still.append((vm, missing))
                        continue
                    if not view.has_status(vm.id):
                        still.append((vm, None))
                        continue
                    missing = listed_gap(view, vm.target(), want_vnet=want_vnet)
                    if missing is not None:
                        still.append((vm, missing))
                        continue
                if id_key(vm.id) not in self.queued:
                    self.queued.add(id_key(vm.id))
                    ready.append((vm, view))
            self.waiting = still
            return ready


def sweep(session: AzureSession, selection: Selection = Selection(), *, policy: FixPolicy = FixPolicy(),
          guest: bool = False, max_parallel: int = DEFAULT_MAX_PARALLEL, port: int = 3389,
          source_ip: str | None = None, probe: bool = True, probe_timeout: float = 5.0,
          fix_options: dict[str, Any] | None = None, audit_path: Any = None,
          on_result: Callable[[VmResult], None] | None = None, progress: ProgressSink = SILENT,
          probe_parallel: int = DEFAULT_PROBE_PARALLEL, resource_graph: bool = True) -> SweepResult:
    """Sweep the VMs ``selection`` names, through ``session`` (an AzureSession; its subscription
    is ignored, see :func:`resolve_subscriptions`). ``on_result`` hears each VM as it finishes.
    With a fix policy every change is appended to ``audit_path`` (JSON lines) as it is made;
    ``fix_options`` passes further azrdp.repair.FixOptions fields (e.g. ``wait_timeout``).
    ``probe_parallel`` VMs are checked (lists, wire probe) at a time; of those, ``max_parallel``
    at a time read the guest or repair. ``resource_graph`` False: the ARM lists only (so are a
    sweep without the wire probe and a guest sweep: nothing would confirm Resource Graph's rows).
    Raises typed errors only for what stops the whole sweep (sign-in, no VM selected)."""
    from azrdp.azure.fleet import FleetView, read_fleet
    from azrdp.azure.shared_reads import shared_reads
    from azrdp.azure.throttle import SharedBackoff, backoff_transport
    from azrdp.diagnose import validate_options

    if max_parallel < 1:
        raise UsageError(f"--max-parallel {max_parallel} must be at least 1.")
    validate_options(port, source_ip, probe_timeout)   # the user's mistake (exit 2), not an error of every VM
    clock = session.clock
    start = clock.monotonic()
    subscriptions = resolve_subscriptions(session, selection)
    workers = max(probe_parallel, max_parallel)
    scopes: dict[str, _Scope] = {}
    for sub_id, name in subscriptions:
        backoff = SharedBackoff(f"subscription {name or sub_id}", clock=clock, notify=progress.info,
                                max_wait=session.retry.throttle_budget)
        bound = session.for_subscription(sub_id, name, transport=backoff_transport(
            backoff, session.transport, pool_size=max(16, workers * 2)))
        scopes[sub_id.lower()] = _Scope(bound, shared_reads(bound), backoff)
    # Resource Graph's rows are judged only where the wire confirms them: a sweep without the probe,
    # or one reading every guest (each VM read from ARM first anyway), costs less by the ARM lists
    resource_graph = resource_graph and probe and not guest
    graph = _GraphRead(resource_graph)
    progress.status(f"Querying Azure Resource Graph for {len(scopes)} subscription{'s' if len(scopes) != 1 else ''} ..."
                    if resource_graph else
                    f"Listing the VMs and networks of {len(scopes)} subscription{'s' if len(scopes) != 1 else ''} ...")

    worker = _Worker(policy=policy, guest=guest, port=port, source_ip=source_ip, probe=probe,
                     probe_timeout=probe_timeout, fix_options=fix_options or {}, clock=clock,
                     audit_path=audit_path, guest_slots=threading.BoundedSemaphore(max_parallel))
    results: list[VmResult] = []
    finished: queue.Queue = queue.Queue()     # futures of listings and of VMs, as they end
    counts = {"submitted": 0}
    submit_lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azrdp-sweep")
    lister = ThreadPoolExecutor(max_workers=min(len(scopes), 16), thread_name_prefix="azrdp-fleet")

    def start_ready(scope: _Scope) -> None:
        """Called after every page: the VMs whose evidence is in start at once."""
        for vm, view in scope.ready(selection, want_vnet=bool(source_ip)):
            with submit_lock:
                counts["submitted"] += 1
                pool.submit(worker.run, scope, vm, view).add_done_callback(finished.put)

    def listing(scope: _Scope) -> None:
        scope.listed_anew(FleetView(scope.session.subscription_id))
        read_fleet(scope.session, selection.resource_groups, view=scope.view,
                   on_page=lambda view: start_ready(scope))
        start_ready(scope)     # every list is read: whatever still waits starts now

    def graph_listing() -> None:
        """Every subscription by one Resource Graph query, page by page (rows come ordered by
        id, a resource group's VMs and network together); refused or given up: the lists."""
        from azrdp.azure.resource_graph import GraphUnavailable, read_fleet_graph

        def page(touched: set[str]) -> None:
            for key in touched:
                start_ready(scopes[key])

        for scope in scopes.values():
            scope.view = FleetView(scope.session.subscription_id)
        try:
            graph.pages = read_fleet_graph(next(iter(scopes.values())).session,
                                           {key: scope.view for key, scope in scopes.items()},
                                           selection.resource_groups, on_page=page)
        except GraphUnavailable as why:
            graph.pages, graph.used = why.pages, False
            progress.info(f"Azure Resource Graph did not answer ({why.reason}): listing the fleet through ARM "
                          "instead.")
            with ThreadPoolExecutor(max_workers=min(len(scopes), 16), thread_name_prefix="azrdp-list") as lists:
                for future in [lists.submit(listing, scope) for scope in scopes.values()]:
                    future.result()
            return
        for scope in scopes.values():
            start_ready(scope)  # every page is read: whatever still waits starts now

    try:
        listings = {lister.submit(graph_listing)} if resource_graph else \
            {lister.submit(listing, scope) for scope in scopes.values()}
        for future in listings:
            future.add_done_callback(finished.put)
        listing_left, handled = len(listings), 0
        while listing_left or handled < counts["submitted"]:
            future = finished.get()
            if future in listings:
                listing_left -= 1
                future.result()            # a subscription that cannot be listed stops the sweep
                if not listing_left and not counts["submitted"]:
                    raise NotFoundError(f"no Windows VM matches {selection.describe()}.",
                                        hint="Check --subscription, -g and --tag; `az vm list -o table` shows "
                                             "what is there.")
                if not listing_left:
                    progress.info(f"Sweeping {counts['submitted']} Windows VM{'s' if counts['submitted'] != 1 else ''} "
                                  f"({min(workers, counts['submitted'])} at a time"
                                  f"{', fixing with the unattended policy' if policy.enabled else ''}) ...")
                continue
            handled += 1
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:
        lister.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    lister.shutdown(wait=True)
    pool.shutdown(wait=True)
    progress.done()
    throttling = {sub: scope.backoff.to_dict() for sub, scope in scopes.items()}
    reads = {"source": "resource-graph" if graph.used else "arm-lists",
             "graph_pages": graph.pages,
             "list_pages": sum(s.view.pages for s in scopes.values() if s.view is not None),
             "per_vm_reads": sum(s.per_vm_reads for s in scopes.values()),
             "shared_network_reads": sum(s.checking.memo.calls for s in scopes.values()),
             "network_reads_saved": sum(s.checking.memo.shared for s in scopes.values())}
    return SweepResult(selection, policy, [s for s, _ in subscriptions], results,
                       seconds=clock.monotonic() - start, throttling=_total(throttling), reads=reads)


@dataclass
class _GraphRead:
    used: bool                 # the fleet came from Resource Graph (False: the ARM lists)
    pages: int = 0             # Resource Graph query pages read (each a read)


def _total(per_subscription: dict[str, dict[str, Any]]) -> dict[str, Any]:
    total = {"throttled": 0, "pauses": 0, "paused_seconds": 0.0}
    for numbers in per_subscription.values():
        for key in total:
            total[key] += numbers[key]
    total["paused_seconds"] = round(total["paused_seconds"], 3)
    return total


@dataclass
class _Worker:
    policy: FixPolicy
    guest: bool
    port: int
    source_ip: str | None
    probe: bool
    probe_timeout: float
    fix_options: dict[str, Any]
    clock: Any
    audit_path: Any = None
    guest_slots: Any = None          # a semaphore: how many VMs read the guest or repair at once

    def run(self, scope: _Scope, vm: SelectedVm, view: Any) -> VmResult:
        start = self.clock.monotonic()
        try:
            if self.guest:
                with self.guest_slots:
                    result, diagnosis = self._check(scope, vm, view)
            else:
                result, diagnosis = self._check(scope, vm, view)
            if self.policy.enabled and result.outcome == "unhealthy":
                with self.guest_slots:
                    result = self._fix(scope, vm, result, diagnosis)
        except AzrdpError as err:
            result = VmResult(vm, "error", err.one_line(),
                              error={"type": type(err).__name__, "message": err.message, "exit_code": err.exit_code,
                                     **({"throttled": {"group": getattr(err, "group", None),
                                                       "retry_after": err.retry_after}}
                                        if hasattr(err, "retry_after") else {})})
        except Exception as err:  # noqa: BLE001 - one VM's surprise must not stop the others
            result = VmResult(vm, "error", f"unexpected {type(err).__name__}: {err}",
                              error={"type": type(err).__name__, "message": str(err), "exit_code": EXIT_PROBLEM})
        result.seconds = self.clock.monotonic() - start
        return result

    def _check(self, scope: _Scope, vm: SelectedVm, view: Any) -> tuple[VmResult, Any]:
        """From the fleet's lists (no read for a VM whose references they hold), then the wire
        probe. The VM agent is read (one read) only where it matters: before a guest read, and
        for a running VM that fails a check (a wire probe that finds RDP not answering is one);
        the probe is not repeated. A VM that could not be probed (no public IP, --no-probe) and
        fails nothing is 'unverified' without an agent read. From Resource Graph's rows (an
        index that lags ARM) only a running VM that answers RDP and fails nothing is judged; any
        other is read again from ARM (VM, instance view, network: the per-VM path) first."""
        from azrdp.azure.checks import power_state, rdp_path
        from azrdp.diagnose import diagnose

        target = vm.target()
        handle = scope.checking.vm(target)
        inventory = handle.inventory(want_vnet=bool(self.source_ip), listed=view)
        unconfirmed = bool(view.eventual)
        running = power_state(inventory) == "running"
        options: dict[str, Any] = dict(port=self.port, source_ip=self.source_ip, probe=self.probe,
                                       probe_timeout=self.probe_timeout, guest=self.guest)
        try:
            if self.guest and running:
                handle.read_agent(inventory)
            diagnosis = diagnose(scope.checking, target, inventory=inventory, **options)
            result = _from_diagnosis(vm, diagnosis)
            if unconfirmed and not (running and result.outcome == "healthy"):
                # Resource Graph may lag ARM: only what the wire confirms is judged from its rows
                scope.counted(inventory.requests)
                inventory = handle.inventory(want_vnet=bool(self.source_ip))
                # the probe stands only for the address ARM gives now (a Dynamic IP may have moved)
                probe = diagnosis.probe_result
                same = probe is not None and power_state(inventory) == "running" and \
                    probe.host == rdp_path(inventory).public_address
                diagnosis = diagnose(scope.checking, target, inventory=inventory,
                                     probe_result=probe if same else None, **options)
                result = _from_diagnosis(vm, diagnosis)
            elif not diagnosis.ok and running and not inventory.agent_known:
                handle.read_agent(inventory)
                diagnosis = diagnose(scope.checking, target, inventory=inventory,
                                     probe_result=diagnosis.probe_result, **options)
                result = _from_diagnosis(vm, diagnosis)
            if result.outcome == "unhealthy":
                result = _busy(vm, result, inventory, diagnosis, self.clock.now())
        finally:
            scope.counted(inventory.requests)
        return result, diagnosis

    def _fix(self, scope: _Scope, vm: SelectedVm, checked: VmResult, diagnosis: Any) -> VmResult:
        """Repair through azrdp.repair with the unattended policy, from the diagnosis the sweep made
        (the VM is not read again before the repair). A VM whose problem no allowed step touches
        (agent not Ready, deallocated, an NSG) is reported without a repair run."""
        from azrdp.audit import AuditLog
        from azrdp.plan import plan
        from azrdp.repair import FixOptions, fix

        preview = plan(diagnosis, skip_steps=self.policy.skipped, start=False, advice="sweep")
        if preview.blockers and not preview.steps:
            checked.summary += "; not repaired: " + "; ".join(preview.blockers)
            checked.repair = {"verdict": "not_attempted", "blockers": list(preview.blockers),
                              "notes": list(preview.notes)}
            return checked
        options = FixOptions(port=self.port, source_ip=self.source_ip, probe_timeout=self.probe_timeout,
                             skip_steps=tuple(self.policy.skipped), start=False, fused=True, who="azrdp sweep",
                             advice="sweep",
                             **self.fix_options)
        audit = AuditLog(self.audit_path, context={"command": "sweep", "vm": str(vm.target())}, clock=self.clock)
        repaired = fix(scope.session, vm.target(), options, audit=audit, confirm=self.policy.permits,
                       clock=self.clock, before=diagnosis)
        return _from_repair(vm, checked, repaired)


def _from_diagnosis(vm: SelectedVm, diagnosis: Any) -> VmResult:
    probe = diagnosis.probe_result
    answers = probe.ok if probe is not None else None
    if diagnosis.ok and answers:
        outcome = "healthy"
    elif diagnosis.ok and answers is None:
        outcome = "unverified"
    else:
        outcome = "unhealthy"
    return VmResult(vm, outcome, diagnosis.summary(), answers=answers, checks=list(diagnosis.checks))


def _busy(vm: SelectedVm, checked: VmResult, inventory: Any, diagnosis: Any, now: Any) -> VmResult:
    """A VM another run is changing (a fix being verified, a person's restart) is not judged
    unhealthy for what that run is doing to it, and is not repaired beside it."""
    from azrdp.azure.activity import run_in_progress

    busy = run_in_progress(inventory.vm_properties.get("instanceView"), diagnosis.checks, now)
    if busy is None:
        return checked
    what, since = busy
    return VmResult(vm, "busy", f"{what}{since}: not judged or repaired now; azrdp sweep looks again at its next run",
                    answers=checked.answers, checks=checked.checks)


def _from_repair(vm: SelectedVm, checked: VmResult, repaired: Any) -> VmResult:
    """The VM after azrdp.repair.fix: fixed only when RDP answers and no check fails any more."""
    after = repaired.after
    verification = repaired.verification or {}
    fixed = repaired.verdict == "verified" and (after is None or after.ok)
    plan = repaired.plan
    blockers = list(plan.blockers) if plan is not None else []
    summary = repaired.summary()
    if not fixed:
        # what is left, most telling first: blockers, then guest steps that failed or held back
        reason = "; ".join(blockers) or next(iter(repaired.next_steps), None) or \
            (after.summary() if after is not None else checked.summary)
        summary = f"{summary}; {reason}" if reason else summary
        if repaired.verdict == "declined":
            summary = "the plan needs steps the unattended policy does not allow: " + \
                ", ".join(s.name for s in plan.steps) + " (allow them with --allow-step)"
    answers = verification.get("ok") if verification.get("method") == "wire" else checked.answers
    return VmResult(vm, "fixed" if fixed else "unhealthy", summary, answers=answers,
                    checks=list(after.checks if after is not None else checked.checks),
                    repair={"verdict": repaired.verdict, "summary": repaired.summary(),
                            "plan": plan.to_dict() if plan is not None else None, "actions": repaired.actions,
                            "counts": dict(repaired.counts), "verification": repaired.verification,
                            "next_steps": list(repaired.next_steps),
                            "error": repaired.to_dict()["error"]})
