#!/usr/bin/env python3
"""azrdp sweep as an Azure Automation runbook (Python 3.10 runtime).

Signs in with the Automation account's managed identity (system-assigned, or user-assigned with
--client-id), sweeps the Windows VMs in scope with azrdp's library, writes a readable summary and
one JSON result to the job output, and ends with a non-zero exit (a Failed job) when any VM still
does not answer RDP.

Automation passes Python runbook parameters as command-line arguments, so a schedule or a manual
start gives them like this (every one optional):

    --subscription SUB_ID_OR_NAME   (repeatable; default: every subscription the identity sees)
    --resource-group RG             (repeatable)
    --tag NAME=VALUE                (repeatable)
    --fix                           repair with the unattended policy (rdp-config, cert, sessions, reboot)
    --allow-step STEP               also machinekeys-acl / machinekeys-rename (repeatable or comma list)
    --client-id ID                  a user-assigned managed identity
    --guest                         read every guest (one read-only Run Command per VM)
    --max-parallel N                default 8
    --probe-timeout SECONDS         default 5

Cloud jobs cannot reach a VM's private IP, so the wire probe uses public IPs; from a Hybrid Runbook
Worker inside the network, VMs without one count as unverified. One job per subscription keeps a
large estate inside ARM's per-subscription read budget (see README: "Azure Automation").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="azrdp_sweep_runbook", description="azrdp sweep as a runbook")
    parser.add_argument("--subscription", action="append", default=[])
    parser.add_argument("--resource-group", action="append", default=[])
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--fix", action="store_true")
    parser.add_argument("--allow-step", action="append", default=[])
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--guest", action="store_true")
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--source-ip", default=None)
    return parser.parse_args(list(argv))


def run(argv: Sequence[str], *, out: Any = None, session_kwargs: dict[str, Any] | None = None) -> int:
    """The runbook's body; ``session_kwargs`` reach the session factory (tests: polling interval)."""
    from azrdp.azure.session import open_tenant_session
    from azrdp.errors import AzrdpError
    from azrdp.render.sweep import render_line, render_table
    from azrdp.report import to_json
    from azrdp.sweep import DEFAULT_MAX_PARALLEL, FixPolicy, Selection, sweep
    from azrdp.ui import Progress

    out = out or sys.stdout
    progress = Progress(stream=out, live=False)
    try:
        args = parse_arguments(argv)
    except SystemExit as stop:
        return EXIT_USAGE if stop.code else EXIT_OK
    try:
        selection = Selection(tuple(args.subscription), tuple(args.resource_group),
                              tuple(Selection.parse_tag(t) for t in args.tag))
        allowed = FixPolicy.unattended(args.allow_step)   # names checked even without --fix
        policy = allowed if args.fix else FixPolicy()
        progress.info(f"azrdp sweep runbook: {selection.describe()}; "
                      + (f"fix with steps {', '.join(policy.to_dict()['steps'])}" if policy.enabled else "check only"))
        session = open_tenant_session(auth="msi", client_id=args.client_id, auth_explicit=True,
                                      on_wait=progress.info, **(session_kwargs or {}))
        result = sweep(session, selection, policy=policy, guest=args.guest,
                       max_parallel=args.max_parallel or DEFAULT_MAX_PARALLEL, probe_timeout=args.probe_timeout,
                       source_ip=args.source_ip, on_result=lambda r: progress.info(render_line(r)),
                       progress=progress)
    except AzrdpError as err:
        print(f"Error: {err.one_line()}", file=out)
        print("AZRDP-SWEEP-RESULT:" + json.dumps({"ok": False, "error": {"type": type(err).__name__,
                                                                         "message": err.message,
                                                                         "exit_code": err.exit_code}}), file=out)
        return err.exit_code
    print(render_table(result), file=out)
    print("AZRDP-SWEEP-RESULT:" + json.dumps(json.loads(to_json(result.to_dict())), separators=(",", ":")), file=out)
    out.flush()
    return result.exit_code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
