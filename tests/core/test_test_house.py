"""The tests are a package: a helper one test module needs lives in tests.support and is imported
by its full name. A bare ``from test_rescue import ...`` works only while pytest happens to put
that folder on sys.path (rootdir-relative imports), and ties one test module to another's insides."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def _local_names() -> set[str]:
    """Module names that exist only inside tests/: test modules, conftests, support modules."""
    return {path.stem for path in TESTS.rglob("*.py") if path.stem != "__init__"} | {"support"}


def test_no_test_module_imports_another_by_its_bare_name():
    local = _local_names()
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(TESTS)}:{node.lineno} imports {name}"
                    for name in names if name.split(".")[0] in local]
    assert not bad, "import these through tests.support (or tests.<folder>):\n" + "\n".join(bad)


def test_the_check_sees_a_bare_import():
    tree = ast.parse("from test_rescue import TARGET\n")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in _local_names()
