"""Engine restart recovery in one process: the snapshot, replay of the exec records after it
(from the exec ring, or the recorder's journal once the ring lapped it), adoption of the orders
sent before the crash, refusals when the state cannot be proven. Real shared-memory rings; the
engine's compiled ``step`` polls them as the actor does; a loopback venue acks and fills."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from appliance.engine import kernels as K
from appliance.engine import oms as O
from appliance.engine import orphans, positions, recovery, risk
from appliance.engine import state as engine_state
from appliance.engine.state import EngineState
from appliance.engine.strategies import avellaneda_stoikov as AS
from appliance.journal.recorder import Recorder
from appliance.transport import clock, records, ring, wait
from tests.engine.mdsource import book_frame

B = records.VENUE_BINANCE
SYMBOLS = ["AAA", "BBB"]
GRID = {"instruments": {f"binance:{s}": {"tick_e8": 10**6, "lot_e8": 10**8} for s in SYMBOLS}}


@pytest.fixture(scope="module")
def cal():
    return clock.calibration()


class Venue:
    """A loopback venue on the rings: acks every order, fills the orders the test names, and
    keeps what it executed (the truth the engine's ledger must equal)."""

    def __init__(self, shm_dir, exec_cap):
        self.ex = ring.RingWriter.create("exec", records.EXEC_RECORD_SIZE, exec_cap, shm_dir)
        self.orders = None
        self.shm_dir = shm_dir
        self.seen = []                  # order records, oldest first
        self.cum = {}                   # clord_id -> lots filled
        self.exec_id = 1000
        self.fills = []                 # (instrument, side, qty, price, exec_id)
        self.by_eid = {}                # exec_id -> the order record it filled

    def attach(self):
        if self.orders is None:
            self.orders = ring.RingReader.attach("orders", "venue", "oldest", self.shm_dir)

    def publish(self, dt, **f):
        r = np.zeros(1, dt)
        for k, v in f.items():
            r[0][k] = v
        ring.publish(self.ex.hdr, self.ex.data, r.view(np.uint8).reshape(-1))

    def ack_all(self):
        """ACK every order record not seen yet (new / replace / cancel); answer RT_RECONCILE
        as a gateway with nothing working does."""
        self.attach()
        buf = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
        while self.orders.poll(buf):
            rt = int(buf[8])
            o = buf.view(records.RECORD_DTYPES[rt])[0].copy()
            self.seen.append((rt, o))
            common = {"rtype": records.RT_ACK, "venue": B, "instrument": o["instrument"],
                      "clord_id": o["clord_id"]}
            if rt == records.RT_NEW_ORDER:
                self.publish(records.ACK, exec_type=records.EXEC_NEW, ord_status=records.EXEC_NEW,
                             price=o["price"], qty=o["qty"], leaves_qty=o["qty"], side=o["side"],
                             **common)
            elif rt == records.RT_CANCEL:
                self.publish(records.ACK, orig_clord_id=o["orig_clord_id"],
                             exec_type=records.EXEC_CANCELED, ord_status=records.EXEC_CANCELED,
                             **common)
            elif rt == records.RT_REPLACE:
                self.cum[int(o["clord_id"])] = self.cum.get(int(o["orig_clord_id"]), 0)
                self.publish(records.ACK, orig_clord_id=o["orig_clord_id"],
                             exec_type=records.EXEC_REPLACED, ord_status=records.EXEC_NEW,
                             price=o["price"], qty=o["qty"], leaves_qty=o["qty"], side=o["side"],
                             **common)
            elif rt == records.RT_RECONCILE:
                self.publish(records.SESSION, rtype=records.RT_SESSION, session=o["session"],
                             state=records.SESSION_RECONCILED, reconcile_id=o["clord_id"])

    def working(self, instrument=None):
        """Orders (and replacements) not cancelled, replaced or filled, oldest first."""
        live = {}
        for rt, o in self.seen:
            if rt in (records.RT_NEW_ORDER, records.RT_REPLACE):
                if rt == records.RT_REPLACE:
                    live.pop(int(o["orig_clord_id"]), None)
                live[int(o["clord_id"])] = o
            elif rt == records.RT_CANCEL:
                live.pop(int(o["orig_clord_id"]), None)
        return [o for c, o in live.items() if self.cum.get(c, 0) < int(o["qty"])
                and (instrument is None or int(o["instrument"]) == instrument)]

    def fill(self, o, qty=1, exec_id=None):
        """One fill of order record ``o`` at its price; ``exec_id`` given = a report published
        again (not a new execution). Returns the exec id."""
        c = int(o["clord_id"])
        if exec_id is None:
            self.exec_id += 1
            self.cum[c] = self.cum.get(c, 0) + qty
            self.fills.append((int(o["instrument"]), int(o["side"]), qty, int(o["price"]),
                               self.exec_id))
        eid = exec_id or self.exec_id
        self.by_eid[eid] = o
        cum = self.cum[c]
        self.publish(records.FILL, rtype=records.RT_FILL, venue=B, instrument=o["instrument"],
                     clord_id=o["clord_id"], last_price=o["price"], last_qty=qty, cum_qty=cum,
                     leaves_qty=max(0, int(o["qty"]) - cum), side=o["side"], exec_id=eid,
                     ord_status=ord("2") if cum >= int(o["qty"]) else ord("1"))
        return eid

    def net(self, instrument):
        return sum(q if s == records.SIDE_BUY else -q
                   for i, s, q, _p, _e in self.fills if i == instrument)


class Engine:
    """An engine as the actor runs it: EngineState on the shared order ring, ``step`` over an md
    ring and the shared exec ring, a snapshotter, a Recovery."""

    def __init__(self, cal, shm_dir, state_dir, journal_dir, risk_top=None, reconcile=True):
        tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s, "name": f"mm-{s}",
                   "params": {"warmup_events": 0, "vol_widen": 0, "horizon_events": 0,
                              "qty": 3, "levels": 1, "max_inventory": 1000}}
                  for s in SYMBOLS]
        table = engine_state.default_risk_table(["binance"])
        table.update(risk_top or {})
        self.es = es = EngineState({"binance": SYMBOLS}, tables, GRID, cal=cal, books_valid=True,
                                   risk_table=table)
        self.ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE, 1 << 12, shm_dir)
        self.head_at_open = int(ring.head(self.ow.hdr))
        self.ex = ring.RingReader.attach("exec", "engine", "oldest", shm_dir)
        self.words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
        es.attach(self.ow.hdr, self.ow.data, self.words)
        self.mh, self.md = ring.local_ring(records.MD_RECORD_SIZE, 1 << 12)
        self.loop = es.loop([(self.mh, self.md, ring.local_cursor(self.mh))],
                            [(self.ex.hdr, self.ex.data, self.ex.cur)],
                            wait.make("spin"), wait.new_state())
        self.rec = recovery.Recovery(es, state_dir, self.ow, self.head_at_open,
                                     [("exec", self.ex)], journal_dir, {0}, 5.0)
        self.report = self.rec.restore()
        self.snap = recovery.Snapshotter(es, recovery.snapshot_path(state_dir), 0.0, self.ow,
                                         [("exec", self.ex)], self.rec.config_balances)
        if reconcile:
            self.rec.request_reconcile(0.0)
        self.snap.write_now()

    def step(self):
        es = self.es
        for _ in range(3):
            K.step(self.loop, es.books, es.strats, es.gate, es.tel, es.io, 0, 10_000)

    def frame(self, instrument, bid, ask, origin=100):
        for r in book_frame(((bid, 5),), ((ask, 5),), origin, instrument=instrument):
            ring.publish(self.mh, self.md, r)
        self.step()

    def crash(self):
        """Gone without a word: nothing is flushed, the rings keep what they hold (and the
        order ring's writer lock goes with the last view of it, as with a dead process)."""
        self.ex.close()
        self.ow.close()
        self.es = self.loop = self.rec = self.snap = self.ex = self.ow = None
        gc.collect()


def _trade(eng, venue, rounds=3):
    """Frames that move both books, every request acked, one lot of the oldest working order of
    each instrument filled per round (read by the engine). Returns the exec ids."""
    eids = []
    for k in range(rounds):
        for ins in (0, 1):
            eng.frame(ins, 990 + k, 1010 + k)
        venue.ack_all()
        eng.step()
        for ins in (0, 1):
            w = venue.working(ins)
            if w:
                eids.append(venue.fill(w[0]))
        eng.step()
        venue.ack_all()
    return eids


def _ledger(es):
    return {ii: int(es.led.pos[ii]["qty"]) for ii in range(len(es.instrument_names))}


def _up(cal, shm_dir, tmp_path, venue, **kw):
    eng = Engine(cal, shm_dir, tmp_path / "state", tmp_path / "journal", **kw)
    venue.ack_all()                 # answers the reconcile request
    eng.step()
    return eng


def test_snapshot_bytes_round_trip_and_damage_is_detected(tmp_path):
    meta = {"instruments": ["binance:AAA"], "x": 1}
    arr = {"pos": np.arange(3, dtype=np.int64), "orders": np.zeros(2, orphans.ADOPT)}
    raw = recovery.encode(meta, arr)
    m, a = recovery.decode(raw)
    assert m["x"] == 1 and m["version"] == recovery.VERSION
    assert np.array_equal(a["pos"], arr["pos"]) and a["orders"].dtype == orphans.ADOPT
    bad = bytearray(raw)
    bad[-1] ^= 1
    with pytest.raises(recovery.SnapshotError, match="checksum"):
        recovery.decode(bytes(bad))
    with pytest.raises(recovery.SnapshotError, match="magic"):
        recovery.decode(b"junk" * 10)
    assert recovery.load(tmp_path / "none") is None


def test_first_start_is_flat_and_sends_nothing_before_the_gateways_answer(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 1024)
    eng = Engine(cal, shm_dir, tmp_path / "state", tmp_path / "journal")
    assert eng.rec.state == "reconciling" and not eng.rec.problems
    assert eng.report["snapshot"] is None
    eng.frame(0, 990, 1010)
    assert eng.es.stats[K.ST_NEW] == 0                   # RECONCILING: nothing goes out
    # a SESSION_RECONCILED that names no request (published before) is not the answer
    venue.publish(records.SESSION, rtype=records.RT_SESSION, session=0,
                  state=records.SESSION_RECONCILED)
    eng.frame(0, 991, 1011)
    assert eng.es.stats[K.ST_NEW] == 0 and eng.es.stats[K.ST_SESS_STALE] == 1
    venue.ack_all()                                      # the answer to the request
    eng.frame(0, 992, 1012)
    assert eng.es.stats[K.ST_NEW] > 0
    eng.rec.periodic(1.0)
    assert eng.rec.state == "done"
    venue.ack_all()
    rts = [rt for rt, _ in venue.seen]
    assert rts[0] == records.RT_RECONCILE and records.RT_NEW_ORDER in rts


def test_a_gateway_that_missed_the_request_is_asked_again_at_once(cal, shm_dir, tmp_path):
    """A gateway that attached to the order ring after the engine's request (it reads from the
    newest record on) reconciles by itself and publishes SESSION_RECONCILED naming no request:
    the engine publishes its request again at its next periodic call, not ``retry_s`` later."""
    venue = Venue(shm_dir, 1024)
    eng = Engine(cal, shm_dir, tmp_path / "state", tmp_path / "journal")
    venue.attach()
    buf = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
    while venue.orders.poll(buf):                        # the request went by unseen
        pass
    eng.rec.periodic(0.1)                                # no answer of any kind: nothing again
    assert not venue.orders.poll(buf) and eng.rec.status()["requests_republished"] == 0
    venue.publish(records.SESSION, rtype=records.RT_SESSION, session=0,
                  state=records.SESSION_RECONCILED)      # reconciled by itself, no request named
    eng.step()
    eng.rec.periodic(0.2)                                # well before retry_s (5 s)
    assert venue.orders.poll(buf)
    r = buf.view(records.RECONCILE)[0]
    assert int(r["rtype"]) == records.RT_RECONCILE and int(r["session"]) == 0
    assert int(r["clord_id"]) == eng.rec.requests[0]
    assert eng.rec.status()["requests_republished"] == 1
    eng.rec.periodic(0.3)                                # the same stale answer: asked once only
    assert not venue.orders.poll(buf)
    venue.publish(records.SESSION, rtype=records.RT_SESSION, session=0,
                  state=records.SESSION_RECONCILED, reconcile_id=r["clord_id"])
    eng.frame(0, 990, 1010)
    eng.rec.periodic(0.4)
    assert eng.rec.state == "done" and eng.es.stats[K.ST_NEW] > 0


def test_crash_and_restart_rebuilds_positions_strategies_and_breaker_from_snapshot_and_ring(
        cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 1024)
    eng = _up(cal, shm_dir, tmp_path, venue)
    eids = _trade(eng, venue)
    assert len(venue.fills) >= 4
    risk.trip(eng.es.rk, records.RISK_PAUSED, risk.CB_LOSS_STREAK, 1)
    eng.snap.write_now()                                 # the last snapshot before the crash
    for ins in (0, 1):                                   # read by the engine, after the snapshot
        venue.fill(venue.working(ins)[0])
    eng.step()
    eng.crash()
    for ins in (0, 1):                                   # while it is dead
        venue.fill(venue.working(ins)[-1])
    venue.fill(venue.by_eid[eids[0]], exec_id=eids[0])   # a report published again
    eng2 = _up(cal, shm_dir, tmp_path, venue)
    es = eng2.es
    assert not eng2.rec.problems, eng2.rec.problems
    assert _ledger(es) == {0: venue.net(0), 1: venue.net(1)}
    assert es.led.acct[positions.A_FILLS] == len(venue.fills)
    # every fill reached its strategy too: the orders were adopted from the snapshot / order ring
    for i in range(2):
        assert es.pnl[i, 0, K.PNL_POS] == venue.net(i)
        assert es.state[i, AS.S_INV] == venue.net(i)
    assert es.stats[K.ST_ORPHAN_FILLS] == 0
    assert eng2.report["replayed_fills"] == 4
    assert risk.state_name(es.rk) == "PAUSED"            # the breaker survived
    # nothing sent before the reconcile answer; ClOrdIDs go on above every id sent before
    top = max(int(o["clord_id"]) for _, o in venue.seen)
    assert es.oms.ctr[O.C_NEXT_ID] > top


def test_fills_of_orders_nobody_can_name_still_move_the_ledger(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 1024)
    eng = _up(cal, shm_dir, tmp_path, venue)
    _trade(eng, venue, rounds=1)
    eng.crash()
    stray = venue.working(1)[0].copy()
    stray["clord_id"] = 777                              # an id no record of the engine holds
    venue.fill(stray, qty=2)
    eng2 = _up(cal, shm_dir, tmp_path, venue)
    assert _ledger(eng2.es) == {0: venue.net(0), 1: venue.net(1)}
    assert eng2.es.stats[K.ST_ORPHAN_FILLS] == 1
    # live too: another one after the restart, and its duplicate
    eid = venue.fill(stray, qty=1)
    venue.fill(stray, qty=1, exec_id=eid)
    eng2.step()
    assert _ledger(eng2.es) == {0: venue.net(0), 1: venue.net(1)}
    assert eng2.es.stats[K.ST_ORPHAN_FILLS] == 2


def test_lapped_exec_ring_is_read_from_the_journal(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 16)                           # a tiny exec ring
    rec = Recorder(["exec"], tmp_path / "journal", shm_dir=str(shm_dir), flush_ms=0)
    eng = _up(cal, shm_dir, tmp_path, venue)
    rec.step()
    _trade(eng, venue, rounds=1)
    eng.crash()
    for _ in range(12):                                  # 36 exec records: the ring holds 16
        for ins in (0, 1):
            venue.fill(venue.working(ins)[0] if venue.working(ins) else venue.seen[-1][1])
        rec.step()
        venue.publish(records.SESSION, rtype=records.RT_SESSION, session=0,
                      state=records.SESSION_UP)
    rec.step()
    rec.close()
    eng2 = _up(cal, shm_dir, tmp_path, venue)
    assert not eng2.rec.problems, eng2.rec.problems
    info = eng2.report["replayed"]["exec"]
    assert info["journal"] > 0 and info["ring"] > 0
    assert _ledger(eng2.es) == {0: venue.net(0), 1: venue.net(1)}


def test_lapped_exec_ring_without_the_journal_refuses_to_trade(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 16)
    eng = _up(cal, shm_dir, tmp_path, venue)
    _trade(eng, venue, rounds=1)
    eng.crash()
    for _ in range(10):
        venue.fill(venue.working(0)[0] if venue.working(0) else venue.seen[-1][1])
        venue.publish(records.SESSION, rtype=records.RT_SESSION, session=0,
                      state=records.SESSION_UP)
    eng2 = _up(cal, shm_dir, tmp_path, venue)
    assert eng2.rec.state == "refused"
    assert any("no longer in the ring" in p for p in eng2.rec.problems), eng2.rec.problems


def test_no_snapshot_after_a_previous_run_refuses_to_trade(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 1024)
    eng = _up(cal, shm_dir, tmp_path, venue)
    _trade(eng, venue, rounds=1)
    eng.crash()
    recovery.snapshot_path(tmp_path / "state").unlink()
    eng2 = _up(cal, shm_dir, tmp_path, venue)
    assert eng2.rec.state == "refused"
    assert "no snapshot" in eng2.rec.problems[0]


def test_re_created_exec_ring_refuses_to_trade(cal, shm_dir, tmp_path):
    venue = Venue(shm_dir, 1024)
    eng = _up(cal, shm_dir, tmp_path, venue)
    _trade(eng, venue, rounds=1)
    eng.crash()
    venue.ex.close()
    (shm_dir / "exec").unlink()                          # shared memory wiped (a reboot)
    venue2 = Venue(shm_dir, 1024)
    venue2.orders = venue.orders
    venue2.seen = venue.seen
    eng2 = _up(cal, shm_dir, tmp_path, venue2)
    assert eng2.rec.state == "refused"
    assert "re-created" in eng2.rec.problems[0]


def test_each_session_trades_only_once_its_own_gateway_answered(cal, shm_dir, tmp_path):
    """Two FIX sessions (one exec ring each): the engine asks both; the session whose gateway
    answered trades, the other stays silent until its gateway answers too."""
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s, "name": f"mm-{s}",
               "session": k, "params": {"warmup_events": 0, "vol_widen": 0, "horizon_events": 0}}
              for k, s in enumerate(SYMBOLS)]
    es = EngineState({"binance": SYMBOLS}, tables, GRID, cal=cal, books_valid=True,
                     risk_table=engine_state.default_risk_table(["binance"]))
    ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE, 1 << 12, shm_dir)
    gws = [ring.RingWriter.create(f"exec.{n}", records.EXEC_RECORD_SIZE, 64, shm_dir) for n in "ab"]
    exs = [ring.RingReader.attach(f"exec.{n}", "engine", "oldest", shm_dir) for n in "ab"]
    es.attach(ow.hdr, ow.data, np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64))
    mh, md = ring.local_ring(records.MD_RECORD_SIZE, 256)
    loop = es.loop([(mh, md, ring.local_cursor(mh))], [(r.hdr, r.data, r.cur) for r in exs],
                   wait.make("spin"), wait.new_state())
    rec = recovery.Recovery(es, tmp_path / "state", ow, 0, list(zip(["exec.a", "exec.b"], exs)),
                            tmp_path / "journal", {0, 1}, 5.0)
    rec.restore()
    rec.request_reconcile(0.0)
    orders = ring.RingReader.attach("orders", "venue", "oldest", shm_dir)
    buf = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
    asked = {}
    while orders.poll(buf):
        r = buf.view(records.RECONCILE)[0]
        assert int(r["rtype"]) == records.RT_RECONCILE
        asked[int(r["session"])] = int(r["clord_id"])
    assert sorted(asked) == [0, 1]

    def frames(k):
        for ins in (0, 1):
            for x in book_frame(((990 + k, 5),), ((1010 + k, 5),), 100, instrument=ins):
                ring.publish(mh, md, x)
        for _ in range(3):
            K.step(loop, es.books, es.strats, es.gate, es.tel, es.io, 0, 10_000)
        sent = []
        while orders.poll(buf):
            o = buf.view(records.NEW_ORDER)[0]
            sent.append((int(o["rtype"]), int(o["session"])))
        return sent

    def answer(s):
        a = np.zeros(1, records.SESSION)
        a[0]["rtype"], a[0]["session"] = records.RT_SESSION, s
        a[0]["state"], a[0]["reconcile_id"] = records.SESSION_RECONCILED, asked[s]
        gws[s].publish(a)

    assert frames(0) == []
    answer(1)
    assert {s for _, s in frames(1)} == {1}
    rec.periodic(1.0)
    assert rec.state == "reconciling" and rec.status()["waiting_for_sessions"] == [0]
    answer(0)
    assert 0 in {s for _, s in frames(2)}
    rec.periodic(2.0)
    assert rec.state == "done"
