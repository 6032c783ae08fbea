"""The repair payload's LogOffOnlyWhenFull parameter: added for `azrdp fix --yes`, which repairs
without reading the guest first and must not end a user's disconnected session while a seat is
free. Backward compatible: optional, default 'false' (the old behaviour)."""

from __future__ import annotations

from azrdp.payloads import payload
from tests.support import pwsh_ast


def _tree():
    return pwsh_ast.parse(payload("repair").script_text().encode())


def test_the_parameter_is_optional_and_defaults_to_the_old_behaviour():
    params = {p.name: p for p in pwsh_ast.param_block(_tree())}
    assert "LogOffOnlyWhenFull" in params
    spec = payload("repair").parameter("LogOffOnlyWhenFull")
    assert spec.type == "bool" and spec.default is False and not spec.required
    # an older caller's parameters are still valid and unchanged
    assert payload("repair").run_command_parameters({"Steps": ["sessions"]}) == [{"name": "Steps", "value": "sessions"}]
    assert payload("repair").run_command_parameters({"Steps": ["sessions"], "LogOffOnlyWhenFull": True}) == [
        {"name": "Steps", "value": "sessions"}, {"name": "LogOffOnlyWhenFull", "value": "true"}]


def test_sessions_step_logs_off_no_one_while_a_seat_is_free_when_asked():
    body = pwsh_ast.functions(_tree())["Repair-Sessions"]
    assert "$onlyWhenFull = ($LogOffOnlyWhenFull -eq 'true')" in body
    gate = body.index("if ($onlyWhenFull -and $Before.free -gt 0) { return New-Outcome -Info $info }")
    assert gate < body.index("Get-UserSessions") < body.index("logoff.exe")
