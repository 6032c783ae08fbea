"""The boot-diagnostics console screenshot, saved as a PNG: is Windows stuck before the login screen?

retrieveBootDiagnosticsData hands out a short-lived SAS URI; the blob is fetched without any
Azure token (the SAS is the credential, and it is never printed or logged). Azure stores the
screenshot as a BMP; it is converted to PNG with the standard library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azrdp.errors import AzureOperationError

if TYPE_CHECKING:
    from azrdp.azure.vm import Session

Fetch = Callable[[str], bytes]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def http_fetch(url: str, *, timeout: float = 60.0, what: str = "the screenshot") -> bytes:
    """GET a blob by its SAS URI (no Authorization header: the SAS is the credential)."""
    import requests

    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as err:
        raise AzureOperationError(f"could not download {what}: {type(err).__name__}.") from None
    if response.status_code != 200:
        raise AzureOperationError(f"could not download {what}: HTTP {response.status_code}.")
    return response.content


def boot_diagnostics_blob(session: Session, resource_group: str, vm_name: str, *, uri_attribute: str, what: str,
                          missing: str, fetch: Fetch | None = None) -> bytes:
    """One boot-diagnostics blob (the screenshot or the serial log): retrieveBootDiagnosticsData
    for a 5-minute SAS URI, then the blob by that URI. ``missing`` is the error when Azure names
    no such blob."""
    from azure.core.exceptions import AzureError

    from azrdp.azure.arm_errors import translate

    try:
        result = session.compute.virtual_machines.retrieve_boot_diagnostics_data(
            resource_group, vm_name, sas_uri_expiration_time_in_minutes=5)
    except AzureError as err:
        raise translate(err, doing=f"asking for {what} of {resource_group}/{vm_name}",
                        subscription=session.subscription_id) from err
    uri = getattr(result, uri_attribute, None)
    if not uri:
        raise AzureOperationError(missing)
    return fetch(uri) if fetch is not None else http_fetch(uri, what=what)


def save_screenshot(session: Session, resource_group: str, vm_name: str, path: str | Path, *,
                    fetch: Fetch | None = None) -> dict[str, Any]:
    """Fetch the VM's console screenshot and write it to ``path`` as PNG. Returns what was saved."""
    data = boot_diagnostics_blob(session, resource_group, vm_name, uri_attribute="console_screenshot_blob_uri",
                                 what="the boot-diagnostics screenshot",
                                 missing="Azure returned no console screenshot for this VM (is it running?).",
                                 fetch=fetch)
    png, source = to_png(data)
    from azrdp.outfiles import write_output

    target = Path(path)
    write_output(target, png)
    return {"path": str(target), "bytes": len(png), "source_format": source}


MAX_PIXELS = 16 * 1024 * 1024   # a boot-diagnostics screenshot is 800x600 to 1024x768


def to_png(data: bytes) -> tuple[bytes, str]:
    """(PNG bytes, source format) for a PNG or an uncompressed 24/32-bit BMP."""
    if data.startswith(_PNG_SIGNATURE):
        return data, "png"
    if data[:2] == b"BM":
        return _bmp_to_png(data), "bmp"
    raise AzureOperationError("the screenshot is neither PNG nor BMP; nothing was saved.")


def _bmp_to_png(data: bytes) -> bytes:
    try:
        offset = struct.unpack_from("<I", data, 10)[0]
        width, height, _planes, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
    except struct.error:
        raise AzureOperationError("the screenshot BMP is truncated; nothing was saved.") from None
    if bpp not in (24, 32) or compression not in (0, 3) or width <= 0 or height == 0:
        raise AzureOperationError(f"unsupported screenshot BMP ({bpp} bits, compression {compression}); "
                                  "nothing was saved.")
    top_down, rows = height < 0, abs(height)
    if width * rows > MAX_PIXELS:
        raise AzureOperationError(f"the screenshot BMP claims {width}x{rows} pixels (more than a console "
                                  "screenshot has); nothing was saved.")
    stride = (width * bpp + 31) // 32 * 4
    step = bpp // 8
    if offset + stride * rows > len(data):
        raise AzureOperationError("the screenshot BMP is truncated; nothing was saved.")
    raw = bytearray()
    for y in range(rows):
        source_row = y if top_down else rows - 1 - y
        start = offset + source_row * stride
        row = data[start:start + width * step]
        raw.append(0)  # PNG filter: none
        for x in range(0, len(row), step):
            blue, green, red = row[x], row[x + 1], row[x + 2]
            raw += bytes((red, green, blue))
    return (_PNG_SIGNATURE
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, rows, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(bytes(raw), 6))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

