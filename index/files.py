"""Files on disk, the one way the project writes them: staged folders published in one rename, atomic file
replacement, checksums, and the leftovers a killed writer leaves behind.

- `atomic_write(path, data)`: a file replaced whole or not at all (temporary sibling, fsync, `os.replace`,
  fsync of the folder). For single files: results, logs, settings.
- `StagedFolder`: a folder written in a hidden sibling (`.NAME.tmp-PID-XXXX`) and published in one rename
  once complete; an existing folder it replaces is swapped out in the same rename (Linux `renameat2`
  RENAME_EXCHANGE) and only then deleted, so a reader sees the old folder or the new one, never a mix or
  nothing. A kill at any point leaves the target as it was plus a hidden leftover that the next
  writer of the same target removes (`clean_leftovers`).
- `sha256_file` (full verification) and `fast_digest` (xxh3-128 over a memory map: about 10 GB/s here, so it
  can stay on the open path).
- `failpoint(name)`: the process kills itself with SIGKILL at a named point when `LSR_FAILPOINT` says so; the
  crash tests use it to stop a real build exactly between two steps.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import mmap
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash

from .errors import LsrError

FAILPOINT_ENV = "LSR_FAILPOINT"
FAILPOINT_ONCE_ENV = "LSR_FAILPOINT_ONCE"  # a file path: only the first process to reach the point is killed


def failpoint(name: str) -> None:
    """SIGKILL this process if `LSR_FAILPOINT` names this point (crash tests); free otherwise. With
    `LSR_FAILPOINT_ONCE` naming a file, only the process that creates it dies (a worker killed once, then
    restarted)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        once = os.environ.get(FAILPOINT_ONCE_ENV)
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write and fsync a new file (inside a staged folder: the folder's rename publishes it). An existing file
    is unlinked first, never truncated: in a staged copy it may be a hard link to the published folder's."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        if os.environ.get(FAILPOINT_ENV) == f"write:{path.name}":  # die half-way through this file
            f.write(data[: len(data) // 2])
            f.flush()
            failpoint(f"write:{path.name}")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_array(path: Path, array: np.ndarray) -> None:
    """A `.npy` file written and fsynced (no pickles); unlinked first, like `write_file`."""
    if os.environ.get(FAILPOINT_ENV) == f"write:{path.name}":  # crash tests: die half-way through this file
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_file(path, buffer.getvalue())
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class ArrayAppender:
    """A `.npy` file written piece by piece (`append` rows, then `close`), for arrays too large to hold whole:
    the header is written first for zero rows and rewritten with the real count at `close` (numpy pads the
    first axis' digits so a header can grow in place), then the file is fsynced. Unlinked first, like
    `write_file`; the `write:NAME` failpoint kills the process with half of it written."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...] = ()) -> None:
        self.path, self.dtype, self.row_shape, self.rows = Path(path), np.dtype(dtype), tuple(row_shape), 0
        self.path.unlink(missing_ok=True)
        self._file = open(self.path, "wb")
        self._header_len = len(self._header())
        self._file.write(self._header())

    def _header(self) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (self.rows, *self.row_shape)})
        return buffer.getvalue()

    def append(self, rows) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._file.write(memoryview(rows.reshape(-1)).cast("B"))
        self.rows += len(rows)

    def close(self) -> None:
        header = self._header()
        if len(header) != self._header_len:  # cannot happen below 10^21 rows
            raise ValueError(f"{self.path.name}: the .npy header grew")
        if os.environ.get(FAILPOINT_ENV) == f"write:{self.path.name}":  # crash tests: die half-way through
            self._file.flush()
            self._file.truncate(self._file.tell() // 2)
            self._file.flush()
            failpoint(f"write:{self.path.name}")
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Replace the file at `path` with `data` in one step: readers see the old content or the new, whole."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(False))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(is_dir: bool) -> int:
    """What a plain mkdir or open would give: 0o777 / 0o666 less the umask (so the operator's umask, and the
    group of a setgid parent folder, decide who may read an index), not mkdtemp's private 0o700 / 0o600."""
    return (0o777 if is_dir else 0o666) & ~_umask()


# -- checksums ---------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fast_digest(path: Path) -> str:
    """xxh3-128 of the whole file, hashed straight from a memory map (no copy)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return xxhash.xxh3_128(b"").hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return xxhash.xxh3_128(m).hexdigest()


# -- staged folders ----------------------------------------------------------------------------------------
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the hidden leftovers (`.NAME.tmp-PID-*`, `.NAME.old-PID`) of earlier writers of `target` whose
    process is gone; leftovers of a writer that is still running are left alone. Returns what was removed."""
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _LEFTOVER.match(entry.name)
        if not m or m.group("name") != target.name or _alive(int(m.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        if log:
            log(f"removed {entry}, left by an earlier build (process {m.group('pid')}) that did not finish")
    return removed


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fn = _libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class StagedFolder:
    """A folder built in a hidden sibling of `target` and published whole by `publish()`.

    >>> stage = StagedFolder(target, replace=is_lsr_index)   # checks the target before any work
    >>> ... write files into stage.path ...
    >>> stage.publish()                                       # or stage.discard() on failure
    """

    def __init__(self, target: str | Path, *, replace: Callable[[Path], bool] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        """`replace(existing)` says whether an existing target may be replaced (None: never)."""
        self.target = Path(target)
        self._replace = replace
        check_writable_target(self.target, replace)
        clean_leftovers(self.target, log)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-{os.getpid()}-",
                                              dir=self.target.parent))
        except OSError as e:
            raise LsrError(f"cannot write into {self.target.parent}: {e.strerror}") from None
        os.chmod(self.path, _mode(True))

    def publish(self) -> Path:
        """Make the staged folder the target in one rename (swapping out an old one), then delete the old."""
        for p in self.path.rglob("*"):
            os.chmod(p, _mode(p.is_dir()))
        _fsync_dir(self.path)
        failpoint("publish")
        if self.target.exists() or self.target.is_symlink():
            check_writable_target(self.target, self._replace)
            if _exchange(self.path, self.target):
                shutil.rmtree(self.path, ignore_errors=True)  # the old folder now sits at the staging path
            else:
                old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
                os.rename(self.target, old)
                os.rename(self.path, self.target)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.target)
        _fsync_dir(self.target.parent)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def check_writable_target(target: Path, replace: Callable[[Path], bool] | None) -> None:
    """One-line errors, before any work, for a target that cannot or may not be written."""
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LsrError(f"cannot write {target}: {probe} is not a folder")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LsrError(f"{target} exists and is not a folder; refusing to replace it")
    if target.exists():
        if replace is None:
            raise LsrError(f"{target} already exists (pass --overwrite to replace an lsr index there)")
        if not replace(target):
            raise LsrError(f"{target} is not an lsr index; --overwrite replaces only an lsr index folder "
                           "(move it away or choose another --out)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LsrError(f"cannot create {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LsrError(f"cannot write into {parent}: permission denied")
