"""``appliance bench backtest``: backtest throughput against hftbacktest on the same events.

One run, one input, one strategy, two backtesters:

- input: a recorded venue session (default the Coinbase one, ``--session``) turned into md records
  by the venue's production feed code, repeated ``--loops`` times back to back (each copy shifted
  in time after the previous one; every copy starts with its snapshot, so books are rebuilt);
- strategy: the touch quoter (one ``--qty``-lot post-only quote at the best bid and the best ask,
  requoted when the touch moves; ``appliance.engine.strategies.touch``) on ``--symbols``
  (default: the session's most active instrument), and the same logic written against
  hftbacktest's API (:func:`hft_touch`, numba);
- the same constant entry / response latencies and the same queue model on both sides.

``appliance``: :class:`appliance.sim.backtest.Backtest` (production engine kernels, risk gate, OMS
and the compiled exchange simulator in one compiled loop). ``hftbacktest`` (2.4.x, Rust core with
a numba strategy loop): ``HashMapMarketDepthBacktest`` with ``partial_fill_exchange``, the
matching queue model, ``constant_order_latency``, prices in ticks and quantities in lots
(tick_size = lot_size = 1, so both sides see the same integers).

``events_per_s`` = L2 updates + trades of the whole input (the rows hftbacktest consumes for every
instrument; both sides skip the instruments nobody quotes) / wall seconds of the backtest loop
(input conversion and compilation excluded; best of ``--repeat`` runs), for both. JSON keys:
events, events_per_s, baseline_events_per_s, ratio, md_records_per_s, orders, fills, volume,
baseline_orders, baseline_fills, baseline_volume, loops, session, symbols, queue_model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from appliance.transport import records

SESSIONS = {"coinbase": "COINBASE.ws.28.0", "binance": "BINANCE.ws.1.0", "kraken": "KRAKEN.ws.50.0",
            "bitstamp": "BITSTAMP.ws.1.0", "bitfinex": "BITFINEX.ws.11.0",
            "coinbase_advanced": "COINBASE_ADVANCED.jsonl.zst"}
HFT_QUEUE = {"risk_averse": "risk_adverse_queue_model", "power": "power_prob_queue_model",
             "log": "log_prob_queue_model", "power2": "power_prob_queue_model2",
             "log2": "log_prob_queue_model2", "power3": "power_prob_queue_model3"}


# ------------------------------------------------------------------------------------------ input
def looped(md, loops: int, gap_ns: int = 1_000_000_000):
    """``md`` (a backtest MdInput) repeated ``loops`` times, each copy after the previous one."""
    from appliance.sim.backtest import MdInput
    if loops <= 1:
        return md
    span = int(md.times[-1] - md.times[0]) + gap_ns
    recs = np.concatenate([md.records] * loops)
    times = np.concatenate([md.times + k * span for k in range(loops)])
    tcol = recs[:, records.ORIGIN_TSC_OFF:records.ORIGIN_TSC_OFF + 8].copy().view(np.int64)
    for k in range(loops):
        tcol[k * len(md.records):(k + 1) * len(md.records), 0] += k * span
    recs[:, records.ORIGIN_TSC_OFF:records.ORIGIN_TSC_OFF + 8] = tcol.view(np.uint8)
    return MdInput(md.venue, f"{md.path} x{loops}", md.kind, np.ascontiguousarray(recs),
                   np.ascontiguousarray(times), md.symbols, md.grids, md.counters, md.valid_books)


def touch_setup(md, symbols, qty: int = 1, queue_model: str = "risk_averse", queue_power: float = 2.0,
                entry_ns: int = 1_000_000, response_ns: int = 1_000_000, feed_ns: int = 0):
    """A backtest setup: the touch quoter on ``symbols``, a risk gate that never binds (the peer
    has none), the simulator with constant latencies and ``queue_model``."""
    from appliance.sim import backtest as B
    from appliance.sim import matching as M
    strategies = [{"kind": "touch", "name": f"touch-{s}", "venue": md.venue, "symbol": s,
                   "params": {"qty": qty}} for s in symbols]
    risk = {"limits": {"max_qty": 10**15, "max_notional": 1e9, "max_position": 10**15,
                       "max_open_orders": 64, "collar_bps": 10_000, "max_spread_ticks": 10**15,
                       "self_trade_prevention": True},
            "venues": {md.venue: {"rate_per_s": 1_000_000, "burst": 1_000_000,
                                  "check_balance": False}}}
    st = M.settings({"queue_model": queue_model, "queue_power": queue_power,
                     "latency": {"entry": entry_ns, "response": response_ns, "feed": feed_ns}})
    return B.Setup(None, strategies, {"clord_base": 1_000_000}, risk, st, "touch setup")


def _column(recs: np.ndarray, off: int, dtype) -> np.ndarray:
    """The field at byte ``off`` of every record row, as ``dtype``."""
    n = np.dtype(dtype).itemsize
    return np.ascontiguousarray(recs[:, off:off + n]).view(dtype)[:, 0]


def hft_events(md, instrument: int, feed_ns: int = 0) -> np.ndarray:
    """hftbacktest events of one instrument from our md records (price ticks and lot quantities
    as floats: exact below 2**53). A snapshot (F_SNAPSHOT run) or a BOOK_STATUS INVALID becomes a
    DEPTH_CLEAR_EVENT; trades without an aggressor side are left out (hftbacktest needs one)."""
    import hftbacktest as H
    recs = md.records
    ins = _column(recs, records.INSTRUMENT_OFF, np.uint32)
    m = (ins == instrument) & (recs[:, records.VENUE_OFF] != 0)
    r = recs[m]
    t = md.times[m]
    rt = r[:, records.RTYPE_OFF]
    flags = _column(r, records.FLAGS_OFF, np.uint16)
    # L2_UPDATE and TRADE keep price and qty at the same offsets: one column serves both
    assert (records.L2_PRICE_OFF, records.L2_QTY_OFF) == (records.TRADE_PRICE_OFF, records.TRADE_QTY_OFF)
    price = _column(r, records.L2_PRICE_OFF, np.int64)
    qty = _column(r, records.L2_QTY_OFF, np.int64)
    l2_side = r[:, records.L2_SIDE_OFF]
    tr_side = r[:, records.TRADE_SIDE_OFF]
    status = r[:, records.BOOK_STATUS_STATUS_OFF]
    is_l2 = rt == records.RT_L2_UPDATE
    snap = is_l2 & ((flags & records.F_SNAPSHOT) != 0)
    prev_snap = np.concatenate([[False], snap[:-1]])
    # a snapshot starts where a snapshot record follows a non-snapshot record
    clear = (snap & ~prev_snap) | ((rt == records.RT_BOOK_STATUS) & (status == records.BOOK_INVALID))
    is_tr = (rt == records.RT_TRADE) & (tr_side != 0)
    # a clear row goes just before the record that starts the snapshot: sort keys 2i and 2i+1
    ci = np.flatnonzero(clear)
    di = np.flatnonzero(is_l2 | is_tr)
    key = np.concatenate([2 * ci, 2 * di + 1])
    sel = np.concatenate([ci, di])[np.argsort(key, kind="stable")]
    clm = np.sort(key) % 2 == 0
    ev = np.zeros(len(sel), H.event_dtype)
    ev["exch_ts"] = t[sel]
    ev["local_ts"] = t[sel] + feed_ns
    l2m = ~clm & is_l2[sel]
    side = np.where(l2m, l2_side[sel], tr_side[sel])
    side_bits = np.where(side == records.SIDE_BUY, H.BUY_EVENT, H.SELL_EVENT)
    base = H.EXCH_EVENT | H.LOCAL_EVENT
    ev["ev"] = np.where(clm, base | H.DEPTH_CLEAR_EVENT,
                        np.where(l2m, base | H.DEPTH_EVENT | side_bits,
                                 base | H.TRADE_EVENT | side_bits)).astype(np.uint64)
    ev["px"] = np.where(clm, 0.0, price[sel].astype(np.float64))
    ev["qty"] = np.where(clm, 0.0, qty[sel].astype(np.float64))
    return ev


def _hft_touch_factory():
    from numba import njit
    from hftbacktest.order import GTX, LIMIT, NEW, PARTIALLY_FILLED
    NONE_REQ = 0
    BIG = 1 << 62

    @njit
    def hft_touch(hbt, n_assets, qty, quote, sent):
        """One ``qty``-lot post-only quote at the best bid and the best ask of every asset with
        ``quote[a]``, moved (modify) when the touch moves and no request is in flight; a
        finished quote is replaced by a new order at the next feed. ``sent[a]`` counts order
        requests."""
        bid_id = np.zeros(n_assets, np.int64)
        ask_id = np.zeros(n_assets, np.int64)
        next_id = 1
        while True:
            rc = hbt.wait_next_feed(True, 3_600_000_000_000)
            if rc == 1:
                break
            if rc != 0 and rc != 2 and rc != 3:
                return rc
            for a in range(n_assets):
                if not quote[a]:
                    continue
                depth = hbt.depth(a)
                bb = depth.best_bid_tick
                ba = depth.best_ask_tick
                valid = bb > -BIG and ba < BIG and bb < ba
                orders = hbt.orders(a)
                for side in range(2):
                    oid = bid_id[a] if side == 0 else ask_id[a]
                    want = bb if side == 0 else ba
                    active = False
                    if oid != 0 and oid in orders:
                        o = orders.get(oid)
                        active = o.status == NEW or o.status == PARTIALLY_FILLED
                        if active:
                            if o.req != NONE_REQ:
                                continue
                            if not valid:
                                hbt.cancel(a, oid, False)
                                sent[a] += 1
                            elif o.price_tick != want:
                                hbt.modify(a, oid, float(want), float(qty), False)
                                sent[a] += 1
                            continue
                        if o.req != NONE_REQ:
                            continue
                    if not valid:
                        continue
                    if side == 0:
                        hbt.submit_buy_order(a, next_id, float(want), float(qty), GTX, LIMIT, False)
                        bid_id[a] = next_id
                    else:
                        hbt.submit_sell_order(a, next_id, float(want), float(qty), GTX, LIMIT, False)
                        ask_id[a] = next_id
                    sent[a] += 1
                    next_id += 1
                hbt.clear_inactive_orders(a)
        return 0
    return hft_touch


_HFT_TOUCH = None


def hft_run(events: list, qty: int = 1, queue_model: str = "risk_averse", queue_power: float = 2.0,
            entry_ns: int = 1_000_000, response_ns: int = 1_000_000, quote=None) -> dict:
    """The touch quoter on hftbacktest over per-asset event arrays (quoting the assets ``quote``
    marks, default all); fills, volume, orders, seconds."""
    global _HFT_TOUCH
    import hftbacktest as H
    if _HFT_TOUCH is None:
        _HFT_TOUCH = _hft_touch_factory()
    assets = []
    for ev in events:
        a = (H.BacktestAsset().data(ev).linear_asset(1.0)
             .constant_order_latency(entry_ns, response_ns)
             .partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
             .tick_size(1.0).lot_size(1.0).last_trades_capacity(0))
        qm = getattr(a, HFT_QUEUE[queue_model])
        a = qm(queue_power) if queue_model in ("power", "power2", "power3") else qm()
        assets.append(a)
    hbt = H.HashMapMarketDepthBacktest(assets)
    sent = np.zeros(len(events), np.int64)
    q = np.ones(len(events), np.bool_) if quote is None else np.asarray(quote, np.bool_)
    t0 = time.perf_counter()
    rc = _HFT_TOUCH(hbt, len(events), qty, q, sent)
    dt = time.perf_counter() - t0
    fills = sum(int(hbt.state_values(a).num_trades) for a in range(len(events)))
    vol = sum(float(hbt.state_values(a).trading_volume) for a in range(len(events)))
    hbt.close()
    if rc != 0:
        raise RuntimeError(f"hftbacktest strategy stopped with code {rc}")
    return {"fills": fills, "volume": vol, "orders": int(sent.sum()), "seconds": dt}


def _warm_hft(md, symbols, qm, qp, entry, resp):
    """Compile the hftbacktest loop on a small slice (not timed)."""
    k = md.symbols.index(symbols[0])
    ev = hft_events(md, k)[:2000]
    hft_run([ev], 1, qm, qp, entry, resp)


def most_active(md) -> str:
    """The instrument with the most L2 updates and trades in ``md``."""
    ins = _column(md.records, records.INSTRUMENT_OFF, np.uint32)
    rt = md.records[:, records.RTYPE_OFF]
    m = (rt == records.RT_L2_UPDATE) | (rt == records.RT_TRADE)
    counts = np.bincount(ins[m], minlength=len(md.symbols))
    return md.symbols[int(np.argmax(counts[:len(md.symbols)]))]


def run(session: str = "coinbase", loops: int = 40, qty: int = 1, queue_model: str = "risk_averse",
        queue_power: float = 2.0, entry_ns: int = 1_000_000, response_ns: int = 1_000_000,
        symbols: list | None = None, repeat: int = 3) -> dict:
    from appliance import data
    from appliance.sim import backtest as B
    md1 = B.load_input(str(data.venues_dir() / SESSIONS[session]), session)
    symbols = symbols or [most_active(md1)]
    md = looped(md1, loops)
    rt = md.records[:, records.RTYPE_OFF]
    events = int(((rt == records.RT_L2_UPDATE) | (rt == records.RT_TRADE)).sum())
    # ours: compile + warm on one copy, then timed runs on fresh states (best of ``repeat``)
    B.Backtest(md1, touch_setup(md1, symbols, qty, queue_model, queue_power, entry_ns,
                                response_ns)).run()
    best = None
    for _ in range(repeat):
        bt = B.Backtest(md, touch_setup(md, symbols, qty, queue_model, queue_power, entry_ns,
                                        response_ns))
        bt.run()
        if best is None or bt.elapsed < best.elapsed:
            best = bt
    rep = best.report()
    # the peer: the same events (every instrument, as ours), the same strategy, best of ``repeat``
    hev = [hft_events(md, k) for k in range(len(md.symbols))]
    quote = [s in symbols for s in md.symbols]
    _warm_hft(md1, symbols, queue_model, queue_power, entry_ns, response_ns)
    peer = min((hft_run(hev, qty, queue_model, queue_power, entry_ns, response_ns, quote)
                for _ in range(repeat)), key=lambda r: r["seconds"])
    ours_eps = events / best.elapsed
    peer_eps = events / peer["seconds"]
    return {"session": session, "loops": loops, "symbols": symbols, "queue_model": queue_model,
            "events": events, "md_records": int(len(md.records)),
            "events_per_s": round(ours_eps, 1), "baseline_events_per_s": round(peer_eps, 1),
            "ratio": round(ours_eps / peer_eps, 3),
            "md_records_per_s": round(len(md.records) / best.elapsed, 1),
            "seconds": round(best.elapsed, 4), "baseline_seconds": round(peer["seconds"], 4),
            "orders": rep["orders"], "fills": rep["fills"], "volume": rep["volume"],
            "baseline_orders": peer["orders"], "baseline_fills": peer["fills"],
            "baseline_volume": int(peer["volume"]), "sha256": rep["sha256"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench backtest", description=__doc__.splitlines()[0])
    ap.add_argument("--session", choices=sorted(SESSIONS), default="coinbase")
    ap.add_argument("--loops", type=int, default=40, help="copies of the recording (default 40)")
    ap.add_argument("--symbols", help="comma-separated instruments to quote (default: the most "
                    "active one of the session)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best counts")
    ap.add_argument("--qty", type=int, default=1)
    ap.add_argument("--queue-model", choices=sorted(HFT_QUEUE), default="risk_averse")
    ap.add_argument("--entry-ns", type=int, default=1_000_000)
    ap.add_argument("--response-ns", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        import hftbacktest  # noqa: F401
    except ImportError:
        print("appliance bench backtest: the baseline needs hftbacktest 2.4 "
              "(pip install 'appliance[test]')", file=sys.stderr)
        return 2
    res = run(args.session, max(1, args.loops), args.qty, args.queue_model, 2.0, args.entry_ns,
              args.response_ns, args.symbols.split(",") if args.symbols else None,
              max(1, args.repeat))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"backtest throughput: {res['session']} recording x{res['loops']}, touch quoter on "
          f"{', '.join(res['symbols'])}, queue model {res['queue_model']}")
    print(f"  {'':<22}{'appliance':>14}{'hftbacktest':>14}")
    print(f"  {'events/s (L2+trades)':<22}{res['events_per_s']:>14,.0f}{res['baseline_events_per_s']:>14,.0f}")
    print(f"  {'seconds':<22}{res['seconds']:>14.3f}{res['baseline_seconds']:>14.3f}")
    print(f"  {'orders':<22}{res['orders']:>14,}{res['baseline_orders']:>14,}")
    print(f"  {'fills':<22}{res['fills']:>14,}{res['baseline_fills']:>14,}")
    print(f"  {'volume (lots)':<22}{res['volume']:>14,}{res['baseline_volume']:>14,}")
    print(f"  ratio {res['ratio']:.2f}x over {res['events']:,} events ({res['md_records']:,} md records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
