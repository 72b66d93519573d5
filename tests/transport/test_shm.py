"""Region lifecycle across real processes: single writer, restart detection, kill -9 recovery."""
from __future__ import annotations

import multiprocessing as mp
import os
import stat

import numpy as np
import pytest

from appliance.transport import ring, shm
from tests.transport import ringprocs as rp


def _spawn_writer(shm_dir, n, mode, name="r1", capacity=1024):
    ctx = mp.get_context("spawn")
    published = ctx.Event()
    p = ctx.Process(target=rp.writer_then_die, args=(name, str(shm_dir), capacity, n, published, mode))
    p.start()
    assert published.wait(120), "writer process did not publish"
    return p


def test_second_writer_is_refused_while_the_first_lives(shm_dir):
    p = _spawn_writer(shm_dir, 10, "hold")
    try:
        with pytest.raises(shm.WriterAliveError, match=f"pid {p.pid}"):
            ring.RingWriter.create("r1", 64, 1024)
    finally:
        p.kill()
        p.join()


def test_region_of_a_writer_killed_with_sigkill_reopens_and_continues_its_sequence(shm_dir):
    p = _spawn_writer(shm_dir, 700, "kill")
    p.join(30)
    assert p.exitcode == -9
    reader = ring.RingReader.attach("r1", "after-crash", start="oldest")
    w = ring.RingWriter.create("r1", 64, 1024)        # no WriterAliveError: the flock died with it
    assert w.head == 700
    rec = np.zeros(64, np.uint8)
    for _ in range(5):
        w.publish(rec)
    out = np.zeros(64, np.uint8)
    seqs = []
    while reader.poll(out):
        seqs.append(int(out.view(np.uint64)[0]) // 2 - 1)
    assert seqs == list(range(0, 705)) and reader.lost == 0
    assert reader.writer_restarted()
    w.close()
    reader.close()


def test_reader_notices_a_writer_restart_and_resynchronises(shm_dir):
    w = ring.RingWriter.create("r2", 64, 64)
    r = ring.RingReader.attach("r2", "c")
    assert not r.writer_restarted()
    w.close()
    w2 = ring.RingWriter.create("r2", 64, 64)
    assert r.writer_restarted()
    r.resync("latest")
    assert not r.writer_restarted()
    w2.close()
    r.close()


def test_region_with_changed_geometry_is_replaced_and_old_readers_see_it_retired(shm_dir):
    w = ring.RingWriter.create("r3", 64, 64)
    r = ring.RingReader.attach("r3", "c")
    w.close()
    w2 = ring.RingWriter.create("r3", 128, 64)
    assert r.writer_restarted()                    # the old mapping is marked retired
    assert int(w2.region.words[shm.W_RECORD_SIZE]) == 128
    w2.close()
    r.close()


def test_region_files_are_group_or_owner_only(shm_dir):
    w = ring.RingWriter.create("shared", 64, 64)
    p = ring.RingWriter.create("private", 64, 64, private=True)
    assert stat.S_IMODE(os.stat(shm_dir / "shared").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(shm_dir / "private").st_mode) == 0o600
    w.close()
    p.close()


def test_attach_to_missing_or_foreign_file_gives_a_clear_error(shm_dir):
    with pytest.raises(shm.ShmError, match="does not exist"):
        ring.RingReader.attach("nope")
    (shm_dir / "junk").write_bytes(b"x" * 8192)
    with pytest.raises(shm.ShmError, match="bad magic"):
        ring.RingReader.attach("junk")


def test_consumers_attach_at_oldest_or_latest_and_detach(shm_dir):
    w = ring.RingWriter.create("r4", 64, 16)
    rec = np.zeros(64, np.uint8)
    for _ in range(40):
        w.publish(rec)
    old = ring.RingReader.attach("r4", "old", start="oldest")
    new = ring.RingReader.attach("r4", "new", start="latest")
    assert old.position == 40 - 16 + 1 and new.position == 40
    names = {c["name"] for c in ring.consumers(w.hdr)}
    assert names == {"old", "new"}
    new.close()
    assert {c["name"] for c in ring.consumers(w.hdr)} == {"old"}
    old.close()
    w.close()
