"""Files healthscore writes: whole or not at all, and disk errors in plain words.

Place in the flow: the bottom layer, beside :mod:`healthscore.core.modelfile`. Every file
a command writes (scores, reports, rejects, model files) goes through :func:`atomic_path`
or :func:`atomic_write`: the bytes go to a temporary file in the target's folder, which
is flushed to disk and renamed over the target only when it is complete. A full disk, a
file size limit or an interruption leaves the old file as it was (or no file), and the
temporary file is removed.

A write that fails for a reason the user can act on (disk full, quota, file size limit,
permission denied, read-only disk) raises :class:`~healthscore.errors.OutputError`,
one line naming the path, the reason and what to do; :func:`disk_reason` words the same
reasons for the store.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_write(d / "a.txt") as f:
...     _ = f.write("new")
>>> (d / "a.txt").read_text()
'new'
>>> try:
...     with atomic_write(d / "a.txt") as f:
...         _ = f.write("half")
...         raise KeyboardInterrupt
... except KeyboardInterrupt:
...     pass
>>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
('new', ['a.txt'])
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from healthscore.errors import OutputError

#: errno -> what happened, for the errors a user can act on
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file would exceed the file size limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the disk is read-only",
}
# the same reasons as drivers word them (DuckDB, PostgreSQL, Arrow), for errors without errno
_DISK_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG,
    "Permission denied": errno.EACCES,
    "Read-only file system": errno.EROFS,
}
_FIX = {
    errno.ENOSPC: "free space on that disk or write elsewhere",
    errno.EDQUOT: "free space within your quota or write elsewhere",
    errno.EFBIG: "raise the limit (ulimit -f) or write elsewhere",
    errno.EACCES: "write to a folder you may write to",
    errno.EPERM: "write to a folder you may write to",
    errno.EROFS: "write to another disk",
}


def disk_errno(e: BaseException) -> int | None:
    """The errno of a disk error a user can act on (full, quota, size limit, permission,
    read-only), from an ``OSError`` or a driver's message; None for anything else."""
    code = getattr(e, "errno", None)
    if code in DISK_ERRORS:
        return code
    text = str(e)
    for words, code in _DISK_TEXTS.items():
        if words in text:
            return code
    return None


def disk_reason(e: BaseException) -> tuple[str, str] | None:
    """What went wrong and what to do, for a disk error; None for any other error.

    >>> disk_reason(OSError(28, "No space left on device"))
    ('the disk is full', 'free space on that disk or write elsewhere')
    >>> disk_reason(RuntimeError('IO Error: Could not write file "s.duckdb": File too large'))[0]
    'the file would exceed the file size limit'
    >>> disk_reason(ValueError("bad")) is None
    True
    """
    code = disk_errno(e)
    return None if code is None else (DISK_ERRORS[code], _FIX[code])


def output_error(path: str | os.PathLike, e: BaseException, param: str | None = None):
    """The :class:`OutputError` for failing to write ``path``; ``param`` is the parameter
    that named the file (its flag on the command line), for the hint."""
    reason = disk_reason(e)
    if reason is not None:
        what, fix = reason
    else:
        what = getattr(e, "strerror", None) or str(e) or type(e).__name__
        fix = None
    if fix and param:
        fix += f" (`{param}`)"
    return OutputError(f"cannot write {path}: {what}", hint=fix, path=Path(path))


def disk_error(e: BaseException) -> OutputError | None:
    """The :class:`OutputError` for a disk error raised with no path of ours around it
    (the file it names, else standard output); None when ``e`` is no disk error.

    >>> print(disk_error(OSError(28, "No space left on device", "x.csv")))
    cannot write x.csv: the disk is full; hint: free space on that disk or write elsewhere
    """
    if disk_errno(e) is None:
        return None
    return output_error(getattr(e, "filename", None) or "standard output", e)


def folder_error(path: str | os.PathLike, param: str | None = None) -> OutputError:
    """The :class:`OutputError` for a file to write that is a folder."""
    fix = "give the file's name in it" + (f" (`{param}`)" if param else "")
    return OutputError(f"cannot write {path}: it is a folder", hint=fix, path=Path(path))


def make_folder(path: str | os.PathLike, *, param: str | None = None) -> Path:
    """Make the folder ``path`` (and its parents) unless it is there; a file in the way
    (``path`` or one of its parents) or a disk error is an :class:`OutputError`."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise OutputError(
            f"cannot make the folder {folder}: {file} is a file, not a folder",
            hint="name another folder" + (f" (`{param}`)" if param else ""),
            path=folder,
        ) from None
    except OSError as e:
        raise output_error(folder, e, param) from None
    return folder


def model_target(path: str | os.PathLike, *, force: bool) -> bool:
    """Whether a model file is to be written at ``path``: not when one is there, unless
    ``force``; a folder there is an :class:`OutputError` either way."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(
            f"cannot write the model file {target}: it is a folder",
            hint="move the folder away, or use another project folder",
            path=target,
        )
    return force or not target.exists()


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, param: str | None = None, perms: int | None = None
) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; renamed to ``path`` when the
    block ends without error, removed otherwise.

    For writers that take a file name (Arrow, DuckDB). The file keeps ``path``'s mode
    (a new one gets the umask's), or gets ``perms`` when given (``0o600``: a file only
    its owner may read, never readable by others on its way). A folder is an error
    (:func:`folder_error`). A ``path`` that is a device or a pipe
    (``/dev/stdout``) cannot be replaced: it is written in place. A symbolic link is
    followed: the file it points to is replaced, the link is kept. OS errors become
    :class:`OutputError` naming ``path``.
    """
    target = Path(path)
    if os.path.isdir(target):  # not "special": a folder cannot be written in place
        raise folder_error(target, param)
    if _special(target):
        try:
            yield target
        except OSError as e:
            raise output_error(target, e, param) from None
        return
    real = Path(os.path.realpath(target))
    try:
        fd, name = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise output_error(target, e, param) from None
    tmp = Path(name)
    try:
        yield tmp
        _sync(tmp)
        os.chmod(tmp, _file_mode(real) if perms is None else perms)  # mkstemp makes 0600
        os.replace(tmp, real)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise output_error(target, e, param) from None
        raise
    _sync_folder(real.parent)


@contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    param: str | None = None,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    perms: int | None = None,
) -> Iterator[IO]:
    """An open file (``mode`` ``"w"`` or ``"wb"``) whose contents replace ``path`` when
    the block ends without error (see :func:`atomic_path`)."""
    binary = "b" in mode
    with atomic_path(path, param=param, perms=perms) as tmp:
        with open(
            tmp,
            mode,
            encoding=None if binary else encoding,
            newline=None if binary else newline,
        ) as f:
            yield f


def write_text_atomic(
    path: str | os.PathLike,
    text: str,
    *,
    param: str | None = None,
    newline: str | None = "",
    perms: int | None = None,
) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder:
    readers see the old file or the new one, never a half-written one."""
    with atomic_write(path, param=param, newline=newline, perms=perms) as f:
        f.write(text)


def _special(path: Path) -> bool:
    """A path that exists and is not a regular file (a device, a pipe): not replaceable."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def _sync(path: Path) -> None:
    """Flush a written file to disk, so a crash after the rename cannot leave it empty."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform can; best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode ``path`` has, or the one a new file would get under the current umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
