"""``appliance bench engine``: the engine's tick cycle on real recorded sessions, with a baseline.

Real recorded venue sessions (appliance/data/venues, or ``--data DIR``) are turned into md records by
the venues' own feed code (appliance.venues.replay) and replayed in-process through the compiled
engine with one Avellaneda-Stoikov instance per instrument (``price_unit`` = the instrument's
median touch spread in the recording, so every instrument quotes). Measured in one run:

- tick cycle: one book update -> book -> strategies -> risk -> order record written: rdtsc
  around each record inside a compiled loop; for every record that wrote orders (the end of a
  venue frame, where the book is consistent) the cycle runs from the start of the frame's last
  L2 update to the end of that record (p50 / p99 / p99.9 / max ns); ``strategy_cycle`` is the
  frame-end record alone (strategy -> risk -> orders);
- md event: every md record, the same way (most records are book updates that write no order);
- events_per_s: the whole replay with no per-record timing, records per second;
- risk_check: the tier-1 gate alone (``risk.check_order``), in batches of 1,000 calls (ns per
  call, p50 of batches);
- the replays act as a venue that accepts every request at once (``instant_venue``), so
  the OMS state machine runs as in production (it waits for acks before replacing);
- baseline: a plain-Python implementation of the same cycle (SortedDict books, the same AS
  arithmetic, the same tier-1 list as ``risk._check`` with the engine's limits, an order
  table with new / replace and open exposure, struct-packed order records into a bytearray),
  timed per record with perf_counter_ns over the first ``--python-records`` records.

Warm-up compiles and runs the replay once before anything is timed. ``--core N`` pins the
process. ``--json`` prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from appliance import data
from appliance.engine import kernels as engine, risk
from appliance.engine import state as engine_state
from appliance.transport import clock, records, ring
from appliance.transport.intrinsics import rdtsc
from benches import instant_venue

DEFAULT_DATA = data.venues_dir()
SESSIONS = {"binance": "BINANCE.ws.1.0", "kraken": "KRAKEN.ws.50.0", "coinbase": "COINBASE.ws.28.0",
            "bitstamp": "BITSTAMP.ws.1.0", "bitfinex": "BITFINEX.ws.11.0"}


# ------------------------------------------------------------------------------- compiled loops

@njit(cache=True, nogil=True, _nrt=False)
def _timed(md, books, strats, gate, tel, io, cyc, strat_cyc, ev):
    """Replay with rdtsc around each record. For the k-th record that wrote orders:
    ``strat_cyc[k]`` = its own ticks (strategy -> risk -> order records), ``cyc[k]`` = ticks from
    the start of the L2 update just before it (the last book update of the frame) to its end: one
    book update -> book -> strategy -> risk -> order written. ``ev[i]`` = ticks of record i.
    The venue acknowledges every request right after the record that caused it, outside the
    timed section (an ack is an exec event, not part of the md cycle). Returns k."""
    k = 0
    t_prev = np.uint64(0)
    prev_l2 = False
    stats = tel.stats
    for i in range(md.shape[0]):
        before = stats[engine.ST_NEW] + stats[engine.ST_REPLACE] + stats[engine.ST_CANCEL]
        t0 = rdtsc()
        engine.check_kill(books, strats, gate, tel, io)
        engine.handle_md(md[i], books, strats, gate, tel, io)
        t1 = rdtsc()
        ev[i] = t1 - t0
        if stats[engine.ST_NEW] + stats[engine.ST_REPLACE] + stats[engine.ST_CANCEL] != before:
            strat_cyc[k] = t1 - t0
            cyc[k] = t1 - t_prev if prev_l2 else t1 - t0
            k += 1
            instant_venue.ack_pending(books, strats, gate, tel, io)
        prev_l2 = md[i, records.RTYPE_OFF] == records.RT_L2_UPDATE
        t_prev = t0
    return k


@njit(cache=True, nogil=True, _nrt=False)
def _risk_batches(books, gate, b, now_ns, out, batch):
    """out[j] = ticks for ``batch`` tier-1 checks of a new order (``risk.check``, inlined as on
    the engine's order path; every check, varying price / side / qty so nothing is hoisted;
    passes take throttle tokens, so later calls end in the throttle denial, the last check:
    every call runs the whole list)."""
    acc = 0
    px = books.px
    n = books.n
    bid = px[b, 0, n[b, 0] - 1]
    ask = px[b, 1, n[b, 1] - 1]
    ref = (bid + ask) // 2
    none = np.int64(-1)
    for j in range(out.shape[0]):
        t0 = rdtsc()
        for k in range(batch):
            side = records.SIDE_BUY if (k & 1) == 0 else records.SIDE_SELL
            p = bid + (k & 7)
            q = 1 + (k & 3)
            acc += risk.check(gate.risk, gate.oms, gate.led,
                              risk.OrderReq(np.int64(b), np.int64(side), np.int64(p), np.int64(q),
                                            np.int64(q), True, none, none),
                              risk.Touch(np.int64(ref), np.int64(bid), np.int64(ask)), now_ns)
        out[j] = rdtsc() - t0
    return acc


# ------------------------------------------------------------------------------ data and setup

def load_sessions(data_dir: Path, venues: list[str]) -> tuple[np.ndarray, dict]:
    """md records of the venues' recorded sessions, interleaved by record (a merged feed), and
    venue -> symbols."""
    from appliance.venues import replay

    parts, syms = [], {}
    for v in venues:
        feed = replay.run(data_dir / SESSIONS[v], v)
        h = int(ring.head(feed.writer.hdr))
        parts.append(feed.writer.data[:h].copy())
        syms[v] = [i.symbol for i in feed.instruments]
    total = sum(p.shape[0] for p in parts)
    merged = np.empty((total, records.MD_RECORD_SIZE), np.uint8)
    # round-robin merge, as the engine polls one record from each md ring in turn
    idx = [0] * len(parts)
    k = 0
    while k < total:
        for j, p in enumerate(parts):
            if idx[j] < p.shape[0]:
                merged[k] = p[idx[j]]
                idx[j] += 1
                k += 1
    return merged, syms


def typical_spreads(md: np.ndarray) -> dict:
    """(venue, instrument) -> median touch spread in ticks, from the BATCH_END records."""
    out = {}
    be = md[md[:, records.RTYPE_OFF] == records.RT_BATCH_END]
    if be.shape[0] == 0:
        return out
    v = be.copy().view(records.BATCH_END).reshape(-1)
    for key in set(zip(v["venue"].tolist(), v["instrument"].tolist())):
        m = (v["venue"] == key[0]) & (v["instrument"] == key[1])
        m &= (v["bid_price"] > 0) & (v["ask_price"] > v["bid_price"])
        if m.any():
            out[key] = float(np.median(v["ask_price"][m] - v["bid_price"][m]))
    return out


def make_engine(syms: dict, spreads: dict, cal) -> engine_state.EngineState:
    tables = []
    for venue, names in syms.items():
        vid = records.VENUE_IDS[venue]
        for idx, s in enumerate(names):
            unit = max(1.0, spreads.get((vid, idx), 1.0))
            tables.append({"kind": "avellaneda_stoikov", "venue": venue, "symbol": s,
                           "params": {"warmup_events": 1, "price_unit": unit,
                                      "requote_ticks": max(1, int(unit))}})
    # the engine's default risk table: every tier-1 check on, wide limits
    return engine_state.EngineState(syms, tables, None, cal=cal, clord_base=1 << 20)


def fresh_engine(syms, spreads, cal, oh, od, words) -> engine_state.EngineState:
    """``make_engine`` writing into the given order ring (it wraps; nobody reads it) and control
    words."""
    es = make_engine(syms, spreads, cal)
    es.attach(oh, od, words)
    return es


def _bundles(es: engine_state.EngineState):
    return es.books, es.strats, es.gate, es.tel, es.io


# ---------------------------------------------------------------------------- Python baseline

# byte offsets the Python baseline reads, from records.py
_RTYPE, _VENUE, _INSTR, _ORIGIN = (records.RTYPE_OFF, records.VENUE_OFF, records.INSTRUMENT_OFF,
                                   records.ORIGIN_TSC_OFF)
_L2_PRICE, _L2_SIDE = records.L2_PRICE_OFF, records.L2_SIDE_OFF
assert records.L2_QTY_OFF == _L2_PRICE + 8           # price, qty read as one "<qq"
# the records the baseline packs (header from rtype on, then the kind's fields)
_FMT_NEW = "<8xBBHIQ8xQIIqqBBB"      # records.NEW_ORDER
_FMT_REPL = "<8xBBHIQ8xQIIQqqBBB"    # records.REPLACE


def _check_formats() -> None:
    """The struct formats above put every field where the records.py dtype has it."""
    for fmt, dt, names in (
            (_FMT_NEW, records.NEW_ORDER, ("rtype", "venue", "flags", "instrument", "origin_tsc",
                                           "clord_id", "strategy", "session", "price", "qty",
                                           "side", "ord_type", "tif")),
            (_FMT_REPL, records.REPLACE, ("rtype", "venue", "flags", "instrument", "origin_tsc",
                                          "clord_id", "strategy", "session", "orig_clord_id",
                                          "price", "qty", "side", "ord_type", "tif"))):
        vals = list(range(1, len(names) + 1))
        buf = bytearray(dt.itemsize)
        struct.pack_into(fmt, buf, 0, *vals)
        rec = np.frombuffer(bytes(buf), dt)[0]
        assert [int(rec[n]) for n in names] == vals, (fmt, dt)


_check_formats()


class PyEngine:
    """The same cycle in plain Python: SortedDict books, AS quoting, risk check, packed records."""

    def __init__(self, es: engine_state.EngineState):
        from sortedcontainers import SortedDict

        from appliance.engine.strategies import avellaneda_stoikov as AS
        from appliance.engine.strategies import base

        self.AS, self.base = AS, base
        self.books = {}
        self.strat_of = {}
        for i in range(es.meta.shape[0]):
            key = (int(es.meta[i, base.M_VENUE]), int(es.meta[i, base.M_INSTR]))
            self.books[key] = (SortedDict(), SortedDict())
            self.strat_of[key] = i
        self.params = es.params.copy()
        self.state = np.zeros_like(es.state).tolist()
        self.quotes = {}                  # (strategy, slot) -> clord_id of the working order
        self.live = {}                    # clord_id -> [key, side, price, qty]
        self.open = {}                    # key -> {side: exposure lots}
        lim = es.rk.limits[0]
        vl = es.rk.venue_limits
        # the same tier-1 list as risk._check, with the engine's limits
        self.risk = {"max_qty": int(lim["max_qty"]), "max_notional": int(lim["max_notional_e8"]),
                     "max_pos": int(lim["max_position"]), "max_open": int(lim["max_open_orders"]),
                     "collar_bps": int(lim["collar_bps"]), "max_spread": int(lim["max_spread_ticks"]),
                     "rate": int(vl["rate_per_s"].max()), "burst": int(vl["burst"].max())}
        self.value_div = int(es.led.instr["value_div"][0])
        self.tokens = {}
        self.out = bytearray(records.ORDER_RECORD_SIZE * 1024)
        self.seq = 0
        self.clord = 1 << 20
        self.orders = 0
        self.fmt_new = struct.Struct(_FMT_NEW)
        self.fmt_repl = struct.Struct(_FMT_REPL)

    def handle(self, rec: bytes) -> None:
        rt = rec[_RTYPE]
        venue, instr = rec[_VENUE], int.from_bytes(rec[_INSTR:_INSTR + 4], "little")
        key = (venue, instr)
        bk = self.books.get(key)
        if bk is None:
            return
        origin = int.from_bytes(rec[_ORIGIN:_ORIGIN + 8], "little")
        if rt == records.RT_L2_UPDATE:
            price, q = struct.unpack_from("<qq", rec, _L2_PRICE)
            side = rec[_L2_SIDE]
            d = bk[0] if side == records.SIDE_BUY else bk[1]
            if q == 0:
                d.pop(price, None)
            else:
                d[price] = q
        elif rt == records.RT_BATCH_END:
            self.on_book(self.strat_of[key], bk, venue, instr, origin)

    def on_book(self, i, bk, venue, instr, origin):
        bids, asks = bk
        if not bids or not asks:
            return
        AS, p, st = self.AS, self.params[i], self.state[i]
        bb, ba = bids.peekitem(-1)[0], asks.peekitem(0)[0]
        if bb >= ba:
            return
        levels = int(p[AS.P_LEVELS])
        bq = sum(bids.peekitem(-1 - k)[1] for k in range(min(levels, len(bids))))
        aq = sum(asks.peekitem(k)[1] for k in range(min(levels, len(asks))))
        mp = (bb * aq + ba * bq) / (aq + bq)
        st[AS.S_EVENTS] += 1
        unit = p[AS.P_UNIT]
        if st[AS.S_EVENTS] > 1:
            d = (mp - st[AS.S_MP]) / unit
            st[AS.S_VAR] += p[AS.P_VOL_ALPHA] * (d * d - st[AS.S_VAR])
        st[AS.S_MP] = mp
        if st[AS.S_EVENTS] <= p[AS.P_WARMUP]:
            return
        g, s2, T = p[AS.P_GAMMA], st[AS.S_VAR], p[AS.P_HORIZON]
        res = mp - st[AS.S_INV] * g * s2 * T * unit
        half = g * s2 * T * 0.5 + math.log(1 + g / p[AS.P_K]) / g + p[AS.P_VOL_WIDEN] * math.sqrt(s2)
        half = max(half, p[AS.P_MIN_HALF]) * unit
        bid = min(math.floor(res - half), ba - 1)
        ask = max(math.ceil(res + half), bb + 1)
        thr = int(p[AS.P_REQUOTE])
        key = (venue, instr)
        for slot, side, px in ((0, records.SIDE_BUY, bid), (1, records.SIDE_SELL, ask)):
            cid = self.quotes.get((i, slot))
            old = self.live.get(cid)
            if old is not None and abs(old[2] - px) < thr:
                continue
            if self.risk_ok(key, bb, ba, side, px, 1, old):
                self.write(venue, instr, origin, i, slot, side, px, 1, old, cid)

    def risk_ok(self, key, bid, ask, side, price, q, old):
        """risk._check's list: qty, collar, notional, spread, open orders, worst-case position
        (open orders included), self-trade, throttle (token bucket on the wall clock)."""
        r = self.risk
        if q <= 0 or q > r["max_qty"]:
            return False
        ref = (bid + ask) // 2
        if abs(price - ref) > r["collar_bps"] * ref // 10_000:
            return False
        if price * q // self.value_div > r["max_notional"]:
            return False
        if ask - bid > r["max_spread"]:
            return False
        opn = self.open.setdefault(key, {records.SIDE_BUY: 0, records.SIDE_SELL: 0})
        if old is None and sum(1 for o in self.live.values() if o[0] == key) + 1 > r["max_open"]:
            return False
        worst = opn[side] + (0 if old is not None else q)
        if worst > r["max_pos"]:
            return False
        for o in self.live.values():
            if o[0] == key and o[1] != side and (
                    (side == records.SIDE_BUY and o[2] <= price)
                    or (side == records.SIDE_SELL and o[2] >= price)):
                return False
        now = time.monotonic_ns()
        tok, last = self.tokens.get(key[0], (r["burst"] * 1e9, now))
        tok = min(r["burst"] * 1e9, tok + (now - last) * r["rate"])
        if tok < 1e9:
            self.tokens[key[0]] = (tok, now)
            return False
        self.tokens[key[0]] = (tok - 1e9, now)
        return True

    def write(self, venue, instr, origin, i, slot, side, price, q, old, old_cid):
        """Book the order (a replace takes a new clord_id, the venue acks at once) and pack
        its record."""
        self.clord += 1
        key = (venue, instr)
        if old is not None:
            del self.live[old_cid]
            self.open[key][side] -= old[3]
        self.live[self.clord] = [key, side, price, q]
        self.open[key][side] += q
        self.quotes[(i, slot)] = self.clord
        off = (self.seq & 1023) * records.ORDER_RECORD_SIZE
        self.seq += 1
        if old is None:
            self.fmt_new.pack_into(self.out, off, records.RT_NEW_ORDER, venue, records.F_POST_ONLY,
                                   instr, origin, self.clord, i, 0, price, q, side,
                                   records.ORD_LIMIT, records.TIF_GTC)
        else:
            self.fmt_repl.pack_into(self.out, off, records.RT_REPLACE, venue, records.F_POST_ONLY,
                                    instr, origin, self.clord, i, 0, old_cid, price, q, side,
                                    records.ORD_LIMIT, records.TIF_GTC)
        self.orders += 1


def python_baseline(es, md: np.ndarray, n_rec: int) -> dict:
    pe = PyEngine(es)
    cyc, ev = [], []
    pc = time.perf_counter_ns
    rows = [md[k].tobytes() for k in range(min(n_rec, md.shape[0]))]
    t_all = pc()
    for r in rows:
        before = pe.orders
        t0 = pc()
        pe.handle(r)
        t1 = pc()
        ev.append(t1 - t0)
        if pe.orders != before:
            cyc.append(t1 - t0)
    total = pc() - t_all
    return {"cyc": np.array(cyc, np.int64), "ev": np.array(ev, np.int64), "n": len(rows),
            "total_ns": total}


# ------------------------------------------------------------------------------------ main

def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else float("nan")


def run(data_dir: Path, venues: list[str], min_events: int, python_records: int) -> dict:
    cal = clock.calibration()
    hz = float(cal[clock.C_HZ])
    md, syms = load_sessions(data_dir, venues)
    spreads = typical_spreads(md)
    reps = max(1, math.ceil(min_events / md.shape[0]))
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 1 << 16)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    # warm-up: compile and run everything once
    es = fresh_engine(syms, spreads, cal, oh, od, words)
    cyc = np.zeros(md.shape[0], np.int64)
    scyc = np.zeros(md.shape[0], np.int64)
    ev = np.zeros(md.shape[0], np.int64)
    _timed(md, *_bundles(es), cyc, scyc, ev)
    es = fresh_engine(syms, spreads, cal, oh, od, words)
    instant_venue.run_acked(md, md.shape[0], *_bundles(es))
    # per-record timing, `reps` replays on fresh engines
    cycs, scycs, evs, orders = [], [], [], 0
    for _ in range(reps):
        es = fresh_engine(syms, spreads, cal, oh, od, words)
        k = _timed(md, *_bundles(es), cyc, scyc, ev)
        cycs.append(cyc[:k].copy())
        scycs.append(scyc[:k].copy())
        evs.append(ev.copy())
        orders += int(es.stats[engine.ST_NEW] + es.stats[engine.ST_REPLACE]
                      + es.stats[engine.ST_CANCEL])
    to_ns = 1e9 / hz
    cyc_ns = np.concatenate(cycs) * to_ns
    scyc_ns = np.concatenate(scycs) * to_ns
    ev_ns = np.concatenate(evs) * to_ns
    # throughput: no per-record timing
    best = None
    for _ in range(reps):
        es = fresh_engine(syms, spreads, cal, oh, od, words)
        t0 = time.perf_counter_ns()
        instant_venue.run_acked(md, md.shape[0], *_bundles(es))
        dt = time.perf_counter_ns() - t0
        best = dt if best is None else min(best, dt)
    events_per_s = md.shape[0] / (best / 1e9)
    # risk check alone
    es = fresh_engine(syms, spreads, cal, oh, od, words)
    instant_venue.run_acked(md, md.shape[0], *_bundles(es))
    b = int(np.argmax(es.n.min(axis=1)))
    batches = np.zeros(2000, np.int64)
    now_ns = time.time_ns()
    _risk_batches(es.books, es.gate, b, now_ns, batches[:10], 1000)
    _risk_batches(es.books, es.gate, b, now_ns, batches, 1000)
    risk_ns = batches * to_ns / 1000.0
    # plain-Python baseline of the same cycle, same data
    py = python_baseline(make_engine(syms, spreads, cal), md, python_records)
    py_cyc = py["cyc"].astype(np.float64)
    res = {
        "venues": venues, "instruments": sum(len(v) for v in syms.values()),
        "md_records": int(md.shape[0]), "replays": reps, "orders": orders,
        "tick_cycles": int(cyc_ns.size),
        "tick_cycle_p50_ns": _pct(cyc_ns, 50), "tick_cycle_p99_ns": _pct(cyc_ns, 99),
        "tick_cycle_p999_ns": _pct(cyc_ns, 99.9), "tick_cycle_max_ns": float(cyc_ns.max()),
        "strategy_cycle_p50_ns": _pct(scyc_ns, 50), "strategy_cycle_p99_ns": _pct(scyc_ns, 99),
        "md_event_p50_ns": _pct(ev_ns, 50), "md_event_p99_ns": _pct(ev_ns, 99),
        "risk_check_p50_ns": _pct(risk_ns, 50), "risk_check_p99_ns": _pct(risk_ns, 99),
        "events_per_s": events_per_s,
        "python_tick_cycle_p50_ns": _pct(py_cyc, 50), "python_tick_cycle_p99_ns": _pct(py_cyc, 99),
        "python_md_event_p50_ns": _pct(py["ev"].astype(np.float64), 50),
        "python_events_per_s": py["n"] / (py["total_ns"] / 1e9),
        "python_records": py["n"], "python_tick_cycles": int(py_cyc.size),
        "rdtsc_hz": hz,
    }
    res["speedup_tick_cycle_p50"] = res["python_tick_cycle_p50_ns"] / res["tick_cycle_p50_ns"]
    res["speedup_events_per_s"] = res["events_per_s"] / res["python_events_per_s"]
    # a sample with no order-writing cycle (tiny --python-records) has no percentile: null in
    # the JSON, not NaN (which is not JSON)
    res = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.items()}
    res["targets"] = {"tick_cycle_p50_ns<=300": (res["tick_cycle_p50_ns"] or 1e18) <= 300,
                      "events_per_s>=2M": res["events_per_s"] >= 2e6}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench engine", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--core", type=int, default=None, help="pin this process to a core")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="recorded sessions directory")
    ap.add_argument("--venues", nargs="+", default=["binance", "kraken"],
                    help=f"recorded sessions to replay (of: {', '.join(SESSIONS)})")
    ap.add_argument("--min-events", type=int, default=200_000,
                    help="replay the sessions until at least this many md records were timed")
    ap.add_argument("--python-records", type=int, default=20_000,
                    help="md records for the plain-Python baseline")
    a = ap.parse_args(argv)
    bad = [v for v in a.venues if v not in SESSIONS]
    if bad:
        print(f"unknown venue(s) {bad}; have {', '.join(SESSIONS)}", file=sys.stderr)
        return 2
    if a.core is not None:
        os.sched_setaffinity(0, {a.core})
    res = run(a.data, a.venues, a.min_events, a.python_records)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"engine tick cycle on {res['md_records']} recorded md records x {res['replays']} "
          f"({', '.join(res['venues'])}; {res['instruments']} instruments, one AS each)")
    print(f"{'':28}{'compiled':>14}{'plain Python':>16}{'ratio':>10}")
    rows = [("tick cycle p50 ns", "tick_cycle_p50_ns", "python_tick_cycle_p50_ns"),
            ("tick cycle p99 ns", "tick_cycle_p99_ns", "python_tick_cycle_p99_ns"),
            ("md event p50 ns", "md_event_p50_ns", "python_md_event_p50_ns"),
            ("events per s", "events_per_s", "python_events_per_s")]
    def num(v, width):
        return f"{v:>{width},.0f}" if v is not None else f"{'-':>{width}}"

    for label, k, pk in rows:
        a, p = res[k], res[pk]
        r = (f"{(p / a if 'per_s' not in k else a / p):>9.1f}x" if a and p else f"{'-':>10}")
        print(f"{label:<28}{num(a, 14)}{num(p, 16)}{r}")
    print(f"tick cycle p99.9 / max ns     {res['tick_cycle_p999_ns']:,.0f} / {res['tick_cycle_max_ns']:,.0f}"
          f"   ({res['tick_cycles']} cycles that wrote orders)")
    print(f"strategy cycle p50 / p99 ns   {res['strategy_cycle_p50_ns']:,.0f} / "
          f"{res['strategy_cycle_p99_ns']:,.0f}")
    print(f"risk check p50 / p99 ns       {res['risk_check_p50_ns']:.1f} / {res['risk_check_p99_ns']:.1f}")
    print(f"targets: {res['targets']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
