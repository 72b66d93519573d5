"""The compiled exchange simulator: queue positions, crossing, order types, latency, fees."""
from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.sim import matching as M
from appliance.transport import records as R

V = R.VENUE_BINANCE
BUY, SELL = R.SIDE_BUY, R.SIDE_SELL


def make(queue_model="risk_averse", fees=None, latency=None, tick_e8=1, lot_e8=1, **kw):
    table = {"queue_model": queue_model, "fees": fees or {}, "latency": latency or {}, **kw}
    return M.make_sim([{"venue": "binance", "instrument": 0, "tick_e8": tick_e8, "lot_e8": lot_e8}],
                      M.settings(table))


def md(kind, **f):
    rec = np.zeros(1, kind)
    rec[0]["venue"] = V
    for k, v in f.items():
        rec[0][k] = v
    return rec.view(np.uint8).reshape(-1).copy()


def l2(side, price, qty, flags=0):
    return md(R.L2_UPDATE, rtype=R.RT_L2_UPDATE, side=side, price=price, qty=qty, flags=flags)


def trade(price, qty, side):
    return md(R.TRADE, rtype=R.RT_TRADE, price=price, qty=qty, side=side)


def batch():
    return md(R.BATCH_END, rtype=R.RT_BATCH_END)


def status(valid):
    return md(R.BOOK_STATUS, rtype=R.RT_BOOK_STATUS,
              status=R.BOOK_VALID if valid else R.BOOK_INVALID)


def order(kind, **f):
    rec = np.zeros(1, kind)
    rec[0]["venue"] = V
    for k, v in f.items():
        rec[0][k] = v
    return rec.view(np.uint8).reshape(-1).copy()


def new(clord, side, price, qty, tif=R.TIF_GTC, ord_type=R.ORD_LIMIT, flags=0, session=0):
    return order(R.NEW_ORDER, rtype=R.RT_NEW_ORDER, clord_id=clord, side=side, price=price, qty=qty,
                 tif=tif, ord_type=ord_type, flags=flags, session=session)


def cancel(clord, orig, session=0):
    return order(R.CANCEL, rtype=R.RT_CANCEL, clord_id=clord, orig_clord_id=orig, session=session)


def replace(clord, orig, side, price, qty, flags=0):
    return order(R.REPLACE, rtype=R.RT_REPLACE, clord_id=clord, orig_clord_id=orig, side=side,
                 price=price, qty=qty, ord_type=R.ORD_LIMIT, tif=R.TIF_GTC, flags=flags)


def responses(sim):
    out = np.zeros((256, R.EXEC_RECORD_SIZE), np.uint8)
    n = M.drain_responses(sim, out)
    res = []
    for i in range(n):
        r = out[i].view(R.RECORD_DTYPES[int(out[i, 8])])[0]
        res.append({k: r[k] for k in r.dtype.names})
    return res


def feed(sim, *recs, t=1_000):
    for rec in recs:
        assert M.on_md(sim, rec, 0, t) >= 0
    return responses(sim)


def send(sim, rec, t=1_000):
    assert M.process_order(sim, rec, t) >= 0
    return responses(sim)


def market(sim, bids, asks):
    """A valid book from a snapshot: bids / asks as [(price, qty)]."""
    recs = [l2(BUY, p, q, R.F_SNAPSHOT) for p, q in bids] + [l2(SELL, p, q, R.F_SNAPSHOT) for p, q in asks]
    feed(sim, *recs, batch(), status(True))


def kinds(res):
    return [(int(r["rtype"]), int(r.get("exec_type", 0)) if r["rtype"] == R.RT_ACK else None) for r in res]


# ---- queue position ------------------------------------------------------------------------------
def test_resting_order_joins_behind_displayed_qty_and_fills_only_after_trades_consume_it():
    sim = make()
    market(sim, [(100, 10), (99, 5)], [(101, 7)])
    (ack,) = send(sim, new(1, BUY, 100, 4))
    assert ack["rtype"] == R.RT_ACK and ack["exec_type"] == R.EXEC_NEW and ack["leaves_qty"] == 4
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == 10.0
    assert feed(sim, trade(100, 6, SELL)) == []               # 4 still ahead
    (f,) = feed(sim, trade(100, 6, SELL))                     # 2 reach us: a real partial fill
    assert f["rtype"] == R.RT_FILL and f["last_qty"] == 2 and f["last_price"] == 100
    assert f["leaves_qty"] == 2 and f["cum_qty"] == 2 and f["liquidity"] == M.LIQ_MAKER
    assert f["ord_status"] == ord("1")
    (f2,) = feed(sim, trade(100, 5, SELL))
    assert f2["last_qty"] == 2 and f2["leaves_qty"] == 0 and f2["ord_status"] == ord("2")
    assert M.find(sim, 0, 1) >= 0 and M.order_view(sim, M.find(sim, 0, 1))["state"] == M.OS_DONE


def test_buyer_initiated_trade_does_not_touch_our_bid():
    sim = make()
    market(sim, [(100, 1)], [(101, 7)])
    send(sim, new(1, BUY, 100, 4))
    assert feed(sim, trade(100, 50, BUY)) == []


def test_risk_averse_cancellations_only_clamp_the_queue_ahead():
    sim = make()
    market(sim, [(100, 10)], [(101, 7)])
    send(sim, new(1, BUY, 100, 1))
    feed(sim, l2(BUY, 100, 12), batch())                      # others joined behind us
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == 10.0
    feed(sim, l2(BUY, 100, 6), batch())                       # 6 cancelled: ahead shrinks to <= 6
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == 6.0


@pytest.mark.parametrize("model,n", [("power", 2.0), ("log", 1.0), ("power2", 3.0),
                                     ("log2", 1.0), ("power3", 2.0)])
def test_probabilistic_models_take_a_share_of_each_decrease_from_ahead(model, n):
    sim = make(queue_model=model, queue_power=n)
    market(sim, [(100, 10)], [(101, 7)])
    send(sim, new(1, BUY, 100, 1))
    feed(sim, l2(BUY, 100, 30), batch())                      # 20 joined behind: front 10, back 20
    feed(sim, l2(BUY, 100, 15), batch())                      # 15 cancelled somewhere
    front, back, chg = 10.0, 20.0, 15.0
    f = {"power": lambda x: x ** n, "log": lambda x: math.log1p(x)}
    if model in ("power", "log"):
        p = f[model](back) / (f[model](back) + f[model](front))
    elif model == "power2":
        p = back ** n / (back + front) ** n
    elif model == "log2":
        p = math.log1p(back) / math.log1p(back + front)
    else:
        p = 1 - (front / (front + back)) ** n
    est = max(0.0, min(front - (1 - p) * chg + min(0.0, back - p * chg), 15.0))
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == pytest.approx(est)
    assert 0 <= M.order_view(sim, M.find(sim, 0, 1))["front"] < 10.0


def test_probabilistic_model_does_not_count_a_trade_twice():
    sim = make(queue_model="power", queue_power=2.0)
    market(sim, [(100, 10)], [(101, 7)])
    send(sim, new(1, BUY, 100, 1))
    feed(sim, trade(100, 4, SELL))                            # ahead 10 -> 6
    feed(sim, l2(BUY, 100, 6), batch())                       # the book shows the same trade
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == 6.0


def test_trade_through_our_price_fills_everything_left():
    sim = make()
    market(sim, [(100, 10), (99, 5)], [(101, 7)])
    send(sim, new(1, BUY, 100, 3))
    (f,) = feed(sim, trade(99, 1, SELL))
    assert f["last_qty"] == 3 and f["last_price"] == 100 and f["liquidity"] == M.LIQ_MAKER


def test_book_moving_through_a_resting_order_fills_it_at_its_price_at_batch_end():
    sim = make()
    market(sim, [(100, 10)], [(102, 7)])
    send(sim, new(1, BUY, 101, 5))
    assert feed(sim, l2(SELL, 101, 2)) == []                  # mid-frame: nothing yet
    (f,) = feed(sim, batch())                                 # only 2 available at 101
    assert f["last_price"] == 101 and f["last_qty"] == 2 and f["liquidity"] == M.LIQ_MAKER
    assert feed(sim, batch()) == []                           # what we took is not taken again
    (f2,) = feed(sim, l2(SELL, 100, 9), batch())              # a lower ask crosses the rest
    assert f2["last_qty"] == 3 and f2["last_price"] == 101 and f2["leaves_qty"] == 0


# ---- taking liquidity --------------------------------------------------------------------------------
def test_crossing_order_walks_the_book_as_taker_and_rests_the_remainder():
    sim = make(fees={"binance": [2.0, 10.0]}, tick_e8=1_000_000, lot_e8=100_000)
    market(sim, [(100, 10)], [(101, 3), (102, 4), (104, 9)])
    res = send(sim, new(1, BUY, 102, 10))
    assert kinds(res) == [(R.RT_ACK, R.EXEC_NEW), (R.RT_FILL, None), (R.RT_FILL, None)]
    f1, f2 = res[1], res[2]
    assert (f1["last_price"], f1["last_qty"], f2["last_price"], f2["last_qty"]) == (101, 3, 102, 4)
    assert f1["liquidity"] == f2["liquidity"] == M.LIQ_TAKER
    # notional_e8 = price * qty * tick_e8 * lot_e8 / 1e8; taker 10 bps
    assert f1["fee"] == 101 * 3 * 1_000_000 * 100_000 // 10**8 * 1000 // 10**6
    assert f2["leaves_qty"] == 3
    row = M.find(sim, 0, 1)
    assert M.order_view(sim, row)["state"] == M.OS_WORKING and M.order_view(sim, row)["leaves"] == 3
    # the liquidity it took is gone for the next taker
    res = send(sim, new(2, BUY, 102, 5, tif=R.TIF_IOC))
    assert kinds(res) == [(R.RT_ACK, R.EXEC_NEW), (R.RT_ACK, M.EXEC_EXPIRED)]
    assert res[1]["leaves_qty"] == 0 and res[1]["ord_status"] == M.ST_EXPIRED


def test_post_only_that_would_cross_is_rejected_without_ack():
    sim = make()
    market(sim, [(100, 10)], [(101, 3)])
    (rej,) = send(sim, new(1, BUY, 101, 1, flags=R.F_POST_ONLY))
    assert rej["rtype"] == R.RT_REJECT and rej["is_cancel_reject"] == 0
    assert rej["text"].rstrip(b"\0") == b"post-only order would take liquidity"
    (ack,) = send(sim, new(2, BUY, 100, 1, flags=R.F_POST_ONLY))
    assert ack["exec_type"] == R.EXEC_NEW


def test_fok_without_enough_liquidity_expires_untouched_and_with_enough_fills_whole():
    sim = make()
    market(sim, [(100, 10)], [(101, 3), (102, 4)])
    res = send(sim, new(1, BUY, 102, 8, tif=R.TIF_FOK))
    assert kinds(res) == [(R.RT_ACK, R.EXEC_NEW), (R.RT_ACK, M.EXEC_EXPIRED)]
    res = send(sim, new(2, BUY, 102, 7, tif=R.TIF_FOK))
    assert [r["last_qty"] for r in res[1:]] == [3, 4] and res[-1]["ord_status"] == ord("2")


def test_market_order_walks_and_expires_its_remainder_and_needs_a_book():
    sim = make()
    (rej,) = send(sim, new(1, SELL, 0, 5, ord_type=R.ORD_MARKET))
    assert rej["rtype"] == R.RT_REJECT and rej["reason"] == 2
    market(sim, [(100, 2), (98, 1)], [(101, 3)])
    res = send(sim, new(2, SELL, 0, 5, ord_type=R.ORD_MARKET))
    assert [(r["last_price"], r["last_qty"]) for r in res if r["rtype"] == R.RT_FILL] == [(100, 2), (98, 1)]
    assert res[-1]["rtype"] == R.RT_ACK and res[-1]["exec_type"] == M.EXEC_EXPIRED


def test_limit_order_rests_without_a_market_and_joins_behind_the_snapshot():
    sim = make()
    (ack,) = send(sim, new(1, BUY, 100, 2))
    assert ack["exec_type"] == R.EXEC_NEW
    market(sim, [(100, 10)], [(101, 3)])
    assert M.order_view(sim, M.find(sim, 0, 1))["front"] == 10.0
    assert feed(sim, trade(100, 10, SELL)) == []
    (f,) = feed(sim, trade(100, 2, SELL))
    assert f["last_qty"] == 2


def test_duplicate_clordid_and_unknown_instrument_are_rejected_with_reasons():
    sim = make()
    market(sim, [(100, 10)], [(101, 3)])
    send(sim, new(1, BUY, 99, 1))
    (dup,) = send(sim, new(1, BUY, 99, 1))
    assert dup["rtype"] == R.RT_REJECT and dup["reason"] == 6
    other = new(2, BUY, 99, 1)
    other.view(R.NEW_ORDER)[0]["instrument"] = 5
    (unk,) = send(sim, other)
    assert unk["reason"] == 1 and unk["text"].rstrip(b"\0") == b"unknown instrument"
    (same_id_other_session,) = send(sim, new(1, BUY, 99, 1, session=1))
    assert same_id_other_session["rtype"] == R.RT_ACK


# ---- cancel / replace / mass cancel ----------------------------------------------------------------------
def test_cancel_working_unknown_and_too_late():
    sim = make()
    market(sim, [(100, 10)], [(101, 3)])
    send(sim, new(1, BUY, 100, 1))
    (ok,) = send(sim, cancel(2, 1))
    assert ok["exec_type"] == R.EXEC_CANCELED and ok["clord_id"] == 2 and ok["orig_clord_id"] == 1
    assert ok["leaves_qty"] == 0 and ok["ord_status"] == M.ST_CANCELED
    (late,) = send(sim, cancel(3, 1))
    assert late["rtype"] == R.RT_REJECT and late["is_cancel_reject"] == 1 and late["reason"] == 0
    assert late["ord_status"] == M.ST_CANCELED
    (unk,) = send(sim, cancel(4, 77))
    assert unk["reason"] == 1 and unk["ord_status"] == M.ST_REJECTED


def test_replace_keeps_priority_only_for_same_price_smaller_size():
    sim = make()
    market(sim, [(100, 10), (99, 8)], [(101, 3)])
    send(sim, new(1, BUY, 100, 5))
    feed(sim, trade(100, 4, SELL))                            # 6 ahead now
    (a,) = send(sim, replace(2, 1, BUY, 100, 3))
    assert a["exec_type"] == R.EXEC_REPLACED and a["clord_id"] == 2 and a["orig_clord_id"] == 1
    assert a["qty"] == 3 and a["leaves_qty"] == 3
    assert M.order_view(sim, M.find(sim, 0, 2))["front"] == 6.0
    assert M.find(sim, 0, 1) < 0                              # the old id is gone
    send(sim, replace(3, 2, BUY, 99, 3))
    assert M.order_view(sim, M.find(sim, 0, 3))["front"] == 8.0
    (rej,) = send(sim, replace(4, 3, SELL, 99, 3))
    assert rej["rtype"] == R.RT_REJECT and rej["is_cancel_reject"] == 1


def test_replace_into_the_ask_takes_liquidity_unless_post_only():
    sim = make()
    market(sim, [(100, 10)], [(101, 3)])
    send(sim, new(1, BUY, 100, 2, flags=R.F_POST_ONLY))
    (rej,) = send(sim, replace(2, 1, BUY, 101, 2, flags=R.F_POST_ONLY))
    assert rej["rtype"] == R.RT_REJECT and rej["is_cancel_reject"] == 1
    res = send(sim, replace(3, 1, BUY, 101, 2))
    assert kinds(res) == [(R.RT_ACK, R.EXEC_REPLACED), (R.RT_FILL, None)]
    assert res[1]["liquidity"] == M.LIQ_TAKER and res[1]["clord_id"] == 3


def test_mass_cancel_cancels_only_the_sessions_working_orders():
    sim = make()
    market(sim, [(100, 10)], [(101, 3)])
    send(sim, new(1, BUY, 99, 1))
    send(sim, new(2, SELL, 105, 1))
    send(sim, new(3, BUY, 98, 1, session=1))
    res = send(sim, order(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, scope=7, session=0))
    assert sorted(int(r["clord_id"]) for r in res) == [1, 2]
    assert all(r["exec_type"] == R.EXEC_CANCELED for r in res)
    assert int(sim.ctr[M.C_MASS_LAST]) == 2
    assert M.order_view(sim, M.find(sim, 1, 3))["state"] == M.OS_WORKING


def test_rows_are_recycled_and_ids_of_recycled_orders_forgotten():
    sim = M.make_sim([{"venue": "binance", "instrument": 0}], M.settings({"max_orders": 16}))
    market(sim, [(100, 10)], [(101, 3)])
    for i in range(1, 200):
        res = send(sim, new(i, BUY, 99, 1))
        assert res[0]["exec_type"] == R.EXEC_NEW, res
        send(sim, cancel(10_000 + i, i))
    assert M.find(sim, 0, 199) >= 0 and M.find(sim, 0, 1) < 0


# ---- latency ----------------------------------------------------------------------------------------------
def test_entry_and_response_latency_delay_in_send_order():
    sim = make(latency={"entry": 50_000, "response": 20_000})
    market(sim, [(100, 10)], [(101, 3)])
    assert M.submit(sim, new(1, BUY, 99, 1), 1_000) == M.OK
    assert M.submit(sim, new(2, BUY, 99, 1), 1_010) == M.OK
    assert M.next_arrival(sim) == 51_000
    assert M.process_arrivals(sim, 50_999) == 0
    assert M.process_arrivals(sim, 60_000) == 2
    assert M.next_response(sim) == 71_000
    out = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)
    assert M.pop_response(sim, out) == 71_000 and M.pop_response(sim, out) == 71_010
    assert M.next_response(sim) == M.NEVER


def test_random_latency_is_reproducible_and_never_reorders():
    lat = {"entry": {"dist": "lognormal", "median_ns": 40_000, "sigma": 1.0, "floor_ns": 5_000}}
    draws = []
    for _ in range(2):
        sim = make(latency=lat, seed=7)
        market(sim, [(100, 10)], [(101, 3)])
        sent = [1_000 + i * 1_000_000 for i in range(200)]        # one order a millisecond
        for i, t in enumerate(sent):
            assert M.submit(sim, new(i + 1, BUY, 90, 1), t) == M.OK
        arrivals = [int(x) for x in sim.inq_t[:200]]
        assert M.process_arrivals(sim, arrivals[-1]) > 0
        draws.append(arrivals)
    assert draws[0] == draws[1]
    a = draws[0]
    assert a == sorted(a)                                          # never overtakes
    assert all(x - t >= 5_000 for x, t in zip(a, sent))            # the floor
    lat_ = [x - t for x, t in zip(a, sent)]
    assert len(set(lat_)) > 150 and 20_000 < float(np.median(lat_)) < 80_000
    sim = make(latency=lat, seed=8)
    assert [int(M.draw(sim, M.LAT_ENTRY)) for _ in range(5)] != lat_[:5]


def test_uniform_and_normal_draws_stay_within_their_bounds():
    sim = make(latency={"entry": {"dist": "uniform", "min_ns": 1_000, "max_ns": 2_000},
                        "feed": {"dist": "normal", "mean_ns": 500, "std_ns": 1_000, "floor_ns": 100}})
    u = [int(M.draw(sim, M.LAT_ENTRY)) for _ in range(2000)]
    g = [int(M.draw(sim, M.LAT_FEED)) for _ in range(2000)]
    assert 1_000 <= min(u) and max(u) <= 2_000 and 1_400 < np.mean(u) < 1_600
    assert min(g) == 100 and max(g) > 2_000


# ---- settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table,msg", [
    ({"queue_model": "fifo"}, "queue_model"),
    ({"latency": {"entry": {"dist": "gamma"}}}, "latency.entry.dist"),
    ({"latency": {"entry": {"dist": "uniform", "min_ns": 5}}}, "max_ns"),
    ({"latency": {"entry": -1}}, "latency.entry"),
    ({"latency": {"exit": 1}}, "latency.exit"),
    ({"fees": {"nasdaq": [1, 2]}}, "fees.nasdaq"),
    ({"fees": {"binance": 1}}, "fees.binance"),
    ({"max_orders": 3}, "max_orders"),
    ({"tick": 1}, "sim.exchange.tick"),
])
def test_bad_settings_name_the_key(table, msg):
    with pytest.raises(M.SimConfigError, match=msg.replace(".", r"\.")):
        M.settings(table)


# ---- real recorded input ---------------------------------------------------------------------------------
def test_recorded_session_keeps_the_same_book_as_the_feed_and_a_trade_through_fills_us():
    from appliance.sim import backtest as B
    from appliance.venues import replay
    mdi = B.load_input("tests/data/venues/COINBASE.ws.28.0", "coinbase")
    k = mdi.symbols.index("SKL-USD")
    sim = M.make_sim([{"venue": "coinbase", "instrument": k}], M.settings({}))
    recs = mdi.records
    ins = np.ascontiguousarray(recs[:, 12:16]).view(np.uint32)[:, 0]
    placed = None
    fills = []
    for i in range(len(recs)):
        r = recs[i]
        if placed is None and ins[i] == k and r[8] == R.RT_TRADE and sim.ins[0, M.I_VALID]:
            t = r.view(R.TRADE)[0]
            ask = int(sim.px[0, 1, sim.n[0, 1] - 1])
            if t["side"] == SELL and ask - int(t["price"]) > 1:
                # a bid one tick above the print, inside the spread: the seller sweeps through it
                placed = int(t["price"]) + 1
                o = new(1, BUY, placed, 1)
                o.view(R.NEW_ORDER)[0]["venue"] = R.VENUE_COINBASE
                o.view(R.NEW_ORDER)[0]["instrument"] = k
                assert send(sim, o, int(mdi.times[i]))[0]["exec_type"] == R.EXEC_NEW
        assert M.on_md(sim, r, 0, int(mdi.times[i])) >= 0
        fills += [x for x in responses(sim) if x["rtype"] == R.RT_FILL]
    feed = replay.run("tests/data/venues/COINBASE.ws.28.0", "coinbase")
    want = feed.book_levels(k, 0)[:20], feed.book_levels(k, 1)[:20]
    got = ([(int(sim.px[0, 0, sim.n[0, 0] - 1 - j]), int(sim.qty[0, 0, sim.n[0, 0] - 1 - j])) for j in range(20)],
           [(int(sim.px[0, 1, sim.n[0, 1] - 1 - j]), int(sim.qty[0, 1, sim.n[0, 1] - 1 - j])) for j in range(20)])
    assert got == want
    assert placed is not None and len(fills) == 1
    assert fills[0]["last_price"] == placed and fills[0]["last_qty"] == 1
    assert fills[0]["liquidity"] == M.LIQ_MAKER
