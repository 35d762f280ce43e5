"""File-system helpers shared by the writers of audio, stores and checkpoints."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(Path(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def not_a_file(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(reason, detail)`` where ``path`` is not a regular file a reader can open and finish:
    ("missing file", "no such file" / "a broken link to X" / "a symbolic link that leads back to
    itself"), ("not a file", "it is a directory" / "it is a named pipe" ...: reading a pipe or a
    device waits for a writer, or never ends) or ("unreadable file", the system's words). None
    for a regular file (a link to one included).

    >>> not_a_file("/dev/null")
    ('not a file', 'it is a character device (a reader could wait on it for ever)')
    >>> not_a_file("/no/such/file.wav")
    ('missing file', 'no such file')
    """
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            target = os.readlink(path)
        except OSError:
            return "missing file", "no such file"
        return "missing file", f"a broken link to {printable(target)}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "missing file", "a symbolic link that leads back to itself"
        return "unreadable file", exc.strerror or str(exc)
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "not a file", "it is a directory"
    what = {
        stat.S_IFIFO: "a named pipe",
        stat.S_IFSOCK: "a socket",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
    }.get(stat.S_IFMT(st.st_mode), "not a regular file")
    return "not a file", f"it is {what} (a reader could wait on it for ever)"


#: ``errno`` values of a write that failed for want of room, not because of what was written.
_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for want of room (``ENOSPC``, or a quota: ``EDQUOT``),
    or the :class:`~cadenza.errors.DiskFullError` of a run that stopped for it.

    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> is_disk_full(OSError(errno.ENOENT, "No such file or directory"))
    False
    """
    from cadenza.errors import DiskFullError

    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _FULL)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system of ``path`` (its nearest existing folder)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def disk_full_text(exc: OSError, fallback: str | os.PathLike | None = None) -> str:
    """``"no space left on device writing runs/x/last.pt (12.0 MB free there)"``: what a user is
    told, the file named where the error names one."""
    where = exc.filename or fallback
    what = "the disk quota is used up" if exc.errno == errno.EDQUOT else "no space left on device"
    if where is None:
        return what
    free = free_bytes(where)
    room = "" if free is None else f" ({_size(free)} free there)"
    return f"{what} writing {where}{room}"


def _size(n: int) -> str:
    """``"512 B"``, ``"12.0 MB"``, ``"3.4 GB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def naming(exc: BaseException, path: str | os.PathLike) -> BaseException:
    """``exc``, or where it is a full disk, the same error naming ``path`` (the file a write was
    for, not its temporary file; a write through a file object names none)."""
    if isinstance(exc, OSError) and is_disk_full(exc):
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


class WriteWatch:
    """A file object that remembers the first ``OSError`` of its writes (``.error``).

    numpy writes an array to a real file with ``tofile``, whose failure on a full disk is an
    ``OSError`` without an errno ("64000 requested and 36832 written"), and ``torch.save`` turns
    a failed write into a ``RuntimeError`` ("unexpected pos"): written through this object they
    use its ``write``, and the disk's own error is at hand to raise instead.
    """

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def failure(self, exc: BaseException, path: str | os.PathLike) -> BaseException:
        """What to raise for ``exc``, which the write of ``path`` ended with: the disk's error
        (naming ``path``) where a write failed, else ``exc``."""
        return naming(self.error if self.error is not None else exc, path)


def printable(name: str) -> str:
    """A file name as a person reads it. A name that is not valid in the file system's encoding
    reaches Python with surrogates ("caf\\udce9.wav"), which a plot, a page or a UTF-8 file
    cannot hold; its bytes are read as Windows' Latin alphabet instead, the usual source of such
    names (an old archive, a zip made on Windows).

    >>> printable("café.wav"), printable("caf\\udce9.wav")
    ('café.wav', 'café.wav')
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        raw = name.encode("utf-8", errors="surrogateescape")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # a byte cp1252 leaves undefined
        return raw.decode("latin-1")


def same_bytes(paths: list[str | os.PathLike]) -> dict[int, int]:
    """``{i: k}`` for every file ``paths[i]`` with the same bytes as ``paths[k]``, the one kept:
    the shortest path ("song.mp3" before "song (1).mp3" and "copies/song.mp3"), then the first
    given. Only files whose size another shares are read: their first and last 64 KB, and
    whole only where those match too (24 WAV files of two minutes, one size, had cost 0.5 s of
    hashing, a fifth of preparing them); most folders read none. Empty and unreadable files are
    left out (they are skipped for what they are)."""
    import collections
    import hashlib

    def digest(path: str | os.PathLike, size: int, whole: bool) -> str | None:
        h = hashlib.sha1()
        try:
            with open(path, "rb") as f:
                if whole:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                else:
                    h.update(f.read(1 << 16))
                    if size > 1 << 17:
                        f.seek(size - (1 << 16))
                        h.update(f.read(1 << 16))
        except OSError:
            return None
        return h.hexdigest()

    by_size: dict[int, list[int]] = collections.defaultdict(list)
    for i, path in enumerate(paths):
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if size:
            by_size[size].append(i)
    same: dict[int, int] = {}
    for size, group in by_size.items():
        if len(group) < 2:
            continue
        by_ends: dict[str, list[int]] = collections.defaultdict(list)
        for i in group:
            if (d := digest(paths[i], size, whole=False)) is not None:
                by_ends[d].append(i)
        for candidates in by_ends.values():
            if len(candidates) < 2:
                continue
            kept: dict[str, int] = {}
            for i in sorted(candidates, key=lambda i: (len(os.fspath(paths[i])), i)):
                d = digest(paths[i], size, whole=size > 1 << 17)
                if d is None:
                    continue
                first = kept.setdefault(d, i)
                if first != i:
                    same[i] = first
    return same


def atomic_write(path: str | os.PathLike, write: Callable[[Any], object]) -> Path:
    """``write(f)`` into a temporary file beside ``path``, flushed, fsynced and renamed over it:
    a kill at any moment leaves the old file or the new one. A failed write (a full disk)
    leaves the old one and no part of the new (the part would hold on to the room it took),
    and raises the disk's own error naming ``path`` (``f`` is a :class:`WriteWatch`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    watch = None
    try:
        with open(tmp, "wb") as f:
            watch = WriteWatch(f)
            write(watch)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        raise (watch.failure(exc, path) if watch is not None else naming(exc, path)) from None
    return path


#: The folder locks this process holds, by lock file: ``[open file, times taken]``. A second
#: take in the same process shares the first (a study trains in-process; a test builds two
#: trainers of one run), which ``flock`` alone would refuse (its locks are per open file).
_HELD: dict[str, list[Any]] = {}


class FolderLock:
    """A folder taken by :func:`lock_folder`, until :meth:`release` (or the end of a ``with``, or
    of the process, however it ends: the kernel drops an ``flock`` with its last open file)."""

    def __init__(self, key: str | None, file: Any = None) -> None:
        self.key = key
        self.file = file  # a lock not shared within the process holds its own file

    def release(self) -> None:
        key, self.key = self.key, None
        if self.file is not None:
            self.file.close()
            self.file = None
            return
        held = _HELD.get(key) if key is not None else None
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            held[0].close()

    close = release

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_folder(
    folder: str | os.PathLike,
    name: str,
    busy: Callable[[int | None], BaseException],
    *,
    write_pid: bool = True,
    shared: bool = True,
) -> FolderLock:
    """Take ``folder`` for this process by an ``flock`` on ``folder/name``, or raise
    ``busy(pid)``: the error to give while another process holds it (``pid``: the holder's
    process id where it wrote one, else None).

    A lock left by a process that was killed is no lock: the kernel lets an ``flock`` go when its
    holder ends, however it ends. Where there is no ``flock`` (not POSIX) or the folder's file
    system refuses locks, the folder is not locked. ``write_pid`` writes this process's id into
    the lock file, for the message another process gives. ``shared=False``: a second take in
    this process is refused as another process's would be.

    >>> import tempfile
    >>> with lock_folder(tempfile.mkdtemp(), ".lock", lambda pid: RuntimeError(pid)) as lock:
    ...     lock.key is not None
    True
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        return FolderLock(None)
    path = Path(folder) / name
    key = os.path.realpath(path)
    if shared and key in _HELD:
        _HELD[key][1] += 1
        return FolderLock(key)
    f = open(path, "a+")  # noqa: SIM115 - held open for as long as the folder is this process's
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return FolderLock(None)  # a file system without locks (some network mounts)
        pid = None
        try:
            pid = int(path.read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            pass
        raise busy(pid) from None
    if write_pid:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    if not shared:
        return FolderLock(key, f)
    _HELD[key] = [f, 1]
    return FolderLock(key)
