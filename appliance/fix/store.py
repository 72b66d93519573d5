"""Persistent FIX message store and message log: one directory per session.

Files in the session directory:

- ``seqnums``: ``"<next sender>:<next target>\\n"``, two 20-digit numbers, rewritten in place
  with one ``pwrite`` (a single 42-byte write inside one page: a killed process never leaves
  it half written).
- ``messages``: append-only, one record per sent message: a 24-byte header (magic, seq, length,
  CRC32 of the bytes; little-endian ``<IQII`` + 4 pad) followed by the raw FIX bytes. On open the
  file is scanned to rebuild the in-memory index seq -> (offset, length); a torn last record
  (length or CRC wrong) is truncated away and logged. Later records for the same seq (a resend
  after a reset) replace earlier ones in the index.
- ``session``: the creation time of the current sequence-number period (seconds, text).
- ``messages.log`` (``MessageLog``): every frame in and out, with a UTC timestamp, for humans.

Durability ("fsync policy", ``fsync=``):

- ``"always"``: fsync the file after every write (seqnums and messages);
- ``"batch"`` (default): writes go straight to the kernel with ``os.write`` (no user-space
  buffer, so a kill -9 loses nothing), and ``sync()`` fsyncs both files once; the session calls
  ``sync()`` before it hands a batch of outgoing bytes to the transport, so nothing leaves the
  process that is not on disk;
- ``"none"``: never fsync (survives a process kill, not a power loss).
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_REC = struct.Struct("<IQII4x")
_MAGIC = 0x46495831          # "FIX1"
FSYNC_POLICIES = ("always", "batch", "none")


class StoreError(RuntimeError):
    """The store directory cannot be used (permissions, corrupt seqnums file)."""


class FileStore:
    def __init__(self, directory, fsync: str = "batch"):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.dir = Path(directory)
        self.fsync = fsync
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StoreError(f"cannot create store directory {self.dir}: {e}") from e
        self._seq_fd = os.open(self.dir / "seqnums", os.O_RDWR | os.O_CREAT, 0o600)
        self._msg_fd = os.open(self.dir / "messages", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._dirty = False
        self.index: dict[int, tuple[int, int]] = {}
        self.next_sender = 1
        self.next_target = 1
        self.creation_time = 0.0
        self.truncated_bytes = 0
        self._load()

    # ---- open / recover -----------------------------------------------------------------

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
        size = os.fstat(self._msg_fd).st_size
        off = 0
        while off + _REC.size <= size:
            magic, seq, length, crc = _REC.unpack(os.pread(self._msg_fd, _REC.size, off))
            if magic != _MAGIC or off + _REC.size + length > size:
                break
            data = os.pread(self._msg_fd, length, off + _REC.size)
            if zlib.crc32(data) != crc:
                break
            self.index[seq] = (off + _REC.size, length)
            off += _REC.size + length
        if off < size:
            self.truncated_bytes = size - off
            log.warning("store %s: dropping %d bytes of a torn last record", self.dir, size - off)
            os.ftruncate(self._msg_fd, off)
            os.fsync(self._msg_fd)

    # ---- sequence numbers -----------------------------------------------------------------

    def _write_seqnums(self) -> None:
        os.pwrite(self._seq_fd, b"%020d:%020d\n" % (self.next_sender, self.next_target), 0)
        if self.fsync == "always":
            os.fsync(self._seq_fd)
        else:
            self._dirty = True

    def _write_creation(self, t: float) -> None:
        self.creation_time = t
        p = self.dir / "session"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(f"{t:.6f}\n")
        os.replace(tmp, p)

    def set_next_sender(self, n: int) -> None:
        self.next_sender = n
        self._write_seqnums()

    def set_next_target(self, n: int) -> None:
        self.next_target = n
        self._write_seqnums()

    def incr_next_sender(self) -> None:
        self.set_next_sender(self.next_sender + 1)

    def incr_next_target(self) -> None:
        self.set_next_target(self.next_target + 1)

    # ---- messages -----------------------------------------------------------------------

    def save_message(self, seq: int, raw: bytes) -> None:
        rec = _REC.pack(_MAGIC, seq, len(raw), zlib.crc32(raw)) + raw
        off = os.lseek(self._msg_fd, 0, os.SEEK_END)
        os.write(self._msg_fd, rec)
        self.index[seq] = (off + _REC.size, len(raw))
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
            off, length = self.index[s]
            out.append((s, os.pread(self._msg_fd, length, off)))
        return out

    def reset(self, now: float | None = None) -> None:
        """New sequence-number period: both numbers to 1, stored messages dropped."""
        os.ftruncate(self._msg_fd, 0)
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
        if self._seq_fd >= 0:
            self.sync()
            os.close(self._seq_fd)
            os.close(self._msg_fd)
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
    """Append-only human-readable log of every frame in and out (SOH shown as '|')."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab", buffering=64 * 1024)

    def write(self, direction: str, now: float, raw: bytes, note: str = "") -> None:
        t = time.gmtime(int(now))
        ts = b"%04d%02d%02d-%02d:%02d:%02d.%06d" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour,
                                                    t.tm_min, t.tm_sec, int((now % 1) * 1e6))
        line = ts + b" " + direction.encode() + b" " + raw.replace(b"\x01", b"|")
        if note:
            line += b" # " + note.encode()
        self._f.write(line + b"\n")

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
