"""When the plan moves the RDP key container aside (machinekeys-rename): only on evidence about it."""

from __future__ import annotations

from azrdp.plan import _rename_reason
from tests.support import payload_samples


def test_a_broken_self_signed_key_with_right_acls_plans_the_rename():
    assert "corrupt key" in (_rename_reason(payload_samples.corrupt_key(), []) or "")


def test_an_admin_certificate_whose_key_fails_says_nothing_about_the_rdp_container():
    # Desk review of the rewrite, finding 2: the payload judges only the self-signed certificates
    # Windows made in the live container; an admin certificate's key lives elsewhere.
    result = payload_samples.corrupt_key()
    result["cert"]["certs"][0]["self_signed"] = False
    assert _rename_reason(result, []) is None


def test_could_not_test_is_never_a_reason():
    result = payload_samples.corrupt_key()
    result["cert"]["certs"][0]["key_readable"] = None
    assert _rename_reason(result, []) is None
