"""Shared-memory regions: files in a hugetlbfs mount (or /dev/shm) mapped by every process.

Every region (ring, control block, telemetry) starts with the same control header, a run of
uint64 words in three cache lines::

    line 0  static, written once at creation (readers validate it):
            W_MAGIC, W_LAYOUT, W_KIND, W_RECORD_SIZE, W_CAPACITY, W_DATA_OFFSET, W_SIZE, W_CREATED_NS
    line 1  writer identity, written when a writer opens the region:
            W_WRITER_PID, W_WRITER_LAUNCH_NS (the process start time), W_WRITER_GEN (bumped on
            every writer open: readers compare it to notice a restart), W_BACKING, W_RETIRED
    line 2  the producer's cursor (rings: W_HEAD), written on every publish, alone on its line
    line 3+ kind-specific (rings: the consumer table)

Single writer: a writer holds ``flock(LOCK_EX)`` on the region file for its lifetime; the kernel
drops it when the process dies, however it dies, so a crashed writer's region can be reopened at
once and a second live writer is refused (:class:`WriterAliveError`, naming the live PID).

Backing: ``resolve_dir`` picks, in order, an explicit directory (the actors pass the config's
``[appliance] shm_dir``: a provisioned host names its hugetlbfs mount there),
``$APPLIANCE_SHM_DIR``, ``<hugetlbfs mount>/appliance`` when a hugetlbfs is mounted and has free
huge pages, else ``/dev/shm/appliance`` with a logged warning. Region files are 0660 (0600 with
``private=True``), sized with ftruncate to a multiple of the page size (2 MiB on hugetlbfs).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

log = logging.getLogger(__name__)

MAGIC = 0x31_4C_50_50_41_4D_48_53  # "SHMAPPL1" little-endian
LAYOUT_VERSION = 1
HEADER_BYTES = 192          # three header lines; kind-specific lines follow

KIND_RING = 1
KIND_RAW = 2            # bytes with no structure of ours (benchmark scratch lines)
KIND_CONTROL = 3
KIND_TELEMETRY = 4
KIND_NAMES = {KIND_RING: "ring", KIND_RAW: "raw", KIND_CONTROL: "control",
              KIND_TELEMETRY: "telemetry"}

BACKING_SHM = 1
BACKING_HUGETLBFS = 2
BACKING_NAMES = {BACKING_SHM: "shm", BACKING_HUGETLBFS: "hugetlbfs"}

# header word indices (uint64)
W_MAGIC, W_LAYOUT, W_KIND, W_RECORD_SIZE, W_CAPACITY, W_DATA_OFFSET, W_SIZE, W_CREATED_NS = range(8)
W_WRITER_PID, W_WRITER_LAUNCH_NS, W_WRITER_GEN, W_BACKING, W_RETIRED = range(8, 13)
W_HEAD = 16

HUGETLBFS_MAGIC_TYPE = "hugetlbfs"
DEFAULT_SHM_ROOT = "/dev/shm/appliance"


class ShmError(RuntimeError):
    """A region cannot be created, opened or validated; the message says which and why."""


class WriterAliveError(ShmError):
    """Another live process is the writer of this region."""


@dataclass(frozen=True)
class Mount:
    path: str
    fstype: str
    options: str


def mounts(proc_mounts: str = "/proc/mounts") -> list[Mount]:
    out = []
    try:
        with open(proc_mounts) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4:
                    out.append(Mount(parts[1].replace("\\040", " "), parts[2], parts[3]))
    except OSError:
        pass
    return out


def mount_of(path: str | Path) -> Mount | None:
    """The mount that holds ``path`` (longest matching mount point)."""
    p = os.path.realpath(path)
    best = None
    for m in mounts():
        mp = m.path.rstrip("/") or "/"
        if p == mp or p.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) > len(best.path.rstrip("/") or "/"):
                best = m
    return best


def is_hugetlbfs(path: str | Path) -> bool:
    m = mount_of(path)
    return m is not None and m.fstype == HUGETLBFS_MAGIC_TYPE


def hugepage_size(path: str | Path | None = None) -> int:
    """Huge page size of a hugetlbfs mount (its pagesize= option) or the system default."""
    if path is not None:
        m = mount_of(path)
        if m is not None:
            for opt in m.options.split(","):
                if opt.startswith("pagesize="):
                    v = opt.split("=", 1)[1].upper()
                    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1], 1)
                    return int(v.rstrip("KMG")) * mult
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 20


def free_hugepages() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_warned_fallback = False


def resolve_dir(explicit: str | os.PathLike | None = None,
                hugetlbfs_mount: str = "/dev/hugepages") -> Path:
    """Directory holding the region files (see the module docstring for the order);
    ``hugetlbfs_mount`` is the mount tried first when choosing automatically (then any
    hugetlbfs mount)."""
    global _warned_fallback
    for cand in (explicit, os.environ.get("APPLIANCE_SHM_DIR")):
        if cand:
            return Path(cand)
    if is_hugetlbfs(hugetlbfs_mount) and free_hugepages() > 0:
        return Path(hugetlbfs_mount) / "appliance"
    for m in mounts():
        if m.fstype == HUGETLBFS_MAGIC_TYPE and free_hugepages() > 0:
            return Path(m.path) / "appliance"
    if not _warned_fallback:
        log.warning("no hugetlbfs mount with free huge pages: shared memory falls back to %s "
                    "(4 KiB pages: more TLB misses). Reserve huge pages and mount hugetlbfs "
                    "(provision/roles/hugepages) for production.", DEFAULT_SHM_ROOT)
        _warned_fallback = True
    return Path(DEFAULT_SHM_ROOT)


def process_start_ns(pid: int) -> int:
    """Launch time of a process (ns since the epoch, 10 ms resolution), 0 if it does not exist."""
    try:
        return int(round(psutil.Process(pid).create_time() * 1000)) * 1_000_000
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return 0


def process_alive(pid: int, launch_ns: int) -> bool:
    """Is the process that was ``pid`` launched at ``launch_ns`` still running?"""
    if pid <= 0:
        return False
    start = process_start_ns(pid)
    if start == 0:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return launch_ns == 0 or abs(start - launch_ns) <= 20_000_000


_libc = ctypes.CDLL(None, use_errno=True)


def _mlock(mm: mmap.mmap, size: int) -> bool:
    buf = (ctypes.c_char * size).from_buffer(mm)
    ok = _libc.mlock(ctypes.addressof(buf), ctypes.c_size_t(size)) == 0
    del buf
    return ok


class Region:
    """One mapped region file. ``words`` is the uint64 view of the header, ``mem`` the bytes."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, writer: bool):
        self.path = path
        self.fd = fd
        self.mm = mm
        self.writer = writer
        self.mem = np.frombuffer(mm, dtype=np.uint8)
        self.words = self.mem[:HEADER_BYTES].view(np.uint64)
        self.gen_at_open = int(self.words[W_WRITER_GEN])

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> int:
        return int(self.words[W_KIND])

    @property
    def backing(self) -> str:
        return BACKING_NAMES.get(int(self.words[W_BACKING]), "?")

    def header_view(self, nbytes: int) -> np.ndarray:
        return self.mem[:nbytes].view(np.uint64)

    def data_view(self) -> np.ndarray:
        off = int(self.words[W_DATA_OFFSET])
        cap = int(self.words[W_CAPACITY])
        rs = int(self.words[W_RECORD_SIZE])
        return self.mem[off:off + cap * rs].reshape(cap, rs)

    def writer_pid(self) -> int:
        return int(self.words[W_WRITER_PID])

    def writer_alive(self) -> bool:
        return process_alive(int(self.words[W_WRITER_PID]), int(self.words[W_WRITER_LAUNCH_NS]))

    def writer_restarted(self) -> bool:
        """True once a different writer opened the region (or it was retired) since we opened it."""
        return int(self.words[W_WRITER_GEN]) != self.gen_at_open or bool(self.words[W_RETIRED])

    def close(self) -> None:
        if self.mm is None:
            return
        if self.writer:
            self.words[W_WRITER_PID] = 0
        # numpy views pin the mmap buffer: drop them before closing it
        self.words = None
        self.mem = None
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes with the process
        os.close(self.fd)
        self.mm = None


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def create(name: str, kind: int, record_size: int, capacity: int, data_offset: int,
           shm_dir: str | os.PathLike | None = None, private: bool = False,
           lock: bool = True) -> Region:
    """Open ``name`` as its writer: create it, or reopen it if its geometry matches (a crashed
    or stopped writer's region: contents and sequence are kept), else replace it.

    A new region is built under a temporary name and linked into place only once its header is
    valid, so a reader never maps a half-initialised region."""
    d = resolve_dir(shm_dir)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o770)
    except OSError as e:
        raise ShmError(f"cannot create shared-memory directory {d}: {e.strerror}") from None
    path = d / name
    hugetlb = is_hugetlbfs(d)
    page = hugepage_size(d) if hugetlb else mmap.PAGESIZE
    size = _round_up(data_offset + record_size * capacity, page)
    mode = 0o600 if private else 0o660
    geometry = (kind, record_size, capacity, data_offset, size)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            region = _create_fresh(path, geometry, mode, hugetlb, lock)
            if region is not None:
                return region
            continue  # another writer linked its region first: open that one
        except OSError as e:
            raise ShmError(f"cannot open region {path}: {e.strerror}") from None
        region = _reopen(path, fd, geometry, mode, hugetlb, lock)
        if region is not None:
            return region
        # incompatible layout: it was retired and unlinked; build a fresh one
    raise ShmError(f"region {path}: could not create it (contended by other writers)")


def _lock_or_refuse(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _peek_writer(fd)
        os.close(fd)
        raise WriterAliveError(f"region {path} already has a live writer (pid {pid}); "
                               f"refusing to start a second writer") from None


def _map(fd: int, size: int, path: Path, hugetlb: bool) -> mmap.mmap:
    try:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as e:
        os.close(fd)
        hint = " (not enough free huge pages?)" if hugetlb else ""
        raise ShmError(f"cannot map region {path} ({size} bytes){hint}: {e.strerror}") from None


def _stamp_writer(region: Region, hugetlb: bool) -> Region:
    w = region.words
    pid = os.getpid()
    w[W_BACKING] = BACKING_HUGETLBFS if hugetlb else BACKING_SHM
    w[W_WRITER_PID] = pid
    w[W_WRITER_LAUNCH_NS] = process_start_ns(pid)
    w[W_WRITER_GEN] = int(w[W_WRITER_GEN]) + 1
    region.gen_at_open = int(w[W_WRITER_GEN])
    if not _mlock(region.mm, int(w[W_SIZE])):
        log.debug("mlock of %s failed (RLIMIT_MEMLOCK?): pages may be swapped", region.path)
    return region


def _create_fresh(path: Path, geometry: tuple, mode: int, hugetlb: bool, lock: bool) -> Region | None:
    kind, record_size, capacity, data_offset, size = geometry
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as e:
        raise ShmError(f"cannot create region {tmp}: {e.strerror}") from None
    if lock:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a private file: cannot be contended
    os.fchmod(fd, mode)
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        os.unlink(tmp)
        raise ShmError(f"cannot size region {path} ({size} bytes): {e.strerror}") from None
    mm = _map(fd, size, path, hugetlb)
    region = Region(path, fd, mm, writer=True)
    w = region.words
    w[W_MAGIC] = MAGIC
    w[W_LAYOUT] = LAYOUT_VERSION
    w[W_KIND] = kind
    w[W_RECORD_SIZE] = record_size
    w[W_CAPACITY] = capacity
    w[W_DATA_OFFSET] = data_offset
    w[W_SIZE] = size
    w[W_CREATED_NS] = time.time_ns()
    _stamp_writer(region, hugetlb)
    try:
        os.link(tmp, path)
    except FileExistsError:
        region.close()
        os.unlink(tmp)
        return None
    os.unlink(tmp)
    return region


def _reopen(path: Path, fd: int, geometry: tuple, mode: int, hugetlb: bool, lock: bool) -> Region | None:
    kind, record_size, capacity, data_offset, size = geometry
    if lock:
        _lock_or_refuse(fd, path)
    st = os.fstat(fd)
    hdr = np.zeros(8, np.uint64)
    if st.st_size >= HEADER_BYTES:
        mm0 = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        hdr = np.frombuffer(mm0, dtype=np.uint64, count=8).copy()
        mm0.close()
    if not (int(hdr[W_MAGIC]) == MAGIC and int(hdr[W_LAYOUT]) == LAYOUT_VERSION
            and int(hdr[W_KIND]) == kind and int(hdr[W_RECORD_SIZE]) == record_size
            and int(hdr[W_CAPACITY]) == capacity and int(hdr[W_SIZE]) == size
            and st.st_size == size):
        # a different layout: tell attached readers this file is dead, then start a new one
        log.warning("region %s has a different layout: replacing it", path)
        if st.st_size >= HEADER_BYTES:
            try:
                mm0 = mmap.mmap(fd, st.st_size)
                np.frombuffer(mm0, dtype=np.uint64, count=16)[W_RETIRED] = 1
                mm0.close()
            except (ValueError, OSError):
                pass
        os.unlink(path)
        os.close(fd)
        return None
    os.fchmod(fd, mode)
    region = Region(path, fd, _map(fd, size, path, hugetlb), writer=True)
    log.info("reopened region %s (previous writer pid %d, head %d)", path,
             int(region.words[W_WRITER_PID]), int(region.words[W_HEAD]))
    return _stamp_writer(region, hugetlb)


def _peek_writer(fd: int) -> int:
    try:
        mm = mmap.mmap(fd, HEADER_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
        pid = int(np.frombuffer(mm, dtype=np.uint64, count=16)[W_WRITER_PID])
        mm.close()
        return pid
    except (ValueError, OSError):
        return -1


def attach(name: str, kind: int | None = None, shm_dir: str | os.PathLike | None = None) -> Region:
    """Map an existing region as a reader (mapped read-write: readers own their cursors)."""
    path = resolve_dir(shm_dir) / name
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise ShmError(f"region {path} does not exist (is its writer running?)") from None
    except OSError as e:
        raise ShmError(f"cannot open region {path}: {e.strerror}") from None
    size = os.fstat(fd).st_size
    if size < HEADER_BYTES:
        os.close(fd)
        raise ShmError(f"region {path} is too small ({size} bytes) to be an appliance region")
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as e:
        os.close(fd)
        raise ShmError(f"cannot map region {path}: {e.strerror}") from None
    region = Region(path, fd, mm, writer=False)
    w = region.words
    problems = []
    if int(w[W_MAGIC]) != MAGIC:
        problems.append("bad magic")
    if int(w[W_LAYOUT]) != LAYOUT_VERSION:
        problems.append(f"layout version {int(w[W_LAYOUT])} != {LAYOUT_VERSION}")
    if kind is not None and int(w[W_KIND]) != kind:
        problems.append(f"kind {KIND_NAMES.get(int(w[W_KIND]), int(w[W_KIND]))} is not {KIND_NAMES[kind]}")
    if int(w[W_SIZE]) != size:
        problems.append(f"size {size} != header size {int(w[W_SIZE])}")
    if problems:
        region.close()
        raise ShmError(f"region {path} is not a valid appliance region: {', '.join(problems)}")
    return region


def list_regions(shm_dir: str | os.PathLike | None = None) -> list[Path]:
    d = resolve_dir(shm_dir)
    try:
        return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno == errno.EACCES:
            raise ShmError(f"cannot list {d}: permission denied") from None
        raise
