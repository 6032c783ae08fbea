"""What a user needs to know about the certificate an RDP listener serves, from its DER bytes.

The thumbprint is SHA-1 in uppercase hex without separators, exactly as Windows shows it (and as
the guest's ``SSLCertificateSHA1Hash`` holds it), so wire and guest views can be matched.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from azrdp.errors import ProtocolError


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    common_name: str | None
    self_signed: bool
    not_before: datetime
    not_after: datetime
    days_left: int  # whole days until notAfter (negative once expired)
    expired: bool
    not_yet_valid: bool
    thumbprint: str  # SHA-1, uppercase hex, no separators (as Windows shows it)
    sha256: str
    serial: str  # uppercase hex
    key_type: str  # RSA, EC, Ed25519, Ed448, DSA
    key_size: int | None
    signature_algorithm: str | None
    dns_names: list[str] = field(default_factory=list)

    @property
    def valid_now(self) -> bool:
        return not self.expired and not self.not_yet_valid

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "common_name": self.common_name,
            "self_signed": self.self_signed,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "expired": self.expired,
            "not_yet_valid": self.not_yet_valid,
            "thumbprint": self.thumbprint,
            "sha256": self.sha256,
            "serial": self.serial,
            "key_type": self.key_type,
            "key_size": self.key_size,
            "signature_algorithm": self.signature_algorithm,
            "dns_names": list(self.dns_names),
        }


def thumbprint(der: bytes) -> str:
    """SHA-1 of the DER certificate, uppercase hex without separators (Windows' Thumbprint)."""
    return hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - an identifier, not a security use


def cert_info(der: bytes, *, now: datetime) -> CertInfo:
    """Decode a DER certificate; ``now`` (timezone-aware) decides expired / not yet valid.
    Raises ProtocolError when the bytes are not a certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(common_names[0].value) if common_names else None
    except Exception as err:  # noqa: BLE001 - hostile bytes: cryptography also raises InvalidVersion, TypeError
        raise ProtocolError(f"the server's certificate cannot be parsed: {err}") from None
    key_type, key_size = _key_kind(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = san.value.get_values_for_type(x509.DNSName)
    except Exception:  # noqa: BLE001 - absent, duplicated or undecodable extensions: no names to show
        dns_names = []
    try:
        signature_algorithm = cert.signature_algorithm_oid._name  # e.g. sha256WithRSAEncryption
    except Exception:  # noqa: BLE001 - only a label
        signature_algorithm = None
    return CertInfo(
        subject=subject,
        issuer=issuer,
        common_name=common_name,
        self_signed=_self_signed(cert),
        not_before=not_before,
        not_after=not_after,
        days_left=math.floor((not_after - now).total_seconds() / 86400),
        expired=now > not_after,
        not_yet_valid=now < not_before,
        thumbprint=thumbprint(der),
        sha256=hashlib.sha256(der).hexdigest().upper(),
        serial=f"{cert.serial_number:X}",
        key_type=key_type,
        key_size=key_size,
        signature_algorithm=signature_algorithm,
        dns_names=list(dns_names),
    )


def _self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # noqa: BLE001 - any failure (bad signature, unsupported key) means "no"
        return False
    return True


def _key_kind(cert: x509.Certificate) -> tuple[str, int | None]:
    try:
        key = cert.public_key()
    except Exception:  # noqa: BLE001 - an unsupported key algorithm is still a certificate
        return "unknown", None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, None
