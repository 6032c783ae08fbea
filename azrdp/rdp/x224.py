"""TPKT / X.224 connection setup with RDP negotiation (MS-RDPBCGR 2.2.1.1 and 2.2.1.2).

The client sends an X.224 Connection Request (CR) carrying an RDP Negotiation Request; the server
answers with a Connection Confirm (CC) carrying a Negotiation Response (selected protocol and
flags), a Negotiation Failure (a code 1-6), or no negotiation data at all (a pre-RDP-5.2 server:
Standard RDP Security).

Wire layout of a confirm (all multi-byte RDP fields little-endian, TPKT length big-endian)::

    03 00 LL LL | LI D0 DD DD SS SS CO | TT FF 08 00 VV VV VV VV
    TPKT (4)    | X.224 CC header (7)  | RDP_NEG_RSP / RDP_NEG_FAILURE (8, optional)

Pure functions, no I/O: :mod:`azrdp.rdp.wire_probe` does the socket work.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from azrdp.errors import ProtocolError

# requestedProtocols / selectedProtocol values (MS-RDPBCGR 2.2.1.1.1)
PROTOCOL_RDP = 0x00000000  # Standard RDP Security: no TLS
PROTOCOL_SSL = 0x00000001  # TLS
PROTOCOL_HYBRID = 0x00000002  # CredSSP (NLA), over TLS
PROTOCOL_RDSTLS = 0x00000004  # RDSTLS, over TLS
PROTOCOL_HYBRID_EX = 0x00000008  # CredSSP with Early User Authorization Result PDU, over TLS
PROTOCOL_RDSAAD = 0x00000010  # Azure AD authentication, over TLS

DEFAULT_PROTOCOLS = PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX

PROTOCOL_NAMES: dict[int, str] = {
    PROTOCOL_RDP: "RDP",
    PROTOCOL_SSL: "SSL",
    PROTOCOL_HYBRID: "HYBRID",
    PROTOCOL_RDSTLS: "RDSTLS",
    PROTOCOL_HYBRID_EX: "HYBRID_EX",
    PROTOCOL_RDSAAD: "RDSAAD",
}

# Every selected protocol except PROTOCOL_RDP continues with a TLS handshake on the same socket.
TLS_PROTOCOLS = frozenset({PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_RDSTLS, PROTOCOL_HYBRID_EX, PROTOCOL_RDSAAD})

# RDP_NEG_FAILURE failureCode (MS-RDPBCGR 2.2.1.2.2): code -> (name, meaning)
FAILURE_CODES: dict[int, tuple[str, str]] = {
    1: ("SSL_REQUIRED_BY_SERVER", "the server requires TLS (Enhanced RDP Security)"),
    2: ("SSL_NOT_ALLOWED_BY_SERVER", "the server allows only Standard RDP Security, not TLS"),
    3: ("SSL_CERT_NOT_ON_SERVER", "the server has no usable TLS certificate"),
    4: ("INCONSISTENT_FLAGS", "the server found the requested protocol flags inconsistent"),
    5: ("HYBRID_REQUIRED_BY_SERVER", "the server requires CredSSP (Network Level Authentication)"),
    6: ("SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
        "the server requires TLS with certificate-based client authentication"),
}

# RDP_NEG_RSP flags (MS-RDPBCGR 2.2.1.2.1)
RESPONSE_FLAGS: dict[int, str] = {
    0x01: "EXTENDED_CLIENT_DATA_SUPPORTED",
    0x02: "DYNVC_GFX_PROTOCOL_SUPPORTED",
    0x04: "NEGRSP_FLAG_RESERVED",
    0x08: "RESTRICTED_ADMIN_MODE_SUPPORTED",
    0x10: "REDIRECTED_AUTHENTICATION_MODE_SUPPORTED",
}

TPKT_VERSION = 3
TPKT_HEADER_LENGTH = 4
X224_CR = 0xE0
X224_CC = 0xD0
CC_HEADER_LENGTH = 7  # LI, code, DST-REF (2), SRC-REF (2), class option
NEG_LENGTH = 8
TYPE_NEG_REQ = 0x01
TYPE_NEG_RSP = 0x02
TYPE_NEG_FAILURE = 0x03
# A confirm is 11 bytes (legacy) or 19 (with negotiation data). A TPKT header that announces
# far more is not an RDP server answering a connection request.
MAX_CONFIRM_LENGTH = 64

# X.224 TPDU codes (upper nibble), to name what a confused peer sent instead of a CC.
_TPDU_NAMES = {0xE0: "Connection Request", 0xD0: "Connection Confirm", 0x80: "Disconnect Request",
               0xF0: "Data", 0x70: "Error"}

_KNOWN_PROTOCOL_BITS = sum(PROTOCOL_NAMES)


def protocol_name(value: int) -> str:
    """`SSL`, `HYBRID`, ... for a selected protocol; `UNKNOWN(0x...)` for anything else."""
    return PROTOCOL_NAMES.get(value, f"UNKNOWN(0x{value:08X})")


def protocols_label(mask: int | None) -> str:
    """A requestedProtocols mask as names joined by `|` (`RDP` for 0; `none` when the request
    carries no RDP_NEG_REQ at all, as a legacy client sends it)."""
    if mask is None:
        return "none"
    if mask == PROTOCOL_RDP:
        return "RDP"
    names = [name for bit, name in PROTOCOL_NAMES.items() if bit and mask & bit]
    if mask & ~_KNOWN_PROTOCOL_BITS:
        names.append(f"0x{mask & ~_KNOWN_PROTOCOL_BITS:X}")
    return "|".join(names)


def parse_protocols(text: str) -> int:
    """`ssl,hybrid,hybrid_ex` -> a requestedProtocols mask. `rdp` alone means Standard RDP
    Security only (mask 0). Raises ValueError naming the unknown word."""
    by_name = {name.lower(): bit for bit, name in PROTOCOL_NAMES.items()}
    words = [word.strip().lower() for word in text.replace("|", ",").split(",") if word.strip()]
    if not words:
        raise ValueError("no protocol given")
    mask = 0
    for word in words:
        if word not in by_name:
            raise ValueError(f"unknown protocol {word!r} (choose from {', '.join(sorted(by_name))})")
        mask |= by_name[word]
    return mask


def flag_names(flags: int) -> list[str]:
    names = [name for bit, name in RESPONSE_FLAGS.items() if flags & bit]
    unknown = flags & ~sum(RESPONSE_FLAGS)
    if unknown:
        names.append(f"0x{unknown:02X}")
    return names


def failure_name(code: int) -> str:
    return FAILURE_CODES.get(code, (f"UNKNOWN_FAILURE_{code}", ""))[0]


def build_connection_request(protocols: int | None = DEFAULT_PROTOCOLS, *, cookie: str | None = None) -> bytes:
    """TPKT + X.224 Connection Request.

    ``protocols`` is the requestedProtocols mask of the RDP_NEG_REQ; ``None`` sends no
    negotiation request at all (a legacy client). ``cookie`` adds ``Cookie: mstshash=<cookie>``
    (the user-name hint mstsc sends; servers and load balancers accept it).
    """
    variable = b""
    if cookie is not None:
        if not cookie or any(ch in cookie for ch in "\r\n\x00") or not cookie.isascii():
            raise ValueError("cookie must be non-empty printable ASCII without CR/LF")
        variable += b"Cookie: mstshash=" + cookie.encode("ascii") + b"\r\n"
    if protocols is not None:
        if not 0 <= protocols <= 0xFFFFFFFF:
            raise ValueError(f"requestedProtocols out of range: {protocols}")
        variable += struct.pack("<BBHI", TYPE_NEG_REQ, 0, NEG_LENGTH, protocols)
    length_indicator = CC_HEADER_LENGTH - 1 + len(variable)
    if length_indicator > 0xFE:
        raise ValueError("connection request too long (shorten the cookie)")
    x224 = struct.pack(">BBHHB", length_indicator, X224_CR, 0, 0, 0) + variable
    return struct.pack(">BBH", TPKT_VERSION, 0, TPKT_HEADER_LENGTH + len(x224)) + x224


@dataclass(frozen=True)
class ConnectionConfirm:
    """What the server answered. ``kind`` is `response`, `failure` or `legacy` (no negotiation
    data: the server speaks only Standard RDP Security)."""

    kind: str
    selected_protocol: int | None = None
    flags: int = 0
    failure_code: int | None = None
    source_reference: int = 0

    @property
    def selected_name(self) -> str | None:
        if self.kind == "legacy":
            return PROTOCOL_NAMES[PROTOCOL_RDP]
        return None if self.selected_protocol is None else protocol_name(self.selected_protocol)

    @property
    def failure_name(self) -> str | None:
        return None if self.failure_code is None else failure_name(self.failure_code)

    @property
    def uses_tls(self) -> bool:
        return self.kind == "response" and self.selected_protocol in TLS_PROTOCOLS

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "selected_protocol": self.selected_name,
            "flags": flag_names(self.flags),
            "failure_code": self.failure_code,
            "failure_name": self.failure_name,
        }


def parse_tpkt_header(header: bytes) -> int:
    """The total PDU length a 4-byte TPKT header announces, checked against what a confirm can be."""
    if len(header) < TPKT_HEADER_LENGTH:
        raise ProtocolError(f"truncated TPKT header: {len(header)} of {TPKT_HEADER_LENGTH} bytes")
    version, _reserved, length = struct.unpack(">BBH", header[:TPKT_HEADER_LENGTH])
    if version != TPKT_VERSION:
        raise ProtocolError(f"not a TPKT header (version byte 0x{version:02X}, expected 0x03)")
    if length < TPKT_HEADER_LENGTH + CC_HEADER_LENGTH:
        raise ProtocolError(f"TPKT length {length} is too short for an X.224 Connection Confirm")
    if length > MAX_CONFIRM_LENGTH:
        raise ProtocolError(f"TPKT length {length} is too long for an X.224 Connection Confirm "
                            f"(at most {MAX_CONFIRM_LENGTH})")
    return length


def parse_connection_confirm(pdu: bytes) -> ConnectionConfirm:
    """Decode one complete TPKT-framed Connection Confirm. Raises ProtocolError for anything that
    is not exactly one well-formed confirm (truncated, garbage, oversized, mismatched lengths)."""
    length = parse_tpkt_header(pdu)
    if len(pdu) != length:
        qualifier = "truncated" if len(pdu) < length else "mismatched length"
        raise ProtocolError(f"{qualifier}: TPKT announces {length} bytes, got {len(pdu)}")
    length_indicator, code, _dst_ref, src_ref, _class = struct.unpack(">BBHHB", pdu[4:11])
    if code & 0xF0 != X224_CC:
        what = _TPDU_NAMES.get(code & 0xF0, "an unknown TPDU")
        raise ProtocolError(f"expected an X.224 Connection Confirm (0xD0), got 0x{code:02X} ({what})")
    if length_indicator != length - 5:  # LI counts the X.224 header after itself
        raise ProtocolError(f"mismatched length: X.224 length indicator {length_indicator} "
                            f"does not match TPKT length {length} (expected {length - 5})")
    variable = pdu[11:]
    if not variable:
        return ConnectionConfirm(kind="legacy", source_reference=src_ref)
    if len(variable) != NEG_LENGTH:
        raise ProtocolError(f"negotiation data is {len(variable)} bytes, expected {NEG_LENGTH}")
    neg_type, flags, neg_length, value = struct.unpack("<BBHI", variable)
    if neg_length != NEG_LENGTH:
        raise ProtocolError(f"mismatched length: negotiation length field {neg_length}, expected {NEG_LENGTH}")
    if neg_type == TYPE_NEG_RSP:
        return ConnectionConfirm(kind="response", selected_protocol=value, flags=flags, source_reference=src_ref)
    if neg_type == TYPE_NEG_FAILURE:
        return ConnectionConfirm(kind="failure", failure_code=value, flags=flags, source_reference=src_ref)
    raise ProtocolError(f"unknown negotiation type 0x{neg_type:02X} (expected 0x02 response or 0x03 failure)")
