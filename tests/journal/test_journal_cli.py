"""`appliance journal stats|cat` and `appliance recorder` as a real process stopped by SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from appliance import cli
from appliance.transport import records as R
from appliance.transport import ring
from appliance.journal import Journal, JournalWriter
from tests.journal.procs import check_rows, make_rows


def _gap_journal(d):
    with JournalWriter(d, "md.cli", 64, frame_records=50) as w:
        w.append(make_rows(0, 120))
        w.append(make_rows(150, 30))
    return w


def test_stats_json_reports_records_gaps_lost_and_compression(tmp_path, capsys):
    _gap_journal(tmp_path)
    assert cli.main(["journal", "stats", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    (s,) = out["rings"]
    assert (s["ring"], s["records"], s["first_seq"], s["last_seq"], s["lost"]) == ("md.cli", 150, 0, 179, 30)
    assert s["gaps"][0] | {"path": None} == {"first_seq": 120, "count": 30, "kind": "lapped", "path": None}
    assert s["frames"] == 4 and s["compression_ratio"] > 1


def test_stats_text_names_gap_and_truncation_and_exits_1_for_a_truncated_file(tmp_path, capsys):
    w = _gap_journal(tmp_path)
    os.truncate(w.path, os.path.getsize(w.path) - 50)
    assert cli.main(["journal", "stats", str(w.path)]) == 1
    out = capsys.readouterr().out
    assert "lost (recorder lapped): 30 in 1 gap(s)" in out
    assert "gap (lapped): 30 records from seq 120 to 149" in out
    assert "truncated files: 1" in out and "! offset" in out


def test_stats_of_a_non_journal_path_exits_2_with_message(tmp_path, capsys):
    (tmp_path / "a.zst-journal").write_bytes(b"nope" * 64)
    assert cli.main(["journal", "stats", str(tmp_path)]) == 2
    assert "not a journal file" in capsys.readouterr().err


def test_cat_json_decodes_records_by_type_with_limit_and_from_seq(tmp_path, capsys):
    rows = np.zeros((4, 64), np.uint8)
    for i in range(4):
        rec = rows[i:i + 1].view(R.TRADE if i % 2 else R.L2_UPDATE)
        rec["ver"] = 2 * i + 2
        rec["rtype"] = R.RT_TRADE if i % 2 else R.RT_L2_UPDATE
        rec["venue"] = R.VENUE_BINANCE
        rec["price"] = 1000 + i
        rec["qty"] = 5
    with JournalWriter(tmp_path, "md.cat", 64) as w:
        w.append(rows)
    assert cli.main(["journal", "cat", str(tmp_path), "--json", "--from-seq", "1", "--limit", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["seq"], d["type"], d["price"], d["venue"]) for d in lines] == \
        [(1, "TRADE", 1001, "binance"), (2, "L2_UPDATE", 1002, "binance")]
    assert "trade_id" in lines[0] and "side" in lines[1]
    assert cli.main(["journal", "cat", str(tmp_path), "--limit", "1"]) == 0
    assert capsys.readouterr().out.startswith("seq=0 type=L2_UPDATE rtype=1 venue=binance")


@pytest.mark.timeout(180)
def test_recorder_process_journals_a_ring_and_closes_cleanly_on_sigterm(shm_dir, tmp_path):
    w = ring.RingWriter.create("md.proc", 64, 4096, shm_dir=str(shm_dir))
    jdir = tmp_path / "journal"
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "recorder", "--rings", "md.proc",
                          "--dir", str(jdir), "--flush-ms", "20"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(c["name"] == "recorder" for c in ring.consumers(w.hdr)):
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline, "recorder never attached"
            time.sleep(0.05)
        rows = make_rows(0, 3000)
        for i in range(3000):
            w.publish(rows[i])
        deadline = time.monotonic() + 60
        while ring.consumers(w.hdr)[0]["position"] < 3000:
            assert time.monotonic() < deadline, "recorder did not drain the ring"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        w.close()
    assert p.returncode == 0, err.decode()
    assert b"3000 records, 0 lost" in err
    j = Journal(jdir)
    assert check_rows(j.read_all()).tolist() == list(range(3000))
    assert [f["status"] for f in j.stats()["files"]] == ["closed"]
