"""--screenshot: retrieveBootDiagnosticsData, the SAS download (no Azure token), BMP to PNG."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from click.testing import CliRunner

from azrdp.azure.screenshot import to_png
from azrdp.cli import cli
from azrdp.errors import AzureOperationError
from tests.support.fake_arm import VmSpec

BLOB = "http://127.0.0.1:47013/bootdiagnostics-vm1/vm1.screenshot.bmp?sv=2024&sig=NOT-TO-BE-PRINTED"


def bmp(width: int, height: int, pixels: list[list[tuple[int, int, int]]], *, bpp: int = 24,
        top_down: bool = False) -> bytes:
    """An uncompressed BMP, rows padded to 4 bytes, bottom-up unless ``top_down``."""
    step = bpp // 8
    stride = (width * bpp + 31) // 32 * 4
    rows = pixels if top_down else list(reversed(pixels))
    data = b"".join(b"".join(bytes((b, g, r) + ((255,) if step == 4 else ())) for r, g, b in row).ljust(stride, b"\0")
                    for row in rows)
    header = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, bpp, 0, len(data), 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) + header + data


def png_pixels(png: bytes) -> list[list[tuple[int, int, int]]]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    idat = b""
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + chunk)
        if kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[y * (1 + 3 * width):(y + 1) * (1 + 3 * width)] for y in range(height)]
    return [[tuple(row[1 + 3 * x:4 + 3 * x]) for x in range(width)] for row in rows]


PIXELS = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(10, 20, 30), (40, 50, 60), (70, 80, 90)]]


@pytest.mark.parametrize("bpp, top_down", [(24, False), (32, False), (24, True)])
def test_bmp_becomes_png(bpp, top_down):
    png, source = to_png(bmp(3, 2, PIXELS, bpp=bpp, top_down=top_down))
    assert source == "bmp" and png_pixels(png) == PIXELS


def test_png_is_kept_and_other_formats_refused():
    png, _ = to_png(bmp(3, 2, PIXELS))
    assert to_png(png) == (png, "png")
    with pytest.raises(AzureOperationError):
        to_png(b"GIF89a...")


def test_screenshot_saved_as_png(arm, tmp_path, cli_env):
    spec = arm.add_vm(VmSpec())
    arm.boot_diagnostics[spec.vm_id.lower()] = {"consoleScreenshotBlobUri": BLOB,
                                                "serialConsoleLogBlobUri": BLOB.replace("screenshot.bmp", "log")}
    arm.mock.get(BLOB, body=bmp(3, 2, PIXELS))
    target = tmp_path / "console.png"
    result = CliRunner().invoke(cli, ["diagnose", "vm1", "-g", "rg1", "--no-probe", "--screenshot", str(target),
                                      "-o", "json"])
    assert result.exit_code == 0, result.output
    assert png_pixels(target.read_bytes()) == PIXELS
    assert json.loads(result.stdout)["screenshot"] == {"path": str(target), "bytes": target.stat().st_size,
                                                       "source_format": "bmp"}
    blob_call = next(c for c in arm.mock.calls if c.request.url.startswith("http://127.0.0.1:47013/"))
    assert "Authorization" not in blob_call.request.headers
    assert "NOT-TO-BE-PRINTED" not in result.output
    boot = [c for c in arm.calls if c.path.endswith("/retrieveBootDiagnosticsData")]
    assert boot[0].method == "POST" and boot[0].query["sasUriExpirationTimeInMinutes"] == "5"


def test_no_screenshot_without_boot_diagnostics(arm, tmp_path, cli_env):
    arm.add_vm(VmSpec(boot_diagnostics=False))
    result = CliRunner().invoke(cli, ["diagnose", "vm1", "-g", "rg1", "--no-probe", "--screenshot",
                                      str(tmp_path / "x.png")])
    assert "Screenshot: not saved: boot diagnostics are disabled, so there is no screenshot\n" in result.stdout
    assert not (tmp_path / "x.png").exists()
