"""JournalWriter: appends batches of ring records of one ring to rotating journal files.

The writer works on whole batches (``uint8[n, record_size]`` arrays straight out of
``ring.drain``): sequence continuity is checked with numpy over the batch, records are copied into
one frame buffer with slice assignment, and a full buffer becomes one zstd frame written with one
system call. Python never loops per record.

A hole in the sequences (the recorder was lapped) becomes a GAP frame with the exact first missing
sequence and count; a sequence that goes backwards (the ring was re-created) becomes a RESET frame.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import zlib
from pathlib import Path

import numpy as np
import zstandard

from .format import (FLAG_BYTE_SHUFFLE, FORMAT_VERSION, FRAME_DATA, FRAME_END, FRAME_GAP,
                     FRAME_RESET, MAX_FRAME_BYTES, RING_NAME_LEN, FileHeader,
                     JournalError, file_name, pack_file_header, pack_frame_header, parse_file_name)

log = logging.getLogger("appliance.journal")


def _writer_info() -> str:
    try:
        from importlib.metadata import version
        ver = version("appliance")
    except Exception:  # noqa: BLE001 - metadata missing in a source checkout: still write a journal
        ver = "?"
    return f"{socket.gethostname()} appliance {ver}"


class JournalWriter:
    """Writes the records of one ring into ``directory`` (see the package docstring for the format).

    ``append(rows)`` takes published records (seqlock word ``ver`` = 2*seq+2) in ring order.
    ``shuffle`` stores DATA frames byte-transposed (FLAG_BYTE_SHUFFLE: better and faster
    compression of fixed-layout records).
    ``flush()`` writes the partial frame (call it when the ring goes idle so a crash loses at most
    the last moments); ``close()`` flushes, writes the END frame and fsyncs. Files are created
    lazily, so a ring that never publishes leaves no empty file behind.
    """

    def __init__(self, directory: str | os.PathLike, ring: str, record_size: int, *,
                 rotate_bytes: int = 256 << 20, zstd_level: int = 3, frame_records: int = 4096,
                 shuffle: bool = True, writer_info: str | None = None, clock_ns=time.time_ns,
                 fsync: bool = True):
        if not ring or "/" in ring or "\0" in ring or len(ring.encode()) > RING_NAME_LEN:
            raise ValueError(f"ring name {ring!r}: must be 1..{RING_NAME_LEN} bytes without '/'")
        if record_size <= 0 or record_size % 8:
            raise ValueError(f"record_size {record_size}: must be a positive multiple of 8")
        if frame_records <= 0 or frame_records * record_size >= MAX_FRAME_BYTES:
            raise ValueError(f"frame_records {frame_records}: must be > 0 and keep a frame < 2 GiB")
        if rotate_bytes <= 0:
            raise ValueError(f"rotate_bytes {rotate_bytes}: must be > 0")
        if not -7 <= zstd_level <= 22:
            raise ValueError(f"zstd_level {zstd_level}: must be in -7..22")
        self.directory = Path(directory)
        self.ring = ring
        self.record_size = record_size
        self.rotate_bytes = rotate_bytes
        self.frame_records = frame_records
        self._info = writer_info if writer_info is not None else _writer_info()
        self._clock_ns = clock_ns
        self._fsync = fsync
        self._flags = FLAG_BYTE_SHUFFLE if shuffle else 0
        self._cctx = zstandard.ZstdCompressor(level=zstd_level)
        self._buf = np.zeros((frame_records, record_size), np.uint8)
        self._n = 0                    # records pending in _buf
        self._buf_first = 0            # sequence of _buf[0]
        self.next_seq: int | None = None   # sequence expected next (None until known)
        self._f = None                 # open file (raw, unbuffered)
        self._written_next = 0         # sequence after the last frame written
        self._file_records = 0
        self._file_ubytes = 0
        self.path: Path | None = None  # current file
        self.paths: list[Path] = []    # every file this writer created
        self.records = 0
        self.frames = 0
        self.gaps = 0
        self.lost = 0
        self.resets = 0
        self.ubytes = 0
        self.cbytes = 0
        self.closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.directory / f".{ring}.lock", "a+b")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise JournalError(f"another recorder is writing ring {ring!r} in {self.directory}") from None
        existing = [parse_file_name(p.name) for p in self.directory.iterdir()]
        idx = [i for r, i in filter(None, existing) if r == ring]
        self._next_index = max(idx) + 1 if idx else 0

    # --- appending ------------------------------------------------------------------------------
    def start_at(self, seq: int) -> None:
        """Declare the sequence the first appended record should have (records before it that do
        not arrive are then journalled as a GAP). Only valid before the first record."""
        if self.next_seq is not None:
            raise JournalError(f"start_at({seq}): the writer already expects sequence {self.next_seq}")
        self.next_seq = int(seq)

    def append(self, rows: np.ndarray) -> None:
        """Journal ``rows`` (uint8[n, record_size], published records in ring order)."""
        self._check_open()
        if rows.ndim != 2 or rows.shape[1] != self.record_size or rows.dtype != np.uint8:
            raise ValueError(f"rows: expected uint8[n, {self.record_size}], "
                             f"got {rows.dtype}{list(rows.shape)}")
        n = rows.shape[0]
        if n == 0:
            return
        rows = np.ascontiguousarray(rows)
        vers = rows.view("<u8")[:, 0]
        bad = np.flatnonzero((vers == 0) | (vers & np.uint64(1) != 0))
        if bad.size:
            raise ValueError(f"rows[{bad[0]}]: seqlock word {int(vers[bad[0]])} is not a published "
                             "record (0 = never written, odd = being written)")
        seqs = vers // np.uint64(2) - np.uint64(1)
        breaks = np.flatnonzero(np.diff(seqs) != np.uint64(1)) + 1
        start = 0
        for end in (*breaks.tolist(), n):
            self._append_run(rows[start:end], int(seqs[start]))
            start = end

    def _append_run(self, rows: np.ndarray, first: int) -> None:
        expected = self.next_seq
        if expected is not None and first != expected:
            self._flush_frame()
            if first > expected:
                self._write_marker(FRAME_GAP, expected, first - expected)
                self.gaps += 1
                self.lost += first - expected
                log.warning("journal %s: lapped, lost records %d..%d (%d)", self.ring, expected,
                            first - 1, first - expected)
            else:
                self._write_marker(FRAME_RESET, first, expected)
                self.resets += 1
                log.warning("journal %s: sequence went back from %d to %d (ring re-created)",
                            self.ring, expected, first)
        n = rows.shape[0]
        i = 0
        while i < n:
            if self._n == 0:
                self._buf_first = first + i
            take = min(self.frame_records - self._n, n - i)
            self._buf[self._n:self._n + take] = rows[i:i + take]
            self._n += take
            i += take
            if self._n == self.frame_records:
                self._flush_frame()
        self.next_seq = first + n

    def flush(self) -> None:
        """Write the pending partial frame (if any) to the file."""
        self._check_open()
        self._flush_frame()

    def sync(self) -> None:
        """flush() and fsync the current file."""
        self.flush()
        if self._f is not None:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        """Flush, end the current file with an END frame, fsync, release the ring lock."""
        if self.closed:
            return
        try:
            self._flush_frame()
            self._close_file()
        finally:
            self.closed = True
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Records buffered but not yet written."""
        return self._n

    def stats(self) -> dict:
        return {"ring": self.ring, "records": self.records, "frames": self.frames, "gaps": self.gaps,
                "lost": self.lost, "resets": self.resets, "files": len(self.paths),
                "uncompressed_bytes": self.ubytes, "compressed_bytes": self.cbytes,
                "next_seq": self.next_seq, "pending": self._n}

    # --- internals ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise JournalError(f"journal writer of ring {self.ring!r} is closed")

    def _flush_frame(self) -> None:
        n = self._n
        if n == 0:
            return
        raw = self._buf[:n]
        src = np.ascontiguousarray(raw.T) if self._flags & FLAG_BYTE_SHUFFLE else raw
        payload = self._cctx.compress(src.data)
        hdr = pack_frame_header(FRAME_DATA, self._buf_first, n, raw.nbytes, len(payload),
                                zlib.crc32(payload), self._flags)
        self._write(hdr, payload)
        self._n = 0
        self._written_next = self._buf_first + n
        self.records += n
        self.frames += 1
        self.ubytes += raw.nbytes
        self.cbytes += len(payload)
        self._file_records += n
        self._file_ubytes += raw.nbytes
        if self._file_ubytes >= self.rotate_bytes:
            self._close_file()

    def _write_marker(self, kind: int, first: int, count: int) -> None:
        self._write(pack_frame_header(kind, first, count))
        self._written_next = first + count if kind == FRAME_GAP else first

    def _write(self, hdr: bytes, payload: bytes = b"") -> None:
        if self._f is None:
            self._open_file()
        # header and payload in one system call, so a concurrent reader rarely sees half a frame
        self._write_all([hdr, payload])

    def _write_all(self, chunks) -> None:
        parts = [memoryview(c) for c in chunks if len(c)]
        while parts:
            written = os.writev(self._f.fileno(), parts)
            while parts and written >= len(parts[0]):
                written -= len(parts[0])
                parts.pop(0)
            if parts:
                parts[0] = parts[0][written:]

    def _open_file(self) -> None:
        while True:
            created = self._clock_ns()
            path = self.directory / file_name(self.ring, created, self._next_index)
            header = FileHeader(FORMAT_VERSION, self.record_size, created, self._next_index,
                                os.getpid(), self.ring, self._info)
            self._next_index += 1
            try:
                f = open(path, "xb", buffering=0)
            except FileExistsError:
                continue
            break
        self._f = f
        self._write_all([pack_file_header(header)])
        self.path = path
        self.paths.append(path)
        self._file_records = 0
        self._file_ubytes = 0
        log.info("journal %s: writing %s", self.ring, path)

    def _close_file(self) -> None:
        if self._f is None:
            return
        f = self._f
        self._write(pack_frame_header(FRAME_END, self._written_next, self._file_records))
        if self._fsync:
            os.fsync(f.fileno())
        f.close()
        self._f = None
        log.info("journal %s: closed %s (%d records)", self.ring, self.path, self._file_records)

