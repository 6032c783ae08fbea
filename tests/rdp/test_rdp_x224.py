"""Encoding and decoding of the X.224 Connection Request / Confirm with RDP negotiation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azrdp.errors import ProtocolError
from azrdp.rdp.x224 import (
    DEFAULT_PROTOCOLS,
    FAILURE_CODES,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    ConnectionConfirm,
    build_connection_request,
    parse_connection_confirm,
    parse_protocols,
    parse_tpkt_header,
    protocols_label,
)
from tests.support.rdp_peers import confirm_bytes


# -- request ----------------------------------------------------------------------------------------
def test_request_matches_the_bytes_verified_on_the_wire():
    assert build_connection_request(DEFAULT_PROTOCOLS) == bytes.fromhex("030000130ee000000000000100080" "00b000000")


def test_request_with_cookie_puts_it_before_the_negotiation_request():
    request = build_connection_request(PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX, cookie="test")
    assert request[:5] == bytes.fromhex("0300002a25")
    assert request[11:34] == b"Cookie: mstshash=test\r\n"
    assert request[34:] == bytes.fromhex("01000800" "0b000000")
    assert len(request) == 0x2A


def test_legacy_request_has_no_negotiation_data():
    assert build_connection_request(None) == bytes.fromhex("0300000b06e00000000000")


@pytest.mark.parametrize("cookie", ["", "a\r\nb", "x\x00", "é"])
def test_request_rejects_cookies_that_would_break_framing(cookie):
    with pytest.raises(ValueError):
        build_connection_request(DEFAULT_PROTOCOLS, cookie=cookie)


def test_protocol_names_parse_and_print():
    assert parse_protocols("ssl,hybrid,hybrid_ex") == 0x0B
    assert parse_protocols("SSL|HYBRID") == 0x03
    assert parse_protocols("rdp") == PROTOCOL_RDP
    assert protocols_label(0x0B) == "SSL|HYBRID|HYBRID_EX"
    assert protocols_label(0) == "RDP"
    assert protocols_label(0x101) == "SSL|0x100"
    for bad in ("", "tls", "ssl,nla"):
        with pytest.raises(ValueError):
            parse_protocols(bad)


# -- confirm ----------------------------------------------------------------------------------------
def test_xrdp_ssl_response_as_seen_on_the_wire():
    confirm = parse_connection_confirm(bytes.fromhex("030000130ed00000123400020108000100" "0000"))
    assert confirm == ConnectionConfirm(kind="response", selected_protocol=PROTOCOL_SSL, flags=1, source_reference=0x1234)
    assert confirm.selected_name == "SSL"
    assert confirm.uses_tls
    assert confirm.to_dict()["flags"] == ["EXTENDED_CLIENT_DATA_SUPPORTED"]


def test_shadow_hybrid_response_as_seen_on_the_wire():
    confirm = parse_connection_confirm(bytes.fromhex("030000130ed00000000000020308000200" "0000"))
    assert confirm.selected_name == "HYBRID"
    assert confirm.to_dict()["flags"] == ["EXTENDED_CLIENT_DATA_SUPPORTED", "DYNVC_GFX_PROTOCOL_SUPPORTED"]


def test_hybrid_ex_and_rdp_selected():
    assert parse_connection_confirm(confirm_bytes(2, PROTOCOL_HYBRID_EX)).selected_name == "HYBRID_EX"
    rdp = parse_connection_confirm(confirm_bytes(2, PROTOCOL_RDP))
    assert rdp.selected_name == "RDP" and not rdp.uses_tls


def test_unknown_selected_protocol_is_named_not_rejected():
    confirm = parse_connection_confirm(confirm_bytes(2, 0x40))
    assert confirm.selected_name == "UNKNOWN(0x00000040)" and not confirm.uses_tls


@pytest.mark.parametrize("code, name", [
    (1, "SSL_REQUIRED_BY_SERVER"),
    (2, "SSL_NOT_ALLOWED_BY_SERVER"),
    (3, "SSL_CERT_NOT_ON_SERVER"),
    (4, "INCONSISTENT_FLAGS"),
    (5, "HYBRID_REQUIRED_BY_SERVER"),
    (6, "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER"),
])
def test_every_failure_code_is_named(code, name):
    confirm = parse_connection_confirm(confirm_bytes(3, code))
    assert (confirm.kind, confirm.failure_code, confirm.failure_name) == ("failure", code, name)
    assert not confirm.uses_tls
    assert FAILURE_CODES[code][0] == name


def test_unknown_failure_code_keeps_its_number():
    confirm = parse_connection_confirm(confirm_bytes(3, 99))
    assert confirm.failure_name == "UNKNOWN_FAILURE_99"


def test_legacy_confirm_without_negotiation_data_means_standard_rdp_security():
    confirm = parse_connection_confirm(bytes.fromhex("0300000b06d00000123400"))
    assert confirm.kind == "legacy" and confirm.selected_name == "RDP" and not confirm.uses_tls


@pytest.mark.parametrize("data, message", [
    (b"", "truncated TPKT header"),
    (bytes.fromhex("0300"), "truncated TPKT header"),
    (b"HTTP/1.1 400 Bad Request\r\n", "not a TPKT header"),
    (b"SSH-2.0-OpenSSH_9.2p1\r\n", "not a TPKT header"),
    (bytes.fromhex("03000008") + b"\0" * 4, "too short"),
    (bytes.fromhex("0300ffff") + b"\0" * 20, "too long"),  # oversized
    (bytes.fromhex("030000130ed000001234000201080001"), "truncated: TPKT announces 19 bytes, got 16"),
    (bytes.fromhex("030000130ed00000123400020108000100000000"), "mismatched length: TPKT announces 19"),
    (bytes.fromhex("030000130dd00000123400020108000100" "0000"), "length indicator 13"),  # LI != len-5
    (bytes.fromhex("030000130ee00000123400020108000100" "0000"), "got 0xE0 (Connection Request)"),
    (bytes.fromhex("0300000b06800000123400"), "got 0x80 (Disconnect Request)"),
    (bytes.fromhex("030000130ed00000123400020110000100" "0000"), "negotiation length field 16"),
    (bytes.fromhex("030000130ed00000123400070008000100" "0000"), "unknown negotiation type 0x07"),
    (bytes.fromhex("0300000f0ad000001234000201" "0800"), "negotiation data is 4 bytes"),
])
def test_malformed_confirms_raise_protocol_error(data, message):
    with pytest.raises(ProtocolError) as excinfo:
        parse_connection_confirm(data)
    assert message in excinfo.value.message


def test_tpkt_header_gives_the_length_to_read():
    assert parse_tpkt_header(bytes.fromhex("03000013")) == 19
    assert parse_tpkt_header(bytes.fromhex("0300000b")) == 11


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_parser_on_arbitrary_bytes_returns_a_confirm_or_raises_protocol_error(data):
    try:
        result = parse_connection_confirm(data)
    except ProtocolError:
        return
    assert isinstance(result, ConnectionConfirm)


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 0xFFFF), st.binary(max_size=40))
def test_parser_on_tpkt_framed_garbage_returns_a_confirm_or_raises_protocol_error(length, body):
    data = struct.pack(">BBH", 3, 0, length) + body
    try:
        result = parse_connection_confirm(data)
    except ProtocolError:
        return
    assert result.kind in ("response", "failure", "legacy")
    assert len(data) == length


@given(st.sampled_from([2, 3]), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF))
def test_every_well_formed_confirm_decodes_to_what_was_encoded(neg_type, value, flags):
    confirm = parse_connection_confirm(confirm_bytes(neg_type, value, flags))
    if neg_type == 2:
        assert (confirm.kind, confirm.selected_protocol, confirm.flags) == ("response", value, flags)
    else:
        assert (confirm.kind, confirm.failure_code) == ("failure", value)
