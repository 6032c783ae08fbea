"""Repository scripts; a package so the tests import them by name (scripts.readme_reference,
scripts.runbook.azrdp_sweep_runbook), never by file path."""
