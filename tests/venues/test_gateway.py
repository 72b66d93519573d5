"""The md gateway against the venue simulator over real loopback WebSockets: reconnect and
resubscribe, garbage, gaps, stale feeds, snapshot failures, and the `appliance md` process
publishing into a shared-memory ring that this (another) process reads."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from appliance.transport import records, ring, shm
from appliance.venues import common, gateway
from appliance.sim import venue as sim
from appliance.sim.venue import Faults, VenueSim
from tests.configs import instruments_toml

KRAKEN_PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT",
                "OMG/USD", "XBT/CHF", "ADA/XBT"]
BINANCE_SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]


def read_ring(hdr, data, cur) -> list[np.void]:
    out = np.zeros(records.MD_RECORD_SIZE, np.uint8)
    got = []
    while ring.poll(hdr, data, cur, out):
        got.append(out.copy())
    return got


def statuses(recs) -> list[tuple[int, int, int]]:
    """(instrument, status, reason) of every BOOK_STATUS record."""
    out = []
    for r in recs:
        if r[8] == records.RT_BOOK_STATUS:
            s = r.view(records.BOOK_STATUS)[0]
            out.append((int(s["instrument"]), int(s["status"]), int(s["reason"])))
    return out


class Running:
    """A Gateway on a thread against a simulator; stop() joins it."""

    def __init__(self, venue, symbols, s: VenueSim, **kw):
        meta = gateway.fetch_metadata(venue, s.rest_url)
        mod = gateway.venue_module(venue)
        self.instruments = mod.load_instruments(meta, symbols)
        self.writer = common.RecordWriter.local(1 << 17)
        self.cur = ring.local_cursor(self.writer.hdr)
        kw.setdefault("reconnect_min_ms", 20)
        kw.setdefault("reconnect_max_ms", 200)
        self.gw = gateway.Gateway(venue, self.instruments, self.writer, kw.pop("ws_url", s.ws_url),
                                  kw.pop("rest_url", s.rest_url), **kw)
        self.stop_ev = threading.Event()
        self.result = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.result = self.gw.run(self.stop_ev)

    def wait(self, cond, timeout=30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def settle(self, quiet_s: float = 0.3, timeout: float = 30.0) -> bool:
        """Wait until the gateway has processed no new frame for quiet_s."""
        end = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < end:
            n = self.gw.stats()["frames"]
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> dict:
        self.stop_ev.set()
        self.t.join(timeout=10)
        assert not self.t.is_alive()
        return self.result


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    b = gateway.Backoff(100, 1000, random.Random(1))
    caps = [100, 200, 400, 800, 1000, 1000]
    for cap in caps:
        d = b.next_s() * 1000
        assert cap * 0.5 <= d <= cap
    b.reset()
    assert b.next_s() <= 0.1
    with pytest.raises(ValueError):
        gateway.Backoff(0, 10)


def test_disconnect_reconnects_and_resubscribes_with_the_same_messages():
    with VenueSim("kraken", faults=Faults(disconnect_after=300)) as s:
        run = Running("kraken", KRAKEN_PAIRS, s)
        try:
            assert run.wait(lambda: s.stats.completed >= 1)
            assert run.settle()        # everything of the second connection processed
        finally:
            st = run.stop()
    subs = gateway.venue_module("kraken").subscribe_messages(run.instruments)
    by_conn = {}
    for no, msg in s.stats.client_messages:
        by_conn.setdefault(no, []).append(msg)
    # the first connection may be cut before the simulator has read all of its messages; the
    # second one, which got the whole recording, shows the complete resubscription
    assert by_conn[1][0] == subs[0]
    assert by_conn[2] == subs, by_conn
    assert st["reconnects"] >= 1 and st["disconnects"] >= 1
    assert st["checksums_failed"] == 0 and st["checksums_ok"] > 4000
    assert st["books_valid"] == 10
    recs = read_ring(run.writer.hdr, run.writer.data, run.cur)
    sts = statuses(recs)
    assert {(b, records.BOOK_INVALID, records.BR_DISCONNECT) for b in range(10)} <= set(sts)
    # after the reconnect every book became valid again
    last = {b: (stt, r) for b, stt, r in sts}
    assert all(v == (records.BOOK_VALID, records.BR_NONE) for v in last.values())


def test_garbage_frames_are_counted_and_never_fatal():
    with VenueSim("binance", faults=Faults(garbage_every=5)) as s:
        run = Running("binance", BINANCE_SYMBOLS, s)
        try:
            assert run.wait(lambda: s.stats.completed >= 1)
            assert run.settle()
        finally:
            st = run.stop()
    assert s.stats.garbage > 40
    assert st["errors"] >= s.stats.garbage
    assert st["exceptions"] == 0 and st["disconnects"] == 0
    assert st["snapshots"] == 4 and st["books_valid"] == 4


def test_dropped_frame_fails_the_checksum_and_resubscribes():
    with VenueSim("kraken", [sim.find_data_dir() / "KRAKEN.ws.50.0"], faults=Faults(drop_every=400)) as s:
        run = Running("kraken", KRAKEN_PAIRS, s)
        try:
            assert run.wait(lambda: run.gw.stats()["resubscribes"] >= 1 and s.stats.connections >= 2)
        finally:
            st = run.stop()
    assert st["checksums_failed"] >= 1
    assert st["exceptions"] == 0
    sts = statuses(read_ring(run.writer.hdr, run.writer.data, run.cur))
    assert any(stt == records.BOOK_INVALID and r == records.BR_CHECKSUM for _, stt, r in sts)


def test_silent_feed_marks_books_stale_and_reconnects():
    # Kraken has no per-pair heartbeat: the connection's silence is what makes books stale
    with VenueSim("kraken", [sim.find_data_dir() / "KRAKEN.ws.50.0"],
                  faults=Faults(stall_after=200, stall_ms=20_000)) as s:
        run = Running("kraken", KRAKEN_PAIRS, s, stale_after_ms=500)
        try:
            assert run.wait(lambda: s.stats.connections >= 2)
        finally:
            st = run.stop()
    assert st["stale"] >= 1 and st["stale_timeouts"] >= 1 and st["reconnects"] >= 1
    sts = statuses(read_ring(run.writer.hdr, run.writer.data, run.cur))
    assert any(stt == records.BOOK_INVALID and r == records.BR_STALE for _, stt, r in sts)


def test_silent_connection_is_dropped_after_the_stale_timeout():
    # the stall comes before any book data, so no book is valid to go stale: the connection
    # timer alone must notice the silence
    with VenueSim("kraken", [sim.find_data_dir() / "KRAKEN.ws.50.0"],
                  faults=Faults(stall_after=1, stall_ms=20_000)) as s:
        run = Running("kraken", KRAKEN_PAIRS, s, stale_after_ms=300)
        try:
            assert run.wait(lambda: run.gw.stats()["stale_timeouts"] >= 1 and s.stats.connections >= 2)
        finally:
            st = run.stop()
    assert st["reconnects"] >= 1 and st["books_valid"] == 0


def test_failed_snapshot_fetch_is_retried_and_book_stays_invalid():
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()                                   # nothing listens there: connection refused
    with VenueSim("binance") as s:
        run = Running("binance", ["NKNUSDT"], s, rest_url=f"http://127.0.0.1:{dead_port}")
        try:
            assert run.wait(lambda: run.gw.stats()["snapshot_errors"] >= 2, timeout=15)
        finally:
            st = run.stop()
    assert st["books_valid"] == 0 and st["snapshots"] == 0
    sts = statuses(read_ring(run.writer.hdr, run.writer.data, run.cur))
    assert sts and all(stt == records.BOOK_INVALID for _, stt, _ in sts)
    assert (0, records.BOOK_INVALID, records.BR_SNAPSHOT_PENDING) in sts


def test_unreachable_venue_backs_off_without_crashing():
    with VenueSim("binance") as s:
        port = s.port
    run_ = gateway.Gateway("binance", gateway.venue_module("binance").load_instruments(
        (sim.find_data_dir() / "BINANCE.0").read_bytes(), ["NKNUSDT"]), common.RecordWriter.local(1024),
        f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", reconnect_min_ms=10, reconnect_max_ms=40)
    st = run_.run(seconds=0.5)
    assert st["connect_failures"] >= 3 and st["connects"] == st["connect_failures"]


def test_md_process_publishes_into_shm_ring_read_by_another_process(shm_dir, tmp_path):
    with VenueSim("binance", faults=Faults(garbage_every=25)) as s:
        cfg = tmp_path / "appliance.toml"
        cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
[rings]
md_capacity = 65536
[[venues]]
name = "binance"
ws_url = "{s.ws_url}"
rest_url = "{s.rest_url}"
""" + instruments_toml("binance", BINANCE_SYMBOLS))
        stats = tmp_path / "stats.json"
        env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
        p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "md", "--config", str(cfg),
                              "--venue", "binance", "--ring", "md.test", "--stats", str(stats),
                              "--stats-every", "0.5"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            end = time.monotonic() + 60
            while not (shm_dir / "md.test").exists():
                assert p.poll() is None, p.communicate()[1][-3000:]
                assert time.monotonic() < end
                time.sleep(0.05)
            reader = None
            while reader is None:          # the file appears a moment before its header is valid
                try:
                    reader = ring.RingReader.attach("md.test", consumer="test", start="oldest",
                                                    shm_dir=str(shm_dir))
                except shm.ShmError:
                    assert time.monotonic() < end
                    time.sleep(0.05)
            recs = []
            out = np.zeros(records.MD_RECORD_SIZE, np.uint8)
            while time.monotonic() < end and s.stats.completed < 1:
                while reader.poll(out):
                    recs.append(out.copy())
                time.sleep(0.01)
            time.sleep(0.5)
            while reader.poll(out):
                recs.append(out.copy())
            assert reader.lost == 0
            reader.close()
        finally:
            p.terminate()
            _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err[-3000:]
    st = json.loads(stats.read_text())
    assert st["errors"] >= s.stats.garbage > 0 and st["exceptions"] == 0
    assert st["books_valid"] == 4
    # rebuild every book from the L2 records and check it against each BATCH_END's best prices
    books: dict[int, tuple[dict, dict]] = {}
    in_snapshot: dict[int, bool] = {}
    kinds = set()
    batches = 0
    for r in recs:
        rt = int(r[8])
        kinds.add(rt)
        if rt == records.RT_L2_UPDATE:
            u = r.view(records.L2_UPDATE)[0]
            b = int(u["instrument"])
            snap = bool(u["flags"] & records.F_SNAPSHOT)
            if snap and not in_snapshot.get(b):
                books[b] = ({}, {})
            in_snapshot[b] = snap
            side = books.setdefault(b, ({}, {}))[0 if u["side"] == records.SIDE_BUY else 1]
            if u["qty"]:
                side[int(u["price"])] = int(u["qty"])
            else:
                side.pop(int(u["price"]), None)
            assert u["origin_tsc"] > 0 and u["publish_tsc"] >= u["origin_tsc"]
        elif rt == records.RT_BATCH_END:
            e = r.view(records.BATCH_END)[0]
            bids, asks = books[int(e["instrument"])]
            assert int(e["bid_price"]) == (max(bids) if bids else 0)
            assert int(e["ask_price"]) == (min(asks) if asks else 0)
            batches += 1
    assert {records.RT_L2_UPDATE, records.RT_BATCH_END, records.RT_BOOK_STATUS, records.RT_BBO} <= kinds
    assert batches > 100
    # the process registered itself in the control block and kept its heartbeat going
    from appliance.transport import control
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        mine = [a for a in cb.actors() if a["name"] == "md.binance"]
    finally:
        cb.close()
    assert mine and mine[0]["pid"] == p.pid and mine[0]["loops"] > 0


def test_md_cli_rejects_missing_or_unconfigured_venue(tmp_path, capsys):
    from appliance import cli
    cfg = tmp_path / "a.toml"
    cfg.write_text('[[venues]]\nname = "kraken"\nws_url = "ws://127.0.0.1:1"\n')
    assert cli.main(["md", "--config", str(cfg)]) == 2
    assert "--venue is required" in capsys.readouterr().err
    assert cli.main(["md", "--config", str(cfg), "--venue", "binance"]) == 2
    assert "no venue named 'binance'" in capsys.readouterr().err


def test_md_cli_exits_with_metadata_error_when_rest_is_unreachable(tmp_path):
    from appliance import cli
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[[venues]]\nname = "kraken"\nws_url = "ws://127.0.0.1:{port}"\n'
                   f'rest_url = "http://127.0.0.1:{port}"\n' + instruments_toml("kraken", ["XMR/USD"]))
    assert cli.main(["md", "--config", str(cfg), "--venue", "kraken", "--seconds", "1"]) == gateway.EXIT_METADATA


def test_md_replay_cli_passes_through_to_replay(capsys):
    from appliance import cli
    path = sim.find_data_dir() / "KRAKEN.ws.50.0"
    assert cli.main(["md", "replay", str(path), "--venue", "kraken", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checksums_failed"] == 0 and res["checksums_ok"] > 4000


@pytest.mark.parametrize("venue", ["binance", "coinbase", "kraken", "bitstamp", "bitfinex",
                                   "coinbase_advanced"])
def test_every_venue_syncs_every_book_and_ends_like_offline_replay(venue):
    from appliance.venues import recording, replay
    paths = sim.default_recordings(venue)
    book_path = next(p for p in paths if venue != "kraken" or p.name == "KRAKEN.ws.50.0")
    instruments = gateway.venue_module(venue).load_instruments(
        recording.open_session(book_path).metadata, None)
    with VenueSim(venue) as s:
        run = Running(venue, [i.symbol for i in instruments], s)
        try:
            # a REST snapshot may land after the last stream frame (a slow or loaded host): the
            # book is valid once it does, so wait for that too
            assert run.wait(lambda: s.stats.completed >= 1
                            and run.gw.stats()["frames"] >= s.stats.frames_sent
                            and run.gw.stats()["books_valid"] == len(instruments))
        finally:
            st = run.stop()
    assert st["frames"] == s.stats.frames_sent
    assert st["errors"] == 0 and st["gaps"] == 0 and st["checksums_failed"] == 0
    assert st["books_valid"] == st["books"] == len(instruments)
    offline = replay.run(book_path, venue)
    for ins in instruments:
        assert run.gw.feed.top(ins.symbol, 10) == offline.top(ins.symbol, 10), ins.symbol


@pytest.mark.parametrize("venue, symbols", [("kraken", ["XMR/USD", "OMG/USD"]),
                                            ("coinbase", ["SKL-USD", "BAND-GBP"])])
def test_a_subset_subscription_gets_only_its_symbols_and_no_errors(venue, symbols):
    with VenueSim(venue, pace="fast") as s:
        run = Running(venue, symbols, s)
        try:
            assert run.wait(lambda: s.stats.completed >= 1)
            assert run.settle()
        finally:
            st = run.stop()
    assert st["errors"] == 0 and st["gaps"] == 0 and st["resyncs"] == 0, st
    assert st["books_valid"] == len(symbols)
