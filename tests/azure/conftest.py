"""Fixtures for the Azure side: an ARM stand-in on `responses` and sessions built by the real factory
(defined once in tests/support/azure_fixtures.py, shared with tests/fix)."""

from tests.support.azure_fixtures import arm, cli_env, clock, make_session, session

__all__ = ["arm", "cli_env", "clock", "make_session", "session"]
