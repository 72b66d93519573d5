"""The view's books: rebuilt from md rings written by other processes (feeders and the real md
gateway against the venue simulator), with their sync state."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from appliance import config
from appliance.ops import books
from appliance.transport import records, ring
from tests.ops.conftest import REPO, SYMBOLS, config_text, wait_until


def _px(cfg, sym, ticks):
    return Decimal(ticks) * Decimal(cfg.instrument("binance", sym).tick)


def _q(cfg, sym, lots):
    return Decimal(lots) * Decimal(cfg.instrument("binance", sym).lot)


def _view(w):
    w.poll()
    return {(b["venue"], b["symbol"]): b for b in w.view()}


def _levels(side):
    return [(Decimal(p), Decimal(q)) for p, q in side]


@pytest.fixture
def watcher(ops_cfg, shm_dir):
    cfg = config.load(ops_cfg)
    w = books.BookWatcher(cfg, str(shm_dir))
    w.warm()
    yield cfg, w
    w.close()


def test_snapshot_gives_a_synced_top_five_and_deltas_move_it(ops_cfg, feeders, watcher):
    cfg, w = watcher
    md = feeders(ops_cfg, "md", "binance", "1024")
    md.do("snapshot 0 1000 1001 8", "trade 0 sell 1000 3")
    b = _view(w)[("binance", "NKNUSDT")]
    assert b["state"] == "synced" and b["levels"] == (8, 8) and b["mismatches"] == 0
    assert _levels(b["bids"]) == [(_px(cfg, "NKNUSDT", 1000 - k), _q(cfg, "NKNUSDT", 10 + k))
                                  for k in range(5)]
    assert _levels(b["asks"]) == [(_px(cfg, "NKNUSDT", 1001 + k), _q(cfg, "NKNUSDT", 10 + k))
                                  for k in range(5)]
    assert b["last_trade"]["side"] == "sell"
    assert Decimal(b["last_trade"]["price"]) == _px(cfg, "NKNUSDT", 1000)
    md.do("remove 0 buy 1000", "set 0 sell 1001 77", "set 0 buy 1000 5")
    b = _view(w)[("binance", "NKNUSDT")]
    assert b["state"] == "synced" and b["mismatches"] == 0
    assert _levels(b["bids"])[0] == (_px(cfg, "NKNUSDT", 1000), _q(cfg, "NKNUSDT", 5))
    assert _levels(b["asks"])[0] == (_px(cfg, "NKNUSDT", 1001), _q(cfg, "NKNUSDT", 77))
    others = {k: v["state"] for k, v in _view(w).items() if k[1] != "NKNUSDT"}
    assert set(others.values()) == {"no data"}


def test_invalid_clears_the_book_until_the_next_snapshot(ops_cfg, feeders, watcher):
    cfg, w = watcher
    md = feeders(ops_cfg, "md", "binance", "1024")
    md.do("snapshot 1 500 510 6", f"invalid 1 {records.BR_GAP}")
    b = _view(w)[("binance", "BLZETH")]
    assert b["state"] == "invalid (gap)" and b["bids"] == [] and b["asks"] == []
    md.do("snapshot 1 400 401 3")
    b = _view(w)[("binance", "BLZETH")]
    assert b["state"] == "synced" and b["levels"] == (3, 3)
    assert Decimal(b["bids"][0][0]) == _px(cfg, "BLZETH", 400)


def test_joining_a_lapped_ring_is_partial_until_a_snapshot(ops_cfg, feeders, watcher):
    _, w = watcher
    md = feeders(ops_cfg, "md", "binance", "64")
    md.do("snapshot 2 300 301 5", "noise 2 100")     # the snapshot is overwritten
    b = _view(w)[("binance", "LRCBTC")]
    assert b["state"] == "partial" and b["updates"] > 0
    md.do("snapshot 2 300 301 5")
    b = _view(w)[("binance", "LRCBTC")]
    assert b["state"] == "synced" and b["levels"] == (5, 5)


def test_records_lost_to_lapping_drop_a_synced_book_to_partial(ops_cfg, feeders, watcher):
    _, w = watcher
    md = feeders(ops_cfg, "md", "binance", "64")
    md.do("snapshot 3 300 301 4")
    assert _view(w)[("binance", "RUNEEUR")]["state"] == "synced"
    md.do("noise 3 200")                              # 400 records between two polls
    b = _view(w)[("binance", "RUNEEUR")]
    assert b["ring_lost"] > 0 and b["state"] == "partial"


def test_a_batch_end_that_disagrees_with_the_book_is_a_counted_mismatch(ops_cfg, feeders,
                                                                        watcher):
    _, w = watcher
    md = feeders(ops_cfg, "md", "binance", "1024")
    md.do("snapshot 0 1000 1001 5", "batch 0 1000 1001")
    assert _view(w)[("binance", "NKNUSDT")]["mismatches"] == 0
    md.do("batch 0 999 1001")
    b = _view(w)[("binance", "NKNUSDT")]
    assert b["mismatches"] == 1 and b["state"] == "partial"


def test_a_restarted_md_writer_is_followed(ops_cfg, shm_dir, feeders, watcher):
    cfg, w = watcher
    md = feeders(ops_cfg, "md", "binance", "1024")
    md.do("snapshot 0 1000 1001 5")
    assert _view(w)[("binance", "NKNUSDT")]["state"] == "synced"
    assert md.stop() == 0
    md2 = feeders(ops_cfg, "md", "binance", "1024")
    md2.do("snapshot 0 2000 2001 2")
    b = _view(w)[("binance", "NKNUSDT")]
    assert b["state"] == "synced" and b["levels"] == (2, 2)
    assert Decimal(b["bids"][0][0]) == _px(cfg, "NKNUSDT", 2000)
    r = ring.RingReader.attach("md.binance", consumer="probe", shm_dir=str(shm_dir))
    try:
        mine = [c for c in ring.consumers(r.hdr) if c["name"] == books.CONSUMER]
    finally:
        r.close()
    assert len(mine) == 1 and mine[0]["pid"] == os.getpid() and mine[0]["lag"] == 0


def test_no_md_ring_is_said_per_instrument(ops_cfg, watcher):
    _, w = watcher
    assert {b["state"] for b in _view(w).values()} == {"no md ring"}


@pytest.mark.slow
def test_books_of_the_real_md_gateway_equal_an_offline_replay(tmp_path, shm_dir):
    """`appliance md` against the venue simulator publishes into shm; the view's books, read
    from that ring by this process, are the md gateway's own books (offline replay)."""
    from appliance.sim import venue as sim
    from appliance.sim.venue import VenueSim
    from appliance.venues import replay
    (book_path,) = [p for p in sim.default_recordings("binance") if ".ws." in p.name]
    with VenueSim("binance") as s:
        cfg_path = tmp_path / "appliance.toml"
        text = config_text(shm_dir, tmp_path / "state", "\n[rings]\nmd_capacity = 262144\n")
        text = text.replace("ws://127.0.0.1:1/binance", s.ws_url).replace(
            "http://127.0.0.1:1/binance", s.rest_url)
        cfg_path.write_text(text)
        stats = tmp_path / "stats.json"
        p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg_path), "md",
                              "--venue", "binance", "--stats", str(stats), "--stats-every", "0.2"],
                             cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        cfg = config.load(cfg_path)
        w = books.BookWatcher(cfg, str(shm_dir))
        w.warm()
        try:
            def done():
                assert p.poll() is None, p.stderr.read()[-3000:]
                w.poll()
                try:
                    st = json.loads(stats.read_text())
                except (OSError, ValueError):
                    return False
                return (s.stats.completed >= 1 and st["frames"] >= s.stats.frames_sent
                        and st["books_valid"] == len(SYMBOLS))
            wait_until(done, timeout=240, interval=0.1)
            time.sleep(0.5)
            view = _view(w)
        finally:
            w.close()
            p.terminate()
            p.wait(30)
    offline = replay.run(book_path, "binance")
    for sym in SYMBOLS:
        b = view[("binance", sym)]
        assert b["state"] == "synced" and b["mismatches"] == 0 and b["ring_lost"] == 0, b
        want = offline.top(sym, 5)
        assert _levels(b["bids"]) == [(Decimal(px), Decimal(q)) for px, q in want["bids"]], sym
        assert _levels(b["asks"]) == [(Decimal(px), Decimal(q)) for px, q in want["asks"]], sym
