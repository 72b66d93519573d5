"""Reading journals: truncated and corrupt files are reported (never a crash), seeking, decoding."""
from __future__ import annotations

import os

import numpy as np
import pytest

from appliance.transport import records as R
from appliance.journal import (FRAME_DATA, Journal, JournalCorruptError, JournalError, JournalFile,
                               JournalFormatError, JournalWriter, decode_records, record_view)
from appliance.journal import format as F
from tests.journal.procs import check_rows, make_rows


def _journal(tmp_path, n=1000, frame_records=100, close=True, ring="md.t"):
    w = JournalWriter(tmp_path, ring, 64, frame_records=frame_records)
    w.append(make_rows(0, n))
    if close:
        w.close()
    else:
        w.flush()
    return w


def _data_frames(path):
    return [fi for fi in JournalFile(path).scan().frames if fi.kind == FRAME_DATA]


@pytest.mark.parametrize("cut", ["mid_payload", "mid_frame_header", "end_frame_header_only"])
def test_truncated_file_is_reported_and_every_complete_frame_still_reads(tmp_path, cut):
    w = _journal(tmp_path, close=False)         # writer killed: no END frame
    path = w.path
    frames = _data_frames(path)
    last = frames[-1]
    size = {"mid_payload": last.offset + F.FRAME_HEADER_SIZE + last.csize // 2,
            "mid_frame_header": last.offset + 17,
            "end_frame_header_only": last.offset + F.FRAME_HEADER_SIZE}[cut]
    os.truncate(path, size)
    j = Journal(path)
    s = j.stats()
    assert s["truncated_files"] == 1 and s["files"][0]["status"] == "truncated"
    assert "truncated" in s["files"][0]["problems"][0]
    assert s["records"] == 900 and s["last_seq"] == 899
    assert check_rows(j.read_all()).tolist() == list(range(900))
    with pytest.raises(JournalCorruptError, match="truncated"):
        list(Journal(path, strict=True).batches())
    w.close()


def test_file_of_a_killed_writer_reads_as_open_not_truncated(tmp_path):
    w = _journal(tmp_path, close=False)
    s = Journal(w.path).stats()
    assert s["files"][0]["status"] == "open" and s["truncated_files"] == 0 and s["open_files"] == 1
    assert s["records"] == 1000
    w.close()
    assert Journal(w.path).stats()["files"][0]["status"] == "closed"


def test_corrupt_payload_is_counted_skipped_and_shown_as_unrecorded_gap(tmp_path):
    w = _journal(tmp_path)
    third = _data_frames(w.path)[2]
    with open(w.path, "r+b") as f:
        f.seek(third.offset + F.FRAME_HEADER_SIZE + 5)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    j = Journal(w.path)
    seqs = check_rows(j.read_all())
    assert j.corrupt_frames == 1
    assert seqs.tolist() == list(range(200)) + list(range(300, 1000))
    s = Journal(w.path).stats()               # verify=True: the crc check finds it while scanning
    assert s["corrupt_frames"] == 1 and s["records"] == 900
    assert "payload crc mismatch" in s["files"][0]["problems"][0]
    assert s["gaps"] == [{"first_seq": 200, "count": 100, "kind": "unrecorded", "path": str(w.path)}]
    assert s["lost"] == 0 and s["unrecorded"] == 100
    with pytest.raises(JournalCorruptError, match="crc mismatch"):
        list(Journal(w.path, strict=True).batches())


def test_corrupt_frame_header_resynchronises_at_the_next_frame(tmp_path):
    w = _journal(tmp_path)
    second = _data_frames(w.path)[1]
    with open(w.path, "r+b") as f:
        f.seek(second.offset + 8)             # first_seq field: header crc no longer matches
        f.write(b"\xff\xff")
    j = Journal(w.path)
    s = j.stats()
    assert s["corrupt_frames"] == 1 and s["files"][0]["skipped_bytes"] == F.FRAME_HEADER_SIZE + second.csize
    assert s["records"] == 900 and s["files"][0]["status"] == "closed"
    assert check_rows(j.read_all()).tolist() == list(range(100)) + list(range(200, 1000))


def test_garbage_appended_after_the_end_frame_is_reported_without_losing_records(tmp_path):
    w = _journal(tmp_path)
    with open(w.path, "ab") as f:
        f.write(b"garbage!" * 375)
    s = Journal(w.path).stats()
    assert s["records"] == 1000 and s["corrupt_frames"] == 1
    assert s["files"][0]["skipped_bytes"] == 3000 and s["files"][0]["status"] == "closed"


def test_seek_starts_at_the_requested_sequence_inside_a_frame(tmp_path):
    w = JournalWriter(tmp_path, "md.seek", 64, frame_records=100, rotate_bytes=300 * 64)
    w.append(make_rows(0, 500))
    w.append(make_rows(600, 100))
    w.close()
    j = Journal(tmp_path)
    first = next(j.seek(250))
    assert check_rows(first).tolist() == list(range(250, 300))
    after = check_rows(np.concatenate(list(j.seek(450)))).tolist()
    assert after == list(range(450, 500)) + list(range(600, 700))
    # a sequence inside a gap starts at the first record after it
    assert int(check_rows(next(j.seek(550)))[0]) == 600
    assert list(j.seek(10_000)) == []


def test_records_are_structured_header_views_and_decode_uses_the_schema_dtypes(tmp_path):
    rows = np.zeros((3, 64), np.uint8)
    l2 = rows[0:1].view(R.L2_UPDATE)
    l2["ver"], l2["rtype"], l2["price"], l2["qty"], l2["side"] = 2, R.RT_L2_UPDATE, 101, 7, R.SIDE_BUY
    tr = rows[1:2].view(R.TRADE)
    tr["ver"], tr["rtype"], tr["price"], tr["trade_id"] = 4, R.RT_TRADE, 99, 555
    rows[2].view(np.uint64)[0] = 6
    rows[2, 8] = 200                             # unknown record type
    with JournalWriter(tmp_path, "md.dec", 64) as w:
        w.append(rows)
    (batch,) = Journal(tmp_path).records()
    assert batch["rtype"].tolist() == [R.RT_L2_UPDATE, R.RT_TRADE, 200]
    assert batch["ver"].tolist() == [2, 4, 6]
    dec = decode_records(Journal(tmp_path).read_all())
    idx, arr = dec[R.RT_L2_UPDATE]
    assert idx.tolist() == [0] and arr.dtype == R.L2_UPDATE and int(arr[0]["price"]) == 101
    idx, arr = dec[R.RT_TRADE]
    assert int(arr[0]["trade_id"]) == 555
    assert dec[200][1] is None
    assert record_view(rows)["rtype"].tolist() == [1, 2, 200]


def test_directory_with_two_rings_needs_a_ring_name(tmp_path):
    _journal(tmp_path, n=10, ring="md.a")
    _journal(tmp_path, n=20, ring="md.b")
    j = Journal(tmp_path)
    assert j.rings() == ["md.a", "md.b"]
    with pytest.raises(JournalError, match="holds rings md.a, md.b: name one"):
        j.read_all()
    assert j.read_all("md.b").shape == (20, 64)
    with pytest.raises(JournalError, match="no journal of ring 'md.c'"):
        j.read_all("md.c")


def test_not_a_journal_or_missing_path_is_a_clear_error(tmp_path):
    p = tmp_path / "x.zst-journal"
    p.write_bytes(b"hello world" * 20)
    with pytest.raises(JournalFormatError, match="not a journal file"):
        Journal(p)
    with pytest.raises(JournalError, match="no such file"):
        Journal(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JournalError, match="no journal files"):
        Journal(tmp_path / "empty")


def test_file_with_only_a_header_has_no_records_and_is_open(tmp_path):
    h = F.FileHeader(F.FORMAT_VERSION, 64, 0, 0, 1, "md.h", "t")
    p = tmp_path / F.file_name("md.h", 0, 0)
    p.write_bytes(F.pack_file_header(h))
    s = Journal(p).stats()
    assert s["records"] == 0 and s["first_seq"] is None and s["files"][0]["status"] == "open"
