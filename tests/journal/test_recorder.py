"""The recorder on real rings: a producer process publishes records whose payload is a function of
their sequence; the recorder journals them; the journal is read back and checked record by record.
When the producer laps a slowed recorder, the journal's GAP frames must account for exactly the
records the ring cursor says were lost, and `journal stats` must report the same count."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from appliance import cli
from appliance.transport import ring
from appliance.journal import FRAME_GAP, Journal, JournalError
from appliance.journal.recorder import Recorder
from tests.journal import procs


def _start_producer(shm_dir, name, capacity, n, burst, pause_s):
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=procs.producer_main,
                    args=(name, str(shm_dir), capacity, n, burst, pause_s, ready, go))
    p.start()
    assert ready.wait(120), "producer did not start"
    return p, go


def _covered(journal: Journal) -> tuple[np.ndarray, list]:
    seqs = procs.check_rows(journal.read_all())
    return seqs, journal.gaps()


@pytest.mark.timeout(240)
def test_recorder_keeping_up_with_producer_process_journals_every_record_in_order(shm_dir, tmp_path):
    n = 300_000
    prod, go = _start_producer(shm_dir, "md.keep", 1 << 19, n, 4096, 0.0005)
    rec = Recorder(["md.keep"], tmp_path, shm_dir=str(shm_dir), frame_records=1024,
                   rotate_bytes=4 << 20)
    assert rec.step() == 0            # attached, nothing published yet
    go.set()
    while prod.is_alive():
        if rec.step() == 0:
            time.sleep(0.0005)
    prod.join(60)
    assert prod.exitcode == 0
    rec.close()
    (st,) = rec.stats()
    assert st["records"] == n and st["lost"] == 0 and st["ring_lost"] == 0
    assert len(st["files_written"]) >= 4          # 19.2 MB of records rotated every 4 MiB
    j = Journal(tmp_path)
    seqs, gaps = _covered(j)
    assert gaps == []
    assert np.array_equal(seqs, np.arange(n, dtype=np.uint64))
    s = j.stats()
    assert (s["records"], s["first_seq"], s["last_seq"], s["lost"]) == (n, 0, n - 1, 0)
    assert all(f["status"] == "closed" for f in s["files"])


@pytest.mark.timeout(240)
def test_lapped_recorder_journals_exact_gaps_equal_to_ring_lost_count_and_stats_reports_them(
        shm_dir, tmp_path, capsys):
    n, capacity = 200_000, 1024
    prod, go = _start_producer(shm_dir, "md.lap", capacity, n, 4096, 0.002)
    rec = Recorder(["md.lap"], tmp_path, shm_dir=str(shm_dir), frame_records=512)
    assert rec.step() == 0
    go.set()
    # the slowed recorder: at most 128 records every 2 ms while each burst is 4 rings long
    while prod.is_alive():
        rec.step(max_records=128)
        time.sleep(0.002)
    prod.join(60)
    assert prod.exitcode == 0
    rec.close()
    (st,) = rec.stats()
    assert st["ring_lost"] > 0, "the producer never lapped the recorder"
    assert st["lost"] == st["ring_lost"], "journal gaps disagree with the ring's lost count"
    assert st["records"] + st["lost"] == n

    j = Journal(tmp_path)
    seqs, gaps = _covered(j)
    assert all(g.kind == "lapped" for g in gaps) and len(gaps) == st["gaps"]
    assert sum(g.count for g in gaps) == st["ring_lost"]
    # records and gaps tile 0..n-1 exactly: nothing lost without a GAP frame saying so
    covered = np.zeros(n, np.int64)
    np.add.at(covered, seqs.astype(np.int64), 1)
    for g in gaps:
        covered[g.first_seq:g.first_seq + g.count] += 1
    assert (covered == 1).all()
    gap_frames = [fi for _, fi in j.frames() if fi.kind == FRAME_GAP]
    assert [(fi.first_seq, fi.count) for fi in gap_frames] == [(g.first_seq, g.count) for g in gaps]

    assert cli.main(["journal", "stats", str(tmp_path), "--json"]) == 0
    (ring_stats,) = json.loads(capsys.readouterr().out)["rings"]
    assert ring_stats["lost"] == st["ring_lost"]
    assert ring_stats["records"] == st["records"]
    assert ring_stats["unrecorded"] == 0


def test_recorder_attaches_to_a_ring_created_after_it_started(shm_dir, tmp_path):
    rec = Recorder(["md.late"], tmp_path, shm_dir=str(shm_dir), attach_retry_ms=0)
    assert rec.step() == 0 and rec.stats()[0]["attached"] is False
    w = ring.RingWriter.create("md.late", 64, 64, shm_dir=str(shm_dir))
    rows = procs.make_rows(0, 10)
    assert rec.step() == 0            # attaches
    for i in range(10):
        w.publish(rows[i])
    assert rec.step() == 10
    rec.close()
    w.close()
    seqs = procs.check_rows(Journal(tmp_path).read_all())
    assert seqs.tolist() == list(range(10))


def test_recorder_flushes_a_partial_frame_once_the_ring_is_idle_for_flush_ms(shm_dir, tmp_path):
    now = [100.0]
    w = ring.RingWriter.create("md.idle", 64, 64, shm_dir=str(shm_dir))
    rec = Recorder(["md.idle"], tmp_path, shm_dir=str(shm_dir), frame_records=1000, flush_ms=200,
                   clock=lambda: now[0])
    rec.step()
    rows = procs.make_rows(0, 5)
    for i in range(5):
        w.publish(rows[i])
    assert rec.step() == 5
    assert list(tmp_path.glob("*.zst-journal")) == []     # 5 of 1000 records: still buffered
    now[0] += 0.1
    rec.step()
    assert list(tmp_path.glob("*.zst-journal")) == []
    now[0] += 0.15
    rec.step()
    (path,) = tmp_path.glob("*.zst-journal")
    j = Journal(path)
    assert j.stats()["records"] == 5 and j.stats()["files"][0]["status"] == "open"
    rec.close()
    w.close()
    assert Journal(path).stats()["files"][0]["status"] == "closed"


def test_recorder_continues_without_gap_when_the_ring_writer_restarts(shm_dir, tmp_path):
    rows = procs.make_rows(0, 10)
    w = ring.RingWriter.create("md.rs", 64, 64, shm_dir=str(shm_dir))
    rec = Recorder(["md.rs"], tmp_path, shm_dir=str(shm_dir))
    rec.step()
    for i in range(5):
        w.publish(rows[i])
    assert rec.step() == 5
    w.close()
    w = ring.RingWriter.create("md.rs", 64, 64, shm_dir=str(shm_dir))   # continues at seq 5
    for i in range(5, 10):
        w.publish(rows[i])
    assert rec.step() == 5
    rec.close()
    w.close()
    j = Journal(tmp_path)
    assert procs.check_rows(j.read_all()).tolist() == list(range(10))
    assert j.gaps() == [] and j.stats()["resets"] == 0


def test_recorder_notices_a_re_created_ring_and_journals_the_sequence_reset(shm_dir, tmp_path):
    w = ring.RingWriter.create("md.new", 64, 64, shm_dir=str(shm_dir))
    rec = Recorder(["md.new"], tmp_path, shm_dir=str(shm_dir), attach_retry_ms=0)
    rec.step()
    rows = procs.make_rows(0, 8)
    for i in range(8):
        w.publish(rows[i])
    assert rec.step() == 8
    w.close()
    os.unlink(shm_dir / "md.new")
    w = ring.RingWriter.create("md.new", 64, 64, shm_dir=str(shm_dir))  # fresh ring: seq 0 again
    for i in range(3):
        w.publish(rows[i])
    assert rec.step() == 3            # notices the new file, re-attaches, reads the fresh ring
    rec.close()
    w.close()
    j = Journal(tmp_path)
    assert procs.check_rows(j.read_all()).tolist() == list(range(8)) + [0, 1, 2]
    assert j.stats()["resets"] == 1 and j.gaps() == []


def test_restarted_recorder_resumes_after_the_last_journalled_record_without_duplicates(shm_dir, tmp_path):
    w = ring.RingWriter.create("md.resume", 64, 256, shm_dir=str(shm_dir))
    rows = procs.make_rows(0, 700)
    for i in range(100):
        w.publish(rows[i])
    with Recorder(["md.resume"], tmp_path, shm_dir=str(shm_dir)) as rec:
        assert rec.step() == 100                    # attaches and drains in one step
    for i in range(100, 150):                       # published while no recorder runs
        w.publish(rows[i])
    with Recorder(["md.resume"], tmp_path, shm_dir=str(shm_dir)) as rec:
        assert rec.step() == 50
    assert procs.check_rows(Journal(tmp_path).read_all()).tolist() == list(range(150))
    for i in range(150, 700):                       # the ring (256) overwrites 150..443 meanwhile
        w.publish(rows[i])
    with Recorder(["md.resume"], tmp_path, shm_dir=str(shm_dir)) as rec:
        assert rec.step() == 255
    (st,) = rec.stats()
    assert st["lost"] == st["ring_lost"] == 700 - 256 + 1 - 150
    j = Journal(tmp_path)
    assert [(g.first_seq, g.count, g.kind) for g in j.gaps()] == [(150, 295, "lapped")]
    assert procs.check_rows(j.read_all()).tolist() == list(range(150)) + list(range(445, 700))
    w.close()


def test_a_slow_trickle_of_records_reaches_disk_within_flush_ms(shm_dir, tmp_path):
    now = [0.0]
    w = ring.RingWriter.create("md.trickle", 64, 64, shm_dir=str(shm_dir))
    rec = Recorder(["md.trickle"], tmp_path, shm_dir=str(shm_dir), frame_records=1000,
                   flush_ms=200, clock=lambda: now[0])
    rows = procs.make_rows(0, 20)
    written = []
    for i in range(20):                 # one record every 50 ms: the frame never fills
        w.publish(rows[i])
        assert rec.step() == 1
        files = list(tmp_path.glob("*.zst-journal"))
        written.append(Journal(files[0]).stats()["records"] if files else 0)
        now[0] += 0.05
    rec.close()
    w.close()
    # on disk at most 200 ms (4 records) behind the ring, at every step
    assert all(i + 1 - n <= 5 for i, n in enumerate(written)), written
    assert written[-1] >= 15


def test_second_recorder_for_the_same_ring_and_directory_fails_clearly_and_frees_its_slot(shm_dir, tmp_path):
    w = ring.RingWriter.create("md.two", 64, 64, shm_dir=str(shm_dir))
    first = Recorder(["md.two"], tmp_path, shm_dir=str(shm_dir))
    first.step()
    second = Recorder(["md.two"], tmp_path, shm_dir=str(shm_dir))
    with pytest.raises(JournalError, match="another recorder is writing ring 'md.two'"):
        second.step()
    assert [c["name"] for c in ring.consumers(w.hdr)] == ["recorder"]
    second.close()
    first.close()
    w.close()


def test_writer_restart_while_the_recorder_is_lapped_keeps_journal_and_ring_lost_counts_equal(
        shm_dir, tmp_path):
    rows = procs.make_rows(0, 200)
    w = ring.RingWriter.create("md.rl", 64, 64, shm_dir=str(shm_dir))
    rec = Recorder(["md.rl"], tmp_path, shm_dir=str(shm_dir))
    for i in range(10):
        w.publish(rows[i])
    assert rec.step() == 10
    w.close()
    w = ring.RingWriter.create("md.rl", 64, 64, shm_dir=str(shm_dir))
    for i in range(10, 200):                          # laps the recorder: 10..136 are gone
        w.publish(rows[i])
    rec.step()
    rec.close()
    w.close()
    (st,) = rec.stats()
    assert st["lost"] == st["ring_lost"] == 200 - 64 + 1 - 10
    j = Journal(tmp_path)
    assert [(g.first_seq, g.count) for g in j.gaps()] == [(10, 127)]
    assert procs.check_rows(j.read_all()).tolist() == list(range(10)) + list(range(137, 200))
