"""Text for people, one module per result: what each command prints without ``-o json``.

JSON is each result's own ``to_dict()`` through :func:`azrdp.report.to_json`; the checklist every
report shares and the JUnit writer are in :mod:`azrdp.report`; :func:`azrdp.emit.emit` sends a
result out. A renderer only reads its result: it decides nothing the JSON does not say, and every
text it quotes from Azure, the guest or a certificate goes through azrdp.logsafe.printable.

    diagnosis  azrdp diagnose        (azrdp.diagnose.Diagnosis)
    plan       the plan fix shows before it asks (azrdp.plan.Plan)
    fix        azrdp fix             (azrdp.repair.RepairResult; JUnit suites before/after)
    rescue     azrdp rescue          (azrdp.rescue.RescuePlan, RescueResult)
    probe      azrdp probe           (azrdp.rdp.ProbeResult, SeriesResult)
    check      azrdp check           (azrdp.smoke.SmokeResult)
    sweep      azrdp sweep           (azrdp.sweep.SweepResult, VmResult; JUnit cases)
    demo       azrdp demo            (azrdp.demo.DemoResult)
    revoke     azrdp revoke          (azrdp.revoke.RevokeResult)
    job        the audit line fix and rescue both end with (azrdp.job.JobResult)
"""
