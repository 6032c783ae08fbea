"""Files azrdp writes (the audit log, --junit-xml, --screenshot): checked before anything is read
from Azure, and never written through a symlink or into a FIFO or device.

Every command that writes a file calls :func:`check_output_path` (reports) or
:func:`open_private_append` (the audit log) while it parses its options, so a path that cannot be
written is a usage error (exit 2) before any work, not a traceback after the VM was repaired.

* ``O_NOFOLLOW``: a symlink planted at the path (``ln -s ~/.ssh/authorized_keys audit.jsonl``) is
  refused instead of followed (open(2): ELOOP).
* ``O_NONBLOCK`` + ``fstat``: opening a FIFO for writing blocks until a reader appears (fifo(7));
  with O_NONBLOCK it fails at once (ENXIO) or opens, and the regular-file check refuses it, a
  character device such as /dev/full included.
* Reports are written to a temporary file in the same folder and renamed over the path
  (rename(2) replaces a symlink itself, never its target), so a half-written report never
  stands where the old one was.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from azrdp.errors import UsageError

MIN_FREE_BYTES = 256 * 1024
"""A file system with less room than this is refused up front: an audit log needs a few KB per
change, and a disk this full would fail the first record after a change was already made."""

_OPEN_FLAGS = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
    getattr(os, "O_CLOEXEC", 0)


def _why(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "it is a symbolic link (azrdp never writes through one)"
    if err.errno == errno.ENXIO:
        return "it is a FIFO with no reader (azrdp writes regular files only)"
    return err.strerror or str(err)


def _refuse(option: str, path: Path, why: str) -> UsageError:
    return UsageError(f"cannot write {option} {str(path)!r}: {why}.",
                      hint="Give a path to a regular file in a writable folder; nothing was read or changed.")


def _check_regular(fd: int, option: str, path: Path) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise _refuse(option, path, f"it is {kind} (azrdp writes regular files only)")


def _check_room(fd: int, option: str, path: Path) -> None:
    try:
        info = os.fstatvfs(fd)
    except OSError:  # a file system that cannot say: the writes will tell
        return
    free = info.f_bavail * info.f_frsize
    if info.f_blocks and free < MIN_FREE_BYTES:
        raise _refuse(option, path, f"its file system has only {free} bytes free (azrdp needs at least "
                                    f"{MIN_FREE_BYTES // 1024} KiB to record its changes)")


def open_private_append(path: Path, option: str = "--audit-log") -> int:
    """An O_APPEND descriptor of ``path`` (created 0600, its folder 0700), or a UsageError saying
    why it cannot be written (a symlink, a FIFO, a device, no permission, a read-only or full disk)."""
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise _refuse(option, path, f"its folder cannot be created ({_why(err)})") from None
    try:
        fd = os.open(path, _OPEN_FLAGS | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as err:
        raise _refuse(option, path, _why(err)) from None
    try:
        _check_regular(fd, option, path)
        _check_room(fd, option, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_output_path(path: Path | str, option: str) -> Path:
    """Refuse (UsageError) a report path azrdp could not write at the end: a symlink, a FIFO or
    device, a missing or read-only folder. Creates nothing."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise _refuse(option, path, _why(err)) from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise _refuse(option, path, "it is a symbolic link (azrdp never writes through one)")
        if stat.S_ISDIR(info.st_mode):
            raise _refuse(option, path, "it is a folder")
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) \
                or stat.S_ISBLK(info.st_mode) else "not a regular file"
            raise _refuse(option, path, f"it is {kind} (azrdp writes regular files only)")
    folder = path.parent
    if not folder.is_dir():
        raise _refuse(option, path, f"its folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _refuse(option, path, f"its folder {str(folder)!r} is not writable")
    try:  # root passes os.access on any mode bits: create (and drop) a real file to be sure
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check", delete=True)
        probe.close()
    except OSError as err:
        raise _refuse(option, path, f"its folder is not writable ({_why(err)})") from None
    return path


def write_output(path: Path | str, data: bytes | str) -> None:
    """Write a report: a temporary file in the same folder, then renamed over ``path``."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
