"""Journal file format v1: constants, header packing and file naming (see the package docstring)."""
from __future__ import annotations

import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
FILE_MAGIC = b"APPJRNL\0"
FRAME_MAGIC = b"AJFR"
FILE_SUFFIX = ".zst-journal"

FILE_HEADER = struct.Struct("<8sHHIQII32s60sI")
FRAME_HEADER = struct.Struct("<4sHHQQIIII")
FILE_HEADER_SIZE = FILE_HEADER.size      # 128
FRAME_HEADER_SIZE = FRAME_HEADER.size    # 40
assert FILE_HEADER_SIZE == 128 and FRAME_HEADER_SIZE == 40

FRAME_DATA = 1
FRAME_GAP = 2
FRAME_RESET = 3
FRAME_END = 4
FRAME_KIND_NAMES = {FRAME_DATA: "DATA", FRAME_GAP: "GAP", FRAME_RESET: "RESET", FRAME_END: "END"}

# DATA frame flags
FLAG_BYTE_SHUFFLE = 1      # payload holds the records transposed: byte k of every record together
KNOWN_FLAGS = FLAG_BYTE_SHUFFLE

RING_NAME_LEN = 32
WRITER_LEN = 60
MAX_FRAME_BYTES = 1 << 31                # a frame's uncompressed payload must stay below this

_NAME_RE = re.compile(r"^(?P<ring>.+)-(?P<ts>\d{8}T\d{6})-(?P<idx>\d{6,})" + re.escape(FILE_SUFFIX) + "$")


class JournalError(Exception):
    """Base class of journal errors."""


class JournalFormatError(JournalError):
    """The file is not a journal file of a supported version (bad magic, version or header)."""


class JournalCorruptError(JournalError):
    """A frame is corrupt or truncated (raised only by readers in strict mode)."""


@dataclass(frozen=True)
class FileHeader:
    version: int
    record_size: int
    created_ns: int
    file_index: int
    writer_pid: int
    ring: str
    writer: str


@dataclass(frozen=True)
class FrameHeader:
    kind: int
    flags: int
    first_seq: int
    count: int
    usize: int
    csize: int
    payload_crc: int


def pack_file_header(h: FileHeader) -> bytes:
    ring = h.ring.encode()
    if not ring or len(ring) > RING_NAME_LEN:
        raise ValueError(f"ring name must be 1..{RING_NAME_LEN} bytes of UTF-8, got {h.ring!r}")
    writer = h.writer.encode()[:WRITER_LEN]
    body = FILE_HEADER.pack(FILE_MAGIC, h.version, FILE_HEADER_SIZE, h.record_size, h.created_ns,
                            h.file_index, h.writer_pid, ring, writer, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_file_header(buf: bytes, where: str = "<bytes>") -> FileHeader:
    """Parse and check a file header; raises JournalFormatError naming what is wrong."""
    if len(buf) < FILE_HEADER_SIZE:
        raise JournalFormatError(f"{where}: file is {len(buf)} bytes, shorter than the "
                                 f"{FILE_HEADER_SIZE}-byte journal header")
    (magic, version, hsize, rsize, created, idx, pid, ring, writer,
     crc) = FILE_HEADER.unpack_from(buf, 0)
    if magic != FILE_MAGIC:
        raise JournalFormatError(f"{where}: not a journal file (magic {magic!r}, want {FILE_MAGIC!r})")
    if version != FORMAT_VERSION:
        raise JournalFormatError(f"{where}: journal format version {version} is not supported "
                                 f"(this reader reads version {FORMAT_VERSION})")
    if zlib.crc32(buf[:FILE_HEADER_SIZE - 4]) != crc:
        raise JournalFormatError(f"{where}: journal file header is corrupt (crc mismatch)")
    if hsize != FILE_HEADER_SIZE or rsize == 0 or rsize % 8:
        raise JournalFormatError(f"{where}: bad header_size {hsize} or record_size {rsize}")
    return FileHeader(version, rsize, created, idx, pid, ring.rstrip(b"\0").decode(errors="replace"),
                      writer.rstrip(b"\0").decode(errors="replace"))


def pack_frame_header(kind: int, first_seq: int, count: int, usize: int = 0, csize: int = 0,
                      payload_crc: int = 0, flags: int = 0) -> bytes:
    body = FRAME_HEADER.pack(FRAME_MAGIC, kind, flags, first_seq, count, usize, csize, payload_crc, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_frame_header(buf, off: int = 0) -> FrameHeader | None:
    """The frame header at ``buf[off:]``, or None if its magic, crc or kind is wrong."""
    magic, kind, flags, first, count, usize, csize, pcrc, hcrc = FRAME_HEADER.unpack_from(buf, off)
    if magic != FRAME_MAGIC or kind not in FRAME_KIND_NAMES:
        return None
    if zlib.crc32(bytes(buf[off:off + FRAME_HEADER_SIZE - 4])) != hcrc:
        return None
    return FrameHeader(kind, flags, first, count, usize, csize, pcrc)


def file_name(ring: str, created_ns: int, file_index: int) -> str:
    ts = time.strftime("%Y%m%dT%H%M%S", time.gmtime(created_ns // 1_000_000_000))
    return f"{ring}-{ts}-{file_index:06d}{FILE_SUFFIX}"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """(ring, file_index) from a journal file name, or None if the name is not one."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return m.group("ring"), int(m.group("idx"))


def ring_files(directory: Path, ring: str | None = None) -> list[Path]:
    """Journal files in ``directory`` (optionally of one ring), ordered by ring then file index."""
    found = []
    for p in Path(directory).iterdir():
        parsed = parse_file_name(p.name)
        if parsed and p.is_file() and (ring is None or parsed[0] == ring):
            found.append((parsed[0], parsed[1], p.name, p))
    return [t[3] for t in sorted(found)]
