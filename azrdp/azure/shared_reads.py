"""Network reads that the VMs of one fleet job share, made once per job.

Diagnosing one VM reads its resource group's NIC list, its subnet and the subnet's NSG. In a fleet
those are the same few resources for hundreds of VMs, and ARM's read budget per subscription (a
bucket of 250, refilled 25 per second) is what bounds a sweep. :func:`shared_reads` wraps a
session so every ``get``/``list`` on the Network client is made once per distinct call: concurrent
callers of the same read wait for the first one. Only answers and "not found" are kept; any other
failure is raised to that caller and the next caller tries again. Everything else (Compute, Run
Command, writes) passes straight through. Use it for one job's check phase, never across jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azrdp.azure import wire_dict

if TYPE_CHECKING:
    from azrdp.azure.session import AzureSession
    from azrdp.azure.vm import AzureVm
    from azrdp.clock import Clock
    from azrdp.target import Target

_SHARED_METHODS = ("get", "list")


class _Slot:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Memo:
    def __init__(self) -> None:
        self._slots: dict[tuple, _Slot] = {}
        self._lock = threading.Lock()
        self.calls = 0        # reads made
        self.shared = 0       # reads answered from an earlier call

    def call(self, key: tuple, read: Callable[[], Any]) -> Any:
        with self._lock:
            found = self._slots.get(key)
            owner = found is None
            if found is None:
                slot = self._slots[key] = _Slot()
                self.calls += 1
            else:
                slot = found
                self.shared += 1
        if owner:
            try:
                slot.value = read()
            except BaseException as err:  # noqa: BLE001 - handed to every waiter, or forgotten
                slot.error = err
                if not _is_not_found(err):
                    with self._lock:
                        self._slots.pop(key, None)
            finally:
                slot.ready.set()
        else:
            slot.ready.wait()
        if slot.error is not None:
            raise slot.error
        return slot.value


def _is_not_found(err: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(err, ResourceNotFoundError)


class _SharedGroup:
    """One operations group (``network.subnets``) with ``get``/``list`` made once per arguments."""

    def __init__(self, name: str, group: Any, memo: _Memo):
        self._name = name
        self._group = group
        self._memo = memo

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._group, attribute)
        if attribute not in _SHARED_METHODS:
            return target

        def shared(*args: Any, **kwargs: Any) -> Any:
            key = (self._name, attribute, tuple(str(a).lower() for a in args), tuple(sorted(kwargs.items())))
            if attribute == "list":   # a pager: read every page once, keep plain dicts
                return self._memo.call(key, lambda: [wire_dict(item) for item in target(*args, **kwargs)])
            return self._memo.call(key, lambda: wire_dict(target(*args, **kwargs)))
        return shared


class _SharedNetwork:
    def __init__(self, client: Any, memo: _Memo):
        self._client = client
        self._memo = memo
        self._groups: dict[str, _SharedGroup] = {}

    def __getattr__(self, name: str) -> Any:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _SharedGroup(name, getattr(self._client, name), self._memo)
        return group


class SharedReadSession:
    """An AzureSession whose Network reads are shared; Compute, the clock and the rest are the
    session's. It is a :class:`~azrdp.azure.vm.Session` and no more: what the protocol asks for is
    spelled out here and nothing is forwarded blindly (a ``__getattr__`` would let mypy accept any
    protocol), so mypy checks it, and its VM handles read through the shared Network.

    Its ``network`` answers ``list`` with a plain list of wire dicts, not the SDK's pager:
    readers take either (inventory._first_page)."""

    def __init__(self, session: AzureSession):
        self._session = session
        self.memo = _Memo()
        self._network: _SharedNetwork | None = None
        self._lock = threading.Lock()

    @property
    def compute(self) -> Any:
        return self._session.compute

    @property
    def clock(self) -> Clock:
        return self._session.clock

    @property
    def polling_interval(self) -> float:
        return self._session.polling_interval

    @property
    def subscription_id(self) -> str:
        return self._session.subscription_id

    @property
    def credential(self) -> Any:
        return self._session.credential

    def vm(self, target: Target, *, clock: Clock | None = None) -> AzureVm:
        from azrdp.azure.vm import AzureVm

        return AzureVm(self, target, clock=clock)

    @property
    def network(self) -> _SharedNetwork:
        with self._lock:
            if self._network is None:
                self._network = _SharedNetwork(self._session.network, self.memo)
            return self._network

    @property
    def unwrapped(self) -> AzureSession:
        return self._session


def shared_reads(session: AzureSession) -> SharedReadSession:
    return SharedReadSession(session)
