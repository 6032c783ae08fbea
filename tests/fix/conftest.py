"""Fixtures for `azrdp fix` / `revoke`: the ARM stand-in and sessions tests/azure uses (one
definition, tests/support/azure_fixtures.py), plus certificates and the audit log's path."""

from __future__ import annotations

import pytest

from tests.support.azure_fixtures import arm, cli_env, clock, make_session, session
from tests.support.fix_support import make_certs

__all__ = ["arm", "cli_env", "clock", "make_session", "session"]



@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """(expired, fresh) certificates, valid or not under both the real and the manual clock."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def audit_path(tmp_path):
    return tmp_path / "audit.jsonl"
