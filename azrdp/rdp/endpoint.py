"""`HOST[:PORT]` as users type it: names, IPv4, bracketed IPv6 (`[::1]:3389`), bare IPv6."""

from __future__ import annotations

import ipaddress

from azrdp.errors import UsageError

DEFAULT_RDP_PORT = 3389

_EXAMPLE = "Give HOST or HOST:PORT, e.g. 10.0.0.4, myvm.westeurope.cloudapp.azure.com:3389 or [2001:db8::4]:3389"


def parse_port(text: str, *, given: str) -> int:
    """A TCP port 1-65535, or UsageError naming the bad value."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:  # '²'.isdigit() is True
        raise UsageError(f"bad port {text!r} in {given!r}: a port is a number from 1 to 65535.", hint=_EXAMPLE)
    return int(text)


def parse_target(text: str, default_port: int = DEFAULT_RDP_PORT) -> tuple[str, int]:
    """Split ``host[:port]`` / ``[ipv6]:port`` into ``(host, port)``; UsageError for an empty host,
    a bad port, or a malformed address."""
    given = text
    text = (text or "").strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise UsageError(f"missing ']' in {given!r}.", hint=_EXAMPLE)
        host, rest = text[1:close], text[close + 1:]
        if rest and not rest.startswith(":"):
            raise UsageError(f"unexpected {rest!r} after ']' in {given!r}.", hint=_EXAMPLE)
        port = parse_port(rest[1:], given=given) if rest else default_port
        if host:
            _require_ipv6(host, given)
    elif text.count(":") > 1:  # a bare IPv6 address: no port can be told apart from it
        host, port = text, default_port
        _require_ipv6(host, given)
    elif ":" in text:
        host, port_text = text.split(":")
        port = parse_port(port_text, given=given)
    else:
        host, port = text, default_port
    if not host:
        raise UsageError(f"empty host in {given!r}.", hint=_EXAMPLE)
    if any(ch.isspace() or ch in "/@?#" for ch in host):
        raise UsageError(f"bad host {host!r}: give a DNS name or an IP address, not a URL.", hint=_EXAMPLE)
    return host, port


def _require_ipv6(host: str, given: str) -> None:
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])  # allow a zone: fe80::1%eth0
    except ValueError:
        raise UsageError(f"bad IPv6 address {host!r} in {given!r} (write IPv6 as [address]:port).",
                         hint=_EXAMPLE) from None


def format_target(host: str, port: int) -> str:
    """The inverse of parse_target: brackets around IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
