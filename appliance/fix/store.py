"""Persistent FIX message store and message log: one directory per session.

Files in the session directory (0700, files 0600, whatever the umask: the store keeps the raw
bytes of every message, Logon credentials included, so that resends are exact):

- ``seqnums``: ``"<next sender>:<next target>\\n"``, two 20-digit numbers, rewritten in place
  with one ``pwrite`` (a single 42-byte write inside one page: a killed process never leaves
  it half written).
- ``messages``: the active segment, append-only, one record per sent message: a 24-byte header
  (magic, seq, length, CRC32 of the bytes; little-endian ``<IQII`` + 4 pad) followed by the raw
  FIX bytes. On open every segment is scanned to rebuild the in-memory index seq -> (segment,
  offset, length); a torn last record of the active segment (length or CRC wrong) is truncated
  away and logged. Later records for the same seq (a resend after a reset) replace earlier ones
  in the index.
- ``messages.<k>``: older segments. Once the active segment holds more than ``segment_bytes`` it
  is renamed ``messages.<k>`` and a new one started; beyond ``max_segments`` segments the oldest
  is deleted (its messages leave the index: a ResendRequest for them is answered with a
  gap fill). The store therefore never holds more than about ``segment_bytes * max_segments``.
- ``session``: the creation time of the current sequence-number period (seconds, text).
- ``messages.log`` (``MessageLog``): every frame in and out, with a UTC timestamp, for humans,
  with Password (554), NewPassword (925) and RawData (96) redacted; rotated by size.

Durability ("fsync policy", ``fsync=``):

- ``"always"``: fsync the file after every write (seqnums and messages);
- ``"batch"`` (default): writes go straight to the kernel with ``os.write`` (no user-space
  buffer, so a kill -9 loses nothing), and ``sync()`` fsyncs both files once; the session calls
  ``sync()`` before it hands a batch of outgoing bytes to the transport, so nothing leaves the
  process that is not on disk;
- ``"none"``: never fsync (survives a process kill, not a power loss).

Under ``"always"`` and ``"batch"`` the ``session`` file is replaced durably
(``fsutil.write_atomic``: temporary file, fsync, rename, directory fsync) and a segment rotation
ends with a directory fsync (the rename, the new active segment, the dropped oldest one). The
``seqnums`` file is never replaced: it is rewritten in place (``pwrite``, or the mapping of
``sender_view`` / ``target_view``), made durable by ``sync()`` as above.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path

from appliance import fsutil
from appliance.fix import wire

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path) -> Path:
    """Create ``path`` (and missing parents) as 0700 directories, whatever the umask; an existing
    ``path`` is tightened to 0700 if it is ours."""
    p = fsutil.ensure_dir(path, DIR_MODE)
    st = p.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(p, DIR_MODE)
    return p


def open_private(path, flags: int) -> int:
    """``os.open`` with mode 0600 enforced (also on a file that already existed, if ours)."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    st = os.fstat(fd)
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.fchmod(fd, FILE_MODE)
    return fd

_REC = struct.Struct("<IQII4x")
_MAGIC = 0x46495831          # "FIX1"
FSYNC_POLICIES = ("always", "batch", "none")


class StoreError(RuntimeError):
    """The store directory cannot be used (permissions, corrupt seqnums file)."""


class FileStore:
    def __init__(self, directory, fsync: str = "batch", segment_bytes: int = 16 << 20,
                 max_segments: int = 4):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if segment_bytes < 4096 or max_segments < 1:
            raise ValueError("segment_bytes must be >= 4096 and max_segments >= 1")
        self.dir = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_segments = max_segments
        try:
            private_dir(self.dir)
            self._seq_fd = open_private(self.dir / "seqnums", os.O_RDWR)
            self._msg_fd = open_private(self.dir / "messages", os.O_RDWR | os.O_APPEND)
        except OSError as e:
            raise StoreError(f"cannot use store directory {self.dir}: {e.strerror or e}") from e
        self._dirty = False
        self._seq_map = None             # sender_view's / target_view's mapping of seqnums
        self._seq_view = None
        self._target_view = None
        self.index: dict[int, tuple[int, int, int]] = {}     # seq -> (segment, offset, length)
        self._seg_fds: dict[int, int] = {}                    # segment -> fd (active included)
        self.active = 0
        self._active_size = 0
        self.next_sender = 1
        self.next_target = 1
        self.creation_time = 0.0
        self.truncated_bytes = 0
        self.rotations = 0
        self._load()

    # ---- open / recover -----------------------------------------------------------------

    def _scan(self, seg: int, fd: int, active: bool) -> None:
        size = os.fstat(fd).st_size
        off = 0
        while off + _REC.size <= size:
            magic, seq, length, crc = _REC.unpack(os.pread(fd, _REC.size, off))
            if magic != _MAGIC or off + _REC.size + length > size:
                break
            data = os.pread(fd, length, off + _REC.size)
            if zlib.crc32(data) != crc:
                break
            self.index[seq] = (seg, off + _REC.size, length)
            off += _REC.size + length
        if off < size:
            if active:
                self.truncated_bytes = size - off
                log.warning("store %s: dropping %d bytes of a torn last record", self.dir, size - off)
                os.ftruncate(fd, off)
                os.fsync(fd)
            else:
                log.warning("store %s: segment %d has %d unreadable bytes at its end", self.dir, seg,
                            size - off)
        if active:
            self._active_size = off

    def _segments(self) -> list[int]:
        out = []
        for p in self.dir.glob("messages.*"):
            suffix = p.name.split(".", 1)[1]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def _load(self) -> None:
        raw = os.pread(self._seq_fd, 64, 0)
        if raw:
            try:
                a, b = raw.split(b"\n", 1)[0].split(b":")
                self.next_sender, self.next_target = int(a), int(b)
            except ValueError:
                raise StoreError(f"{self.dir / 'seqnums'}: unreadable content {raw[:64]!r}") from None
        else:
            self._write_seqnums()
        sess = self.dir / "session"
        if sess.exists():
            try:
                self.creation_time = float(sess.read_text().strip() or 0)
            except ValueError:
                raise StoreError(f"{sess}: unreadable creation time") from None
        else:
            self._write_creation(time.time())
        for seg in self._segments():
            fd = open_private(self.dir / f"messages.{seg}", os.O_RDONLY)
            self._seg_fds[seg] = fd
            self._scan(seg, fd, active=False)
        self.active = (max(self._seg_fds) + 1) if self._seg_fds else 1
        self._seg_fds[self.active] = self._msg_fd
        self._scan(self.active, self._msg_fd, active=True)

    def _rotate(self) -> None:
        """The active segment becomes ``messages.<k>``; a new one starts; the oldest beyond
        ``max_segments`` goes (with its index entries)."""
        os.fsync(self._msg_fd)
        fsutil.replace(self.dir / "messages", self.dir / f"messages.{self.active}")
        self.active += 1
        self._msg_fd = open_private(self.dir / "messages", os.O_RDWR | os.O_APPEND | os.O_TRUNC)
        self._seg_fds[self.active] = self._msg_fd
        self._active_size = 0
        self.rotations += 1
        while len(self._seg_fds) > self.max_segments:
            old = min(self._seg_fds)
            os.close(self._seg_fds.pop(old))
            try:
                os.unlink(self.dir / f"messages.{old}")
            except FileNotFoundError:
                pass
            for seq in [s for s, v in self.index.items() if v[0] == old]:
                del self.index[seq]
            log.info("store %s: dropped message segment %d (older messages are gap-filled on resend)",
                     self.dir, old)
        if self.fsync != "none":
            fsutil.fsync_dir(self.dir)   # the rename, the new segment and the dropped one: durable

    # ---- sequence numbers -----------------------------------------------------------------

    def _write_seqnums(self) -> None:
        os.pwrite(self._seq_fd, b"%020d:%020d\n" % (self.next_sender, self.next_target), 0)
        if self.fsync == "always":
            os.fsync(self._seq_fd)
        else:
            self._dirty = True

    def _write_creation(self, t: float) -> None:
        self.creation_time = t
        fsutil.write_atomic(self.dir / "session", f"{t:.6f}\n".encode(), FILE_MODE,
                            fsync=self.fsync != "none", dir_mode=DIR_MODE)

    def set_next_sender(self, n: int) -> None:
        self.next_sender = n
        self._write_seqnums()

    def _map_seqnums(self) -> None:
        if self._seq_map is None:
            import mmap
            import numpy as np
            self._seq_map = mmap.mmap(self._seq_fd, 42)
            whole = np.frombuffer(self._seq_map, np.uint8)
            self._seq_view = whole[:20]
            self._target_view = whole[21:41]
            whole[0] = whole[0]                        # the page faulted in now

    def sender_view(self):
        """The 20 digits of the next sender number in the ``seqnums`` file, mapped (uint8[20],
        MAP_SHARED), or None under fsync "always". Compiled code writes the number there before
        it sends a batch itself (appliance.group): the same bytes, with the same durability, as
        ``set_next_sender``'s pwrite; :meth:`note_next_sender` then tells the store."""
        if self.fsync == "always":
            return None
        self._map_seqnums()
        return self._seq_view

    def target_view(self):
        """The 20 digits of the next target number (the MsgSeqNum expected from the venue), as
        :meth:`sender_view`: compiled code that took in-sequence messages writes the next number
        there (appliance.group); :meth:`note_next_target` then tells the store."""
        if self.fsync == "always":
            return None
        self._map_seqnums()
        return self._target_view

    def note_next_sender(self, n: int) -> None:
        """``n`` was written through :meth:`sender_view`: keep the in-memory number in step."""
        self.next_sender = n
        self._dirty = True

    def note_next_target(self, n: int) -> None:
        """``n`` was written through :meth:`target_view`: keep the in-memory number in step."""
        self.next_target = n
        self._dirty = True

    def set_next_target(self, n: int) -> None:
        self.next_target = n
        self._write_seqnums()

    def incr_next_sender(self) -> None:
        self.set_next_sender(self.next_sender + 1)

    def incr_next_target(self) -> None:
        self.set_next_target(self.next_target + 1)

    # ---- messages -----------------------------------------------------------------------

    def save_message(self, seq: int, raw: bytes) -> None:
        if self._active_size >= self.segment_bytes:
            self._rotate()
        rec = _REC.pack(_MAGIC, seq, len(raw), zlib.crc32(raw)) + raw
        off = self._active_size
        os.write(self._msg_fd, rec)
        self._active_size += len(rec)
        self.index[seq] = (self.active, off + _REC.size, len(raw))
        if self.fsync == "always":
            os.fsync(self._msg_fd)
        else:
            self._dirty = True

    def get_messages(self, begin: int, end: int) -> list:
        """Stored ``(seq, raw)`` for begin <= seq <= end, in sequence order (gaps skipped)."""
        out = []
        if end - begin > len(self.index):
            seqs = sorted(s for s in self.index if begin <= s <= end)
        else:
            seqs = [s for s in range(begin, end + 1) if s in self.index]
        for s in seqs:
            seg, off, length = self.index[s]
            out.append((s, os.pread(self._seg_fds[seg], length, off)))
        return out

    def reset(self, now: float | None = None) -> None:
        """New sequence-number period: both numbers to 1, stored messages dropped."""
        os.ftruncate(self._msg_fd, 0)
        self._active_size = 0
        for seg in [k for k in self._seg_fds if k != self.active]:
            os.close(self._seg_fds.pop(seg))
            try:
                os.unlink(self.dir / f"messages.{seg}")
            except FileNotFoundError:
                pass
        self.index.clear()
        self.next_sender = 1
        self.next_target = 1
        os.pwrite(self._seq_fd, b"%020d:%020d\n" % (1, 1), 0)
        os.fsync(self._msg_fd)
        os.fsync(self._seq_fd)
        self._write_creation(time.time() if now is None else now)
        self._dirty = False

    def sync(self) -> None:
        if self._dirty and self.fsync == "batch":
            os.fsync(self._msg_fd)
            os.fsync(self._seq_fd)
        self._dirty = False

    def close(self) -> None:
        if self._seq_map is not None:
            self._seq_view = self._target_view = None
            try:
                self._seq_map.close()
            except BufferError:          # a view is still referenced: the kernel keeps the data
                pass
            self._seq_map = None
        if self._seq_fd >= 0:
            self.sync()
            os.close(self._seq_fd)
            for fd in self._seg_fds.values():
                os.close(fd)
            self._seg_fds.clear()
            self._seq_fd = self._msg_fd = -1


class MemoryStore:
    """Same interface, nothing persisted (tests and throwaway sessions)."""

    def __init__(self):
        self.index = {}
        self.next_sender = 1
        self.next_target = 1
        self.creation_time = time.time()
        self._msgs = {}

    def set_next_sender(self, n): self.next_sender = n
    def set_next_target(self, n): self.next_target = n

    def sender_view(self):
        import numpy as np
        if getattr(self, "_view", None) is None:
            self._view = np.zeros(20, np.uint8)
        return self._view

    def target_view(self):
        import numpy as np
        if getattr(self, "_tview", None) is None:
            self._tview = np.zeros(20, np.uint8)
        return self._tview

    def note_next_sender(self, n): self.next_sender = n
    def note_next_target(self, n): self.next_target = n
    def incr_next_sender(self): self.next_sender += 1
    def incr_next_target(self): self.next_target += 1

    def save_message(self, seq, raw):
        self._msgs[seq] = raw
        self.index[seq] = (0, len(raw))

    def get_messages(self, begin, end):
        return [(s, self._msgs[s]) for s in sorted(self._msgs) if begin <= s <= end]

    def reset(self, now=None):
        self._msgs.clear()
        self.index.clear()
        self.next_sender = self.next_target = 1
        self.creation_time = time.time() if now is None else now

    def sync(self): pass
    def close(self): pass


class MessageLog:
    """Append-only human-readable log of every frame in and out (SOH shown as '|'), with the
    values of Password (554), NewPassword (925) and RawData (96) replaced by ``***``
    (``wire.redact``). The file is 0600 in a 0700 directory; once it passes ``max_bytes`` it is
    renamed ``<name>.1`` (``.1`` -> ``.2`` ..., ``keep`` old files) and a new one started."""

    def __init__(self, path, max_bytes: int = 32 << 20, keep: int = 3):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        private_dir(self.path.parent)
        self._open()

    def _open(self) -> None:
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        self._f = os.fdopen(fd, "ab", buffering=64 * 1024)
        self._size = os.fstat(fd).st_size

    def _rotate(self) -> None:
        self._f.close()
        # no fsync: the log is for humans, buffered and never fsynced itself (the store is the
        # durable record); a rotation must not stall the session on a disk flush
        for k in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{k}")
            if src.exists():
                fsutil.replace(src, self.path.with_name(f"{self.path.name}.{k + 1}"))
        fsutil.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def write(self, direction: str, now: float, raw: bytes, note: str = "") -> None:
        t = time.gmtime(int(now))
        ts = b"%04d%02d%02d-%02d:%02d:%02d.%06d" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour,
                                                    t.tm_min, t.tm_sec, int((now % 1) * 1e6))
        line = ts + b" " + direction.encode() + b" " + wire.redact(bytes(raw)).replace(b"\x01", b"|")
        if note:
            line += b" # " + note.encode()
        self._f.write(line + b"\n")
        self._size += len(line) + 1
        if self._size >= self.max_bytes:
            self._rotate()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
