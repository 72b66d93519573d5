"""JournalWriter and the file format: round trips, rotation, GAP/RESET frames, refusals."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.journal import (FRAME_DATA, FRAME_END, FRAME_GAP, FRAME_RESET, Journal, JournalError,
                               JournalFile, JournalFormatError, JournalWriter)
from appliance.journal import format as F
from tests.journal.procs import check_rows, make_rows


def _kinds(path):
    return [(fi.kind, fi.first_seq, fi.count) for fi in JournalFile(path).scan().frames]


def test_round_trip_of_one_million_records_across_rotated_files_is_byte_exact(tmp_path):
    n = 1_000_000
    rows = make_rows(0, n)
    with JournalWriter(tmp_path, "md.rt", 64, rotate_bytes=16 << 20, frame_records=4096) as w:
        for i in range(0, n, 1000):          # batches the size ring.drain hands over
            w.append(rows[i:i + 1000])
    assert len(w.paths) == 4                 # 64 MB of records, rotated every 16 MiB
    j = Journal(tmp_path)
    back = j.read_all()
    assert back.shape == rows.shape and np.array_equal(back, rows)
    check_rows(back)
    s = j.stats()
    assert (s["records"], s["first_seq"], s["last_seq"], s["n_files"]) == (n, 0, n - 1, 4)
    assert s["gaps"] == [] and s["lost"] == 0 and s["truncated_files"] == 0
    assert [f["status"] for f in s["files"]] == ["closed"] * 4
    assert [f["file_index"] for f in s["files"]] == [0, 1, 2, 3]
    assert s["compression_ratio"] > 2
    # every file but the last is cut right after the frame that crossed rotate_bytes
    assert all(f["records"] * 64 >= 16 << 20 for f in s["files"][:-1])


def test_file_names_carry_ring_utc_time_and_index(tmp_path):
    ns = 1_700_000_000_123_456_789          # 2023-11-14T22:13:20Z
    with JournalWriter(tmp_path, "orders", 128, clock_ns=lambda: ns, writer_info="test") as w:
        w.append(make_rows(0, 3, 128))
    (p,) = w.paths
    assert p.name == "orders-20231114T221320-000000.zst-journal"
    h = JournalFile(p).header
    assert (h.ring, h.record_size, h.created_ns, h.file_index, h.writer) == ("orders", 128, ns, 0, "test")
    assert F.parse_file_name(p.name) == ("orders", 0)


def test_hole_in_sequences_becomes_gap_frame_with_exact_first_seq_and_count(tmp_path):
    with JournalWriter(tmp_path, "md.gap", 64, frame_records=100) as w:
        w.append(np.concatenate([make_rows(0, 10), make_rows(25, 5)]))   # hole 10..24 in one batch
        w.append(make_rows(30, 5))                                         # 30 follows 29: no gap
        w.append(make_rows(1000, 1))                                       # hole 35..999
    assert (w.gaps, w.lost) == (2, 15 + 965)
    assert _kinds(w.path) == [(FRAME_DATA, 0, 10), (FRAME_GAP, 10, 15), (FRAME_DATA, 25, 10),
                              (FRAME_GAP, 35, 965), (FRAME_DATA, 1000, 1), (FRAME_END, 1001, 21)]
    gaps = Journal(tmp_path).gaps()
    assert [(g.first_seq, g.count, g.kind) for g in gaps] == [(10, 15, "lapped"), (35, 965, "lapped")]


def test_sequence_going_back_becomes_reset_frame_not_loss(tmp_path):
    with JournalWriter(tmp_path, "md.reset", 64) as w:
        w.append(make_rows(500, 10))
        w.append(make_rows(0, 10))           # ring re-created: sequences start again
    assert (w.lost, w.resets) == (0, 1)
    assert _kinds(w.path) == [(FRAME_DATA, 500, 10), (FRAME_RESET, 0, 510), (FRAME_DATA, 0, 10),
                              (FRAME_END, 10, 20)]
    j = Journal(tmp_path)
    assert j.gaps() == [] and j.stats()["resets"] == 1
    assert check_rows(j.read_all()).tolist() == list(range(500, 510)) + list(range(10))


def test_start_at_turns_missing_leading_records_into_a_gap(tmp_path):
    with JournalWriter(tmp_path, "md.start", 64) as w:
        w.start_at(100)
        w.append(make_rows(130, 2))
    assert [(g.first_seq, g.count) for g in Journal(tmp_path).gaps()] == [(100, 30)]
    with pytest.raises(JournalError, match="already expects"):
        w2 = JournalWriter(tmp_path / "b", "md.start", 64)
        w2.append(make_rows(0, 1))
        w2.start_at(5)
    w2.close()


def test_frames_hold_frame_records_each_and_a_partial_frame_is_written_on_flush(tmp_path):
    w = JournalWriter(tmp_path, "md.frames", 64, frame_records=100)
    w.append(make_rows(0, 250))
    assert w.pending == 50 and w.frames == 2
    w.flush()
    assert w.pending == 0 and w.frames == 3
    w.close()
    assert [fi.count for _, fi in Journal(tmp_path).frames() if fi.kind == FRAME_DATA] == [100, 100, 50]


def test_unpublished_or_never_written_record_is_rejected_with_clear_error(tmp_path):
    w = JournalWriter(tmp_path, "md.bad", 64)
    rows = make_rows(0, 4)
    rows.view(np.uint64)[2, 0] = 7              # odd: being written
    with pytest.raises(ValueError, match=r"rows\[2\]: seqlock word 7 is not a published record"):
        w.append(rows)
    with pytest.raises(ValueError, match=r"expected uint8\[n, 64\]"):
        w.append(make_rows(0, 2, 128))
    w.close()
    with pytest.raises(JournalError, match="closed"):
        w.append(make_rows(0, 1))


def test_second_writer_of_the_same_ring_in_the_same_directory_is_refused(tmp_path):
    w = JournalWriter(tmp_path, "md.dup", 64)
    with pytest.raises(JournalError, match="another recorder is writing ring 'md.dup'"):
        JournalWriter(tmp_path, "md.dup", 64)
    JournalWriter(tmp_path, "md.other", 64).close()     # other rings are fine
    w.close()
    JournalWriter(tmp_path, "md.dup", 64).close()       # and the ring once the first is gone


def test_file_index_continues_across_writer_restarts_and_empty_writers_leave_no_file(tmp_path):
    for first in (0, 10):
        with JournalWriter(tmp_path, "md.idx", 64) as w:
            w.append(make_rows(first, 10))
    JournalWriter(tmp_path, "md.idx", 64).close()       # nothing recorded: no file
    files = F.ring_files(tmp_path, "md.idx")
    assert [F.parse_file_name(p.name)[1] for p in files] == [0, 1]
    assert check_rows(Journal(tmp_path).read_all()).tolist() == list(range(20))


@pytest.mark.parametrize("ring,rs", [("", 64), ("a/b", 64), ("x" * 33, 64), ("ok", 60)])
def test_bad_ring_name_or_record_size_is_refused(tmp_path, ring, rs):
    with pytest.raises(ValueError):
        JournalWriter(tmp_path, ring, rs)


def test_file_header_checks_magic_version_and_crc():
    h = F.FileHeader(F.FORMAT_VERSION, 64, 123, 4, 99, "md.x", "host appliance 0.1")
    raw = F.pack_file_header(h)
    assert len(raw) == 128 and F.unpack_file_header(raw) == h
    with pytest.raises(JournalFormatError, match="not a journal file"):
        F.unpack_file_header(b"X" + raw[1:])
    v2 = bytearray(raw)
    struct.pack_into("<H", v2, 8, 2)
    with pytest.raises(JournalFormatError, match="version 2 is not supported"):
        F.unpack_file_header(bytes(v2))
    flipped = bytearray(raw)
    flipped[40] ^= 1
    with pytest.raises(JournalFormatError, match="crc mismatch"):
        F.unpack_file_header(bytes(flipped))
    with pytest.raises(JournalFormatError, match="shorter than"):
        F.unpack_file_header(raw[:100])


def test_frame_header_with_wrong_crc_or_kind_is_not_accepted():
    raw = F.pack_frame_header(FRAME_GAP, 10, 5)
    assert F.unpack_frame_header(raw) == F.FrameHeader(FRAME_GAP, 0, 10, 5, 0, 0, 0)
    bad = bytearray(raw)
    bad[9] ^= 0x40
    assert F.unpack_frame_header(bytes(bad)) is None
    assert F.unpack_frame_header(F.pack_frame_header(9, 0, 0)) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 90)), min_size=1, max_size=25),
       st.integers(1, 64), st.integers(1, 40))
def test_any_stream_of_batches_with_holes_reads_back_exactly_with_exact_gaps(
        tmp_path_factory, batches, frame_records, rotate_records):
    """Batches (skip, n): skip records after the previous batch, then n consecutive records;
    frames and rotation sizes vary. Reading back gives exactly the appended records, and the GAP
    frames exactly the skipped ranges."""
    d = tmp_path_factory.mktemp("prop")
    seq, kept, holes = 0, [], []
    with JournalWriter(d, "md.p", 64, frame_records=frame_records,
                       rotate_bytes=rotate_records * 64) as w:
        for skip, n in batches:
            if skip and kept:
                holes.append((seq, skip))
            seq += skip if kept else 0
            w.append(make_rows(seq, n))
            kept.extend(range(seq, seq + n))
            seq += n
    j = Journal(d)
    assert check_rows(j.read_all()).tolist() == kept
    assert [(g.first_seq, g.count, g.kind) for g in j.gaps()] == [(a, b, "lapped") for a, b in holes]
    s = j.stats()
    assert s["lost"] == sum(b for _, b in holes) and s["records"] == len(kept)
    assert all(f["status"] == "closed" for f in s["files"])


@pytest.mark.parametrize("shuffle", [True, False])
def test_shuffled_and_plain_frames_read_back_identically(tmp_path, shuffle):
    rows = make_rows(0, 777)
    with JournalWriter(tmp_path, "md.sh", 64, frame_records=100, shuffle=shuffle) as w:
        w.append(rows)
    frames = [fi for _, fi in Journal(tmp_path).frames() if fi.kind == FRAME_DATA]
    assert {fi.flags for fi in frames} == {F.FLAG_BYTE_SHUFFLE if shuffle else 0}
    assert np.array_equal(Journal(tmp_path).read_all(), rows)


def test_frame_with_unknown_flags_is_reported_not_misread(tmp_path):
    with JournalWriter(tmp_path, "md.fl", 64, frame_records=10) as w:
        w.append(make_rows(0, 30))
    second = [fi for _, fi in Journal(tmp_path).frames() if fi.kind == FRAME_DATA][1]
    raw = bytearray(w.path.read_bytes())
    hdr = F.pack_frame_header(FRAME_DATA, second.first_seq, second.count, second.usize,
                              second.csize, second.payload_crc, flags=0x80)
    raw[second.offset:second.offset + F.FRAME_HEADER_SIZE] = hdr
    w.path.write_bytes(bytes(raw))
    j = Journal(w.path)
    s = j.stats()
    assert s["corrupt_frames"] == 1 and "unsupported frame flags 0x80" in s["files"][0]["problems"][0]
    assert check_rows(j.read_all()).tolist() == list(range(10)) + list(range(20, 30))
