"""A client that hangs up mid-request (Ctrl-C on azrdp, a dropped keep-alive connection) is
normal for a server: the emulator prints no traceback for it."""

from __future__ import annotations

import socket
import struct
import time


def test_a_client_reset_prints_no_traceback(emu, capsys):
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", int(emu.base_url.rsplit(":", 1)[1])))
        client.sendall(b"GET /_emulator/state HTTP/1.1\r\nHost: x\r\n")   # headers never finished
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                                                     # RST
    time.sleep(0.3)
    assert "Traceback" not in capsys.readouterr().err
    assert emu.snapshot()["vms"]  # still serving
