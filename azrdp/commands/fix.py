"""`azrdp fix VM`: diagnose, plan, repair in ONE Run Command, restart if needed, prove RDP answers."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from azrdp.commands.azure_options import AzureOptions, azure_options, vm_options
from azrdp.commands.numbers import MAX_PROBE_TIMEOUT, MAX_RUN_COMMAND_TIMEOUT, MAX_WAIT, Number, parse_duration
from azrdp.emit import emit
from azrdp.errors import UsageError
from azrdp.options import AzrdpCommand, settings, shared_options
from azrdp.plan import STEP_NAMES


@click.command("fix", cls=AzrdpCommand)
@vm_options
@azure_options
@click.option("--yes", "-y", is_flag=True, help="Do it without asking (runbooks, pipelines).")
@click.option("--dry-run", is_flag=True, help="Show the plan and the exact payload parameters; change nothing.")
@click.option("--force", is_flag=True,
              help="Repair even while another Run Command is in progress on the VM (another azrdp run).")
@click.option("--step", "steps", multiple=True, type=click.Choice(STEP_NAMES), metavar="NAME",
              help=f"Run this step even if no check asks for it (repeatable): {', '.join(STEP_NAMES)}.")
@click.option("--skip", "skips", multiple=True, type=click.Choice(STEP_NAMES), metavar="NAME",
              help="Leave this step out of the plan (repeatable).")
@click.option("--reboot", is_flag=True,
              help="Always restart through ARM after the repair (default: only when a step needs it).")
@click.option("--no-reboot", is_flag=True,
              help="Never restart: a step that needs a restart then stays pending (the report says so).")
@click.option("--start", is_flag=True, help="Start the VM if it is stopped or deallocated (asked in a terminal).")
@click.option("--allow-from", metavar="IP|CIDR|me",
              help="Add a temporary NSG rule allowing RDP from this source where an NSG blocks it "
                   "(/24 or narrower; `me` needs --source-ip).")
@click.option("--allow-for", default="2h", show_default=True, metavar="DURATION",
              help="How long that rule is meant to live, at most 24h (recorded as its expiry; `azrdp revoke` "
                   "removes it, `azrdp revoke --expired -g RG` on a schedule removes every expired one).")
@click.option("--wait-timeout", default="15m", show_default=True, metavar="DURATION",
              help="How long to wait for RDP to answer after the repair, restart or start.")
@click.option("--run-command-timeout", default="15m", show_default=True, metavar="DURATION",
              help="How long to wait for the repair Run Command (it cannot be cancelled; it may go on in the "
                   "guest after azrdp stops waiting).")
@click.option("--guest-first", is_flag=True,
              help="With --yes, still read the guest with the diagnose payload before repairing (one more Run "
                   "Command; by default the repair payload re-checks and repairs only what is broken).")
@click.option("--port", type=int, default=3389, show_default=True, help="The RDP port.")
@click.option("--source-ip", metavar="IP", help="Your public address: NSG rules are evaluated for it.")
@click.option("--host", metavar="HOST[:PORT]",
              help="Verify RDP on this address instead of the VM's public IP (e.g. its private IP from inside the VNet).")
@click.option("--probe-timeout", type=Number(minimum=0.1, maximum=MAX_PROBE_TIMEOUT), default=5.0, show_default=True, metavar="SECONDS",
              help="Time limit for one wire probe.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="PATH",
              help="Append the change records here (default: the user's data directory, or AZRDP_AUDIT_LOG).")
@click.option("--junit-xml", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also write the checks before and after as JUnit XML (one testcase per check).")
@shared_options
def fix_command(azure: AzureOptions, yes: bool, dry_run: bool, force: bool, steps: tuple[str, ...], skips: tuple[str, ...],
                reboot: bool, no_reboot: bool, start: bool, allow_from: str | None, allow_for: str, wait_timeout: str,
                run_command_timeout: str, guest_first: bool, port: int, source_ip: str | None, host: str | None, probe_timeout: float,
                audit_log: str | None, junit_xml: str | None) -> None:
    """Repair Remote Desktop on an Azure Windows VM and prove it answers: diagnose (Azure, wire,
    guest), plan the steps with a reason each, ONE repair Run Command, a restart through ARM only
    when a step needs it, then wait until RDP answers and show before -> after.

    \b
    Never opens the RDP port by itself (--allow-from adds a narrow, expiring rule), never starts a
    VM without --start, backs up before every guest change, and records every change in the audit log.

    \b
      azrdp fix myvm -g myrg                      # shows the plan and asks
      azrdp fix myvm -g myrg --yes -o json        # unattended: runbooks, pipelines
      azrdp fix myvm -g myrg --dry-run            # the plan and payload parameters only

    \b
    Exit codes: 0 RDP answers (fixed, or nothing to fix); 1 still not answering (the report says what
    is left); 2 usage error (or no terminal and no --yes); 3 sign-in or permission failure; 4 VM not
    found; 5 an Azure operation failed or timed out; 130 interrupted (the audit says what was done).
    """
    from pathlib import Path

    from azrdp.audit import AuditLog, default_audit_path
    from azrdp.azure.nsg_rules import MAX_ALLOW_FOR, parse_allow_from
    from azrdp.diagnose import validate_options
    from azrdp.plan import check_steps
    from azrdp.render.fix import junit_suites, render_fix
    from azrdp.repair import FixOptions, fix
    from azrdp.report import junit_xml as to_junit
    from azrdp.ui import Progress

    if reboot and no_reboot:
        raise UsageError("--reboot and --no-reboot contradict each other.", hint="Give one of them, or neither.")
    if guest_first and not yes:
        raise UsageError("--guest-first only changes a --yes run (without --yes the guest is always read first).",
                         hint="Add --yes, or drop --guest-first.")
    restart = True if reboot else False if no_reboot else None
    check_steps(steps, skips, restart)
    validate_options(port, source_ip, probe_timeout, host=host)
    interactive = sys.stdin.isatty() and not yes
    if not yes and not dry_run and not sys.stdin.isatty():
        raise UsageError("no terminal to confirm the plan in, and no --yes.",
                         hint="A runbook must say what it wants: add --yes to repair, or --dry-run to see the plan.")
    options = FixOptions(
        port=port, host=host, source_ip=source_ip, probe_timeout=probe_timeout, force_steps=steps,
        skip_steps=skips, reboot=restart, start=True if start else (None if interactive else False),
        allow_from=allow_from, allow_for=timedelta(seconds=parse_duration(allow_for, "--allow-for",
                                                                          maximum=MAX_ALLOW_FOR.total_seconds())),
        wait_timeout=parse_duration(wait_timeout, "--wait-timeout", maximum=MAX_WAIT),
        run_command_timeout=parse_duration(run_command_timeout, "--run-command-timeout",
                                           maximum=MAX_RUN_COMMAND_TIMEOUT), fused=yes and not dry_run and not guest_first,
        dry_run=dry_run, force=force)
    from azrdp.emit import echo
    from azrdp.outfiles import check_output_path

    target = azure.target()
    if allow_from:   # a source azrdp would refuse is refused before anything is read or opened
        parse_allow_from(allow_from, source_ip=source_ip)
    if junit_xml:
        check_output_path(junit_xml, "--junit-xml")
    path = Path(audit_log) if audit_log else default_audit_path()
    audit = AuditLog(None if dry_run else path, context={"command": "fix", "vm": str(target)})
    audit.open("--audit-log" if audit_log else "the audit log (set --audit-log or AZRDP_AUDIT_LOG)")
    progress = Progress()

    shown: list = []   # what the operator saw before answering: not printed again in the report

    def show_diagnosis(diagnosis) -> None:
        """Interactive: the reasons come first, then the plan, then the question."""
        if not interactive:
            return
        from azrdp.report import render_checks

        progress.done()
        click.echo(f"Diagnosis of {target}:", err=True)
        click.echo(render_checks(diagnosis.checks, verbose=settings().verbose), err=True)
        shown.append(diagnosis)

    def confirm(plan) -> bool:
        from azrdp.render.plan import render_plan

        if yes:
            progress.info("Plan: " + ", ".join(s.name for s in plan.steps))
            return True
        progress.done()
        echo(render_plan(plan, detail=True, vm=target.name, resource_group=target.resource_group), err=True)
        shown.append(plan)
        try:
            return click.confirm("Go ahead?", default=False, err=True)
        except click.Abort as stop:  # Click turns Ctrl-C and end of input into Abort (exit 1, no report)
            if isinstance(stop.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None   # fix() records it, reports, exits 130
            return False                            # no answer: not confirmed

    session = azure.session(target=target, progress=progress)
    result = fix(session, target, options, audit=audit, confirm=confirm, progress=progress,
                 on_diagnosis=show_diagnosis)
    emit(result, lambda r, verbose: render_fix(r, verbose=verbose, shown=shown),
         junit=(junit_xml, lambda: to_junit(junit_suites(result), name="azrdp fix")) if junit_xml else None)
