"""Files the appliance writes for itself (state, status, journals' directories): explicit modes
whatever the process umask, atomic replacement, optional fsync."""
from __future__ import annotations

import os
from pathlib import Path


def ensure_dir(path: str | os.PathLike, mode: int = 0o750) -> Path:
    """Create ``path`` (and parents) if missing; a directory this call creates gets exactly
    ``mode``; one that exists keeps its mode unless it is writable by others, which is removed
    (a persisted kill switch must not be deletable by anyone on the host)."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    p.mkdir(parents=True, exist_ok=True)
    for d in missing:
        os.chmod(d, mode)
    st = p.stat()
    if st.st_mode & 0o002:
        os.chmod(p, st.st_mode & 0o7775 & ~0o002)
    return p


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o640,
                 fsync: bool = False, dir_mode: int = 0o750, make_dir: bool = True) -> Path:
    """Replace ``path`` with ``data`` through a temporary file and rename (readers see the old
    or the new content, never a torn one); the file gets exactly ``mode``. ``fsync`` also makes
    it durable (file, then directory). ``make_dir`` False: the caller knows the directory exists
    (a periodic writer skips the stat calls). Every step is one system call that releases the
    GIL, so a writer thread holds it only for microseconds."""
    p = Path(path)
    if make_dir:
        ensure_dir(p.parent, dir_mode)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    return replace(tmp, p, fsync)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync the directory ``path``: the names created, renamed or removed in it are durable."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def replace(src: str | os.PathLike, dst: str | os.PathLike, fsync: bool = False) -> Path:
    """Rename ``src`` to ``dst`` (replacing it; atomic within one file system). ``fsync`` also
    makes the rename durable: the directory of ``dst`` (and of ``src`` if another) is fsynced.
    The file's own content is the caller's to fsync first."""
    s, d = Path(src), Path(dst)
    os.replace(s, d)
    if fsync:
        fsync_dir(d.parent)
        if s.parent != d.parent:
            fsync_dir(s.parent)
    return d
