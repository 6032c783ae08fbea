"""Fixtures for `azrdp fix` / `revoke`: the ARM stand-in and sessions of tests/azure (loaded from
there, under a unique module name, so the two folders never drift apart), plus loopback RDP
listeners whose certificate a test swaps."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_AZURE = Path(__file__).resolve().parent.parent / "azure" / "conftest.py"
_spec = importlib.util.spec_from_file_location("azure_fixtures_for_fix", _AZURE)
_azure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_azure)  # also puts tests/azure, tests/rdp and tests/payloads on sys.path
sys.path.insert(0, str(Path(__file__).parent))

arm = _azure.arm
clock = _azure.clock
make_session = _azure.make_session
session = _azure.session
cli_env = _azure.cli_env

from fix_support import make_certs  # noqa: E402


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """(expired, fresh) certificates, valid or not under both the real and the manual clock."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def audit_path(tmp_path):
    return tmp_path / "audit.jsonl"
