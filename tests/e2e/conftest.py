"""End-to-end fixtures: the cases this session's tests ask for all run at once (see tests/support/e2e_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.e2e_cases import CASES
from tests.support.e2e_support import Runner


@pytest.fixture(scope="session")
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """Starts, in parallel, every case a selected test names (parameter ``e2e_case``)."""
    wanted = {item.callspec.params["e2e_case"] for item in request.session.items
              if getattr(item, "callspec", None) is not None and "e2e_case" in item.callspec.params}
    runner = Runner(tmp_path_factory.mktemp("e2e"), [CASES[name] for name in CASES if name in wanted])
    yield runner
    runner.close()
