"""The journal: ring records persisted to rotating, zstd-compressed, seekable files.

A recorder attaches to rings as an ordinary (passive) consumer and writes every record it sees,
byte for byte, into per-ring journal files; a record is missing from a journal only when the
recorder was lapped by the ring's producer, and then the exact hole (first missing sequence and
count) is written into the journal as a GAP frame and reported by ``appliance journal stats``.

Modules: :mod:`.format` (the on-disk format, below), :mod:`.writer` (:class:`JournalWriter`),
:mod:`.reader` (:class:`JournalFile`, :class:`Journal`), :mod:`.recorder` (the recorder actor).

File format, version 1
======================

All integers little-endian. A journal file holds the records of ONE ring::

    file    := file_header frame*
    frame   := frame_header payload          (payload is empty for every kind but DATA)

File header (128 bytes)::

    off  size  field
    0    8     magic          b"APPJRNL\\0"
    8    2     version        1
    10   2     header_size    128
    12   4     record_size    bytes per record (64 or 128)
    16   8     created_ns     CLOCK_REALTIME ns when the file was opened
    24   4     file_index     position of the file in its ring's sequence of files (0, 1, ...)
    28   4     writer_pid
    32   32    ring           ring name, UTF-8, NUL-padded
    64   60    writer         writer description (host, program version), UTF-8, NUL-padded
    124  4     header_crc     crc32 of bytes 0..123

Frame header (40 bytes), before every frame::

    off  size  field
    0    4     magic          b"AJFR"
    4    2     kind           FRAME_DATA / FRAME_GAP / FRAME_RESET / FRAME_END
    6    2     flags          DATA: FLAG_BYTE_SHUFFLE (1) or 0; other kinds: 0
    8    8     first_seq      DATA: ring sequence of the first record; GAP: first missing
                              sequence; RESET: first sequence after the reset; END: next sequence
    16   8     count          DATA: records in the frame; GAP: records lost; RESET: the sequence
                              that was expected instead; END: DATA records in the file
    24   4     usize          uncompressed payload bytes (= count * record_size for DATA, else 0)
    28   4     csize          compressed payload bytes that follow the header (0 if no payload)
    32   4     payload_crc    crc32 of the compressed payload (0 if no payload)
    36   4     header_crc     crc32 of bytes 0..35 of this header

Frame kinds:

* DATA (1): one independent zstd frame holding ``count`` records with CONSECUTIVE ring sequences
  ``first_seq .. first_seq+count-1``, stored exactly as they were in the ring (seqlock word
  included, so ``records.record_seq(ver)`` of every record is its sequence). Independent frames
  let a reader seek to any frame by walking the 40-byte headers, and a torn tail loses only the
  frame being written. With FLAG_BYTE_SHUFFLE the decompressed payload is the frame's
  ``uint8[count, record_size]`` array transposed (``uint8[record_size, count]``: byte k of every
  record together), which compresses fixed-layout records about twice as well and faster.
  Unknown flags make the frame unreadable (reported as corrupt), never misread.
* GAP (2): the recorder was lapped: records ``first_seq .. first_seq+count-1`` are lost for good.
* RESET (3): the ring's sequence went backwards (the ring was re-created with a fresh sequence):
  records continue at ``first_seq`` where ``count`` was expected. Nothing is known lost.
* END (4): the writer closed the file cleanly (rotation or shutdown). A file without END was not
  closed (writer still running, or killed); a file whose last frame is cut short is TRUNCATED.

Integrity: a frame header whose magic or header_crc is wrong, or whose payload crc or size does
not match, is CORRUPT; the reader counts it, logs it and resynchronises at the next valid frame
header. A frame that runs past the end of the file is TRUNCATED (only possible at the tail).

File names: ``<ring>-<YYYYmmddTHHMMSS>-<file_index:06d>.zst-journal`` in the journal directory
(UTC time of creation). A file is rotated once it holds ``journal.rotate_bytes`` uncompressed
bytes; the next file continues the index (also across recorder restarts).
"""
from __future__ import annotations

from .format import (FILE_SUFFIX, FLAG_BYTE_SHUFFLE, FORMAT_VERSION, FRAME_DATA, FRAME_END, FRAME_GAP, FRAME_RESET,
                     JournalCorruptError, JournalError, JournalFormatError)
from .reader import FileScan, FrameInfo, Gap, Journal, JournalFile, decode_records, record_view
from .writer import JournalWriter

__all__ = [
    "FILE_SUFFIX", "FLAG_BYTE_SHUFFLE", "FORMAT_VERSION", "FRAME_DATA", "FRAME_END", "FRAME_GAP", "FRAME_RESET",
    "JournalError", "JournalFormatError", "JournalCorruptError", "JournalWriter", "JournalFile",
    "Journal", "FileScan", "FrameInfo", "Gap", "decode_records", "record_view",
]
