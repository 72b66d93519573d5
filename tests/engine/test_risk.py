"""Risk gate: every tier-1 check on both sides of its limit, circuit-breaker transitions and resets,
the max-loss kill switch in the control block, and [risk] config validation."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.config import ConfigError
from appliance.transport import control
from appliance.engine import oms as O
from appliance.engine import positions as P
from appliance.transport import records as R
from appliance.engine import risk as K

BUY, SELL = R.SIDE_BUY, R.SIDE_SELL
V = R.VENUE_BINANCE
BASE, QUOTE = 0, 1
DAY = K.DAY_NS
T0 = 19_700 * DAY + 10 * 3600 * 10**9          # a day at 10:00 UTC
REF, BID, ASK = 10_000, 9_995, 10_005
RUNNING, REDUCING, PAUSED, HALTED = R.RISK_RUNNING, R.RISK_REDUCING, R.RISK_PAUSED, R.RISK_HALTED


class Env:
    def __init__(self, limits=None, venue=None, breaker=None):
        spec = dict(venue="binance", instrument=0, base_asset=BASE, quote_asset=QUOTE, tick_e8=10**6, lot_e8=10**3)
        self.led = P.make_ledger([spec], 2, {("binance", BASE): 10**15, ("binance", QUOTE): 10**15})
        self.oms = O.make_oms(64, 1, max_live=16, first_clord_id=1)
        lim = np.zeros(1, K.LIMITS)
        lim[0] = (100, 10**15, 1000, 10, 100, 10, 1, 0)
        for k, v in (limits or {}).items():
            lim[0][k] = v
        vl = np.zeros(P.N_VENUES, K.VENUE_LIMITS)
        vl[V] = (10, 100, 1)
        for k, v in (venue or {}).items():
            vl[V][k] = v
        b = K.default_breaker()
        for k, v in (breaker or {}).items():
            b[k] = v
        self.risk = K.make_risk(lim, vl, b, self.led.instr)
        self.words = np.zeros(1, R.CONTROL_BLOCK).view(np.uint64)

    def order(self, side=BUY, price=REF, qty=10, ref=REF, bid=BID, ask=ASK, now=T0):
        return K.check_order(self.risk, self.oms, self.led, 0, side, price, qty,
                             K.Touch(ref, bid, ask), now)

    def place(self, side, price, qty):
        return O.check(O.new_order(self.oms, self.led, 0, side, price, qty, R.TIF_GTC, 0, -1, T0))

    def update(self, mark, now=T0):
        return K.breaker_update(self.risk, self.led, np.array([mark], np.int64), now, self.words)

    @property
    def cb(self):
        return self.words.view(R.CONTROL_BLOCK)[0]


def _set_balance(asset, amount):
    def pre(e):
        e.led.balances[V, asset] = amount
    return pre


def _state(s):
    def pre(e):
        e.risk.state[K.R_STATE] = s
    return pre


def _long(qty):
    def pre(e):
        P.apply_fill(e.led, 0, BUY, REF, qty, 0)
    return pre


def _tokens_used(n, at):
    def pre(e):
        for _ in range(n):
            assert K.check_cancel(e.risk, e.led, 0, at) == K.RJ_OK
    return pre


def _then(*fns):
    def pre(e):
        for f in fns:
            f(e)
    return pre


NOTIONAL_50 = REF * 50 * 10                       # e8 of 50 lots at REF

# (id, limits, venue limits, setup, order kwargs, expected)
TIER1 = [
    ("max_qty_at_limit", {}, {}, None, dict(qty=100), K.RJ_OK),
    ("max_qty_over", {}, {}, None, dict(qty=101), K.RJ_MAX_QTY),
    ("notional_at_limit", {"max_notional_e8": NOTIONAL_50}, {}, None, dict(qty=50), K.RJ_OK),
    ("notional_over", {"max_notional_e8": NOTIONAL_50}, {}, None, dict(qty=51), K.RJ_MAX_NOTIONAL),
    ("position_at_limit", {"max_position": 50}, {}, None, dict(qty=50), K.RJ_OK),
    ("position_over", {"max_position": 50}, {}, None, dict(qty=51), K.RJ_POSITION),
    ("position_short_at_limit", {"max_position": 50}, {}, None, dict(side=SELL, qty=50), K.RJ_OK),
    ("position_short_over", {"max_position": 50}, {}, None, dict(side=SELL, qty=51), K.RJ_POSITION),
    ("worst_case_with_open_and_held_at_limit", {"max_position": 50}, {},
     _then(_long(10), lambda e: e.place(BUY, REF - 5, 20)), dict(qty=20), K.RJ_OK),
    ("worst_case_with_open_and_held_over", {"max_position": 50}, {},
     _then(_long(10), lambda e: e.place(BUY, REF - 5, 20)), dict(qty=21), K.RJ_POSITION),
    ("open_orders_below_limit", {"max_open_orders": 2}, {}, lambda e: e.place(BUY, REF - 5, 1), {}, K.RJ_OK),
    ("open_orders_at_limit", {"max_open_orders": 2}, {},
     _then(lambda e: e.place(BUY, REF - 5, 1), lambda e: e.place(BUY, REF - 6, 1)), {}, K.RJ_OPEN_ORDERS),
    ("collar_at_limit_above", {}, {}, None, dict(price=REF + 100), K.RJ_OK),
    ("collar_over_above", {}, {}, None, dict(price=REF + 101), K.RJ_COLLAR),
    ("collar_at_limit_below", {}, {}, None, dict(side=SELL, price=REF - 100), K.RJ_OK),
    ("collar_over_below", {}, {}, None, dict(side=SELL, price=REF - 101), K.RJ_COLLAR),
    ("no_reference_price", {}, {}, None, dict(ref=0), K.RJ_NO_REFERENCE),
    ("spread_at_limit", {}, {}, None, dict(bid=BID, ask=BID + 10), K.RJ_OK),
    ("spread_over", {}, {}, None, dict(bid=BID, ask=BID + 11), K.RJ_SPREAD),
    ("spread_crossed_book", {}, {}, None, dict(bid=ASK, ask=BID), K.RJ_SPREAD),
    ("throttle_refilled", {}, {"burst": 2}, _tokens_used(2, T0 - 100_000_000), {}, K.RJ_OK),
    ("throttle_empty", {}, {"burst": 2}, _tokens_used(2, T0 - 99_999_999), {}, K.RJ_THROTTLE),
    ("self_trade_below_own_ask", {}, {}, lambda e: e.place(SELL, REF + 10, 1), dict(price=REF + 9), K.RJ_OK),
    ("self_trade_at_own_ask", {}, {}, lambda e: e.place(SELL, REF + 10, 1), dict(price=REF + 10), K.RJ_SELF_TRADE),
    ("self_trade_sell_above_own_bid", {}, {}, lambda e: e.place(BUY, REF - 10, 1),
     dict(side=SELL, price=REF - 9), K.RJ_OK),
    ("self_trade_sell_at_own_bid", {}, {}, lambda e: e.place(BUY, REF - 10, 1),
     dict(side=SELL, price=REF - 10), K.RJ_SELF_TRADE),
    ("balance_quote_exact", {}, {}, _set_balance(QUOTE, REF * 10 * 10), {}, K.RJ_OK),
    ("balance_quote_short_by_one", {}, {}, _set_balance(QUOTE, REF * 10 * 10 - 1), {}, K.RJ_BALANCE),
    ("balance_quote_reserved_by_open_order", {}, {},
     _then(_set_balance(QUOTE, REF * 10 * 10), lambda e: e.place(BUY, REF - 10, 1)), {}, K.RJ_BALANCE),
    ("balance_base_exact", {}, {}, _set_balance(BASE, 10 * 10**3), dict(side=SELL), K.RJ_OK),
    ("balance_base_short_by_one", {}, {}, _set_balance(BASE, 10 * 10**3 - 1), dict(side=SELL), K.RJ_BALANCE),
    ("balance_check_off", {}, {"check_balance": 0}, _set_balance(QUOTE, 0), {}, K.RJ_OK),
    ("reduce_only_reducing_sell", {}, {}, _then(_long(10), _state(REDUCING)), dict(side=SELL, qty=10), K.RJ_OK),
    ("reduce_only_overshooting_sell", {}, {}, _then(_long(10), _state(REDUCING)), dict(side=SELL, qty=11),
     K.RJ_REDUCE_ONLY),
    ("reduce_only_increasing_buy", {}, {}, _then(_long(10), _state(REDUCING)), dict(qty=1), K.RJ_REDUCE_ONLY),
    ("paused", {}, {}, _state(PAUSED), {}, K.RJ_PAUSED),
    ("halted", {}, {}, _state(HALTED), {}, K.RJ_HALTED),
    ("bad_order_zero_qty", {}, {}, None, dict(qty=0), K.RJ_BAD_ORDER),
    ("fat_finger_price_that_would_overflow_notional", {}, {}, None, dict(price=2**62), K.RJ_COLLAR),
]


@pytest.mark.parametrize("limits,venue,pre,order,expected", [c[1:] for c in TIER1], ids=[c[0] for c in TIER1])
def test_tier1_check_on_each_side_of_its_limit(limits, venue, pre, order, expected):
    e = Env(limits, venue)
    if pre:
        pre(e)
    denials_before = e.risk.denials.copy()
    assert K.RJ_NAMES[int(e.order(**order))] == K.RJ_NAMES[expected]
    delta = e.risk.denials - denials_before
    assert delta[expected] == 1 and delta.sum() == 1          # counted once, under its reason


def test_denied_order_does_not_consume_a_throttle_token():
    e = Env(venue={"burst": 1})
    assert e.order(qty=101) == K.RJ_MAX_QTY
    assert e.order() == K.RJ_OK
    assert e.order() == K.RJ_THROTTLE


def test_replace_check_counts_only_the_leaves_increase_and_ignores_its_own_order():
    e = Env({"max_position": 50})
    r = e.place(BUY, REF, 30)
    O.apply_exec(e.oms, e.led, _ack_new(1), T0)
    assert K.check_replace(e.risk, e.oms, e.led, r, REF + 1, 50, K.Touch(REF, BID, ASK), T0) == K.RJ_OK
    assert K.check_replace(e.risk, e.oms, e.led, r, REF + 1, 51, K.Touch(REF, BID, ASK), T0) == K.RJ_POSITION


def _ack_new(clord):
    a = np.zeros(1, R.ACK)
    a["rtype"], a["venue"], a["clord_id"], a["exec_type"] = R.RT_ACK, V, clord, R.EXEC_NEW
    return a.view(np.uint8)


def _losing_round_trip(e):
    P.apply_fill(e.led, 0, BUY, REF, 1, 0)
    P.apply_fill(e.led, 0, SELL, REF - 1, 1, 0)


def test_loss_streak_moves_running_to_reducing_to_paused():
    e = Env(breaker={K.B_STREAK_REDUCE: 2, K.B_STREAK_PAUSE: 3})
    _losing_round_trip(e)
    assert e.update(REF) == RUNNING
    _losing_round_trip(e)
    assert e.update(REF) == REDUCING
    assert e.risk.state[K.R_CAUSE] == K.CB_LOSS_STREAK
    assert e.order() == K.RJ_REDUCE_ONLY
    _losing_round_trip(e)
    assert e.update(REF) == PAUSED
    assert e.order() == K.RJ_PAUSED


def test_drawdown_from_peak_reduces_then_pauses_and_never_deescalates_by_itself():
    e = Env(breaker={K.B_DD_REDUCE_E8: 1000, K.B_DD_PAUSE_E8: 3000})
    P.apply_fill(e.led, 0, BUY, 100, 10, 0)            # 1 tick on 10 lots = 100 e8
    assert e.update(110) == RUNNING and e.risk.state[K.R_PEAK_E8] == 1000
    assert e.update(101) == RUNNING                    # drawdown 900
    assert e.update(100) == REDUCING                   # drawdown 1000
    assert e.update(80) == PAUSED                      # equity -2000, drawdown 3000
    assert e.update(130) == PAUSED


def test_reject_rate_over_threshold_pauses_and_old_window_is_forgotten():
    e = Env(breaker={K.B_REJ_PCT: 50, K.B_REJ_MIN_ORDERS: 4, K.B_REJ_WINDOW_NS: 60 * 10**9})
    for i in range(4):
        assert e.order(now=T0 + i) == K.RJ_OK
    assert K.on_venue_reject(e.risk, T0 + 10) == RUNNING      # 1 of 4
    later = T0 + 61 * 10**9                                   # new window: counts restart
    for i in range(4):
        assert e.order(now=later + i) == K.RJ_OK
    assert K.on_venue_reject(e.risk, later + 10) == RUNNING
    assert K.on_venue_reject(e.risk, later + 11) == PAUSED    # 2 of 4 = 50 %
    assert e.risk.state[K.R_CAUSE] == K.CB_REJECT_RATE


def test_reject_rate_needs_the_minimum_order_count():
    e = Env(breaker={K.B_REJ_PCT: 50, K.B_REJ_MIN_ORDERS: 4})
    assert e.order() == K.RJ_OK
    assert K.on_venue_reject(e.risk, T0 + 1) == RUNNING
    assert K.on_venue_reject(e.risk, T0 + 2) == RUNNING


def test_max_loss_halts_and_sets_the_kill_switch_once():
    e = Env(breaker={K.B_MAX_LOSS_E8: 1000})
    P.apply_fill(e.led, 0, BUY, 100, 10, 0)
    assert e.update(91) == RUNNING                     # -900
    assert e.update(90, now=T0 + 5) == HALTED          # -1000
    cb = e.cb
    assert (cb["kill"], cb["kill_source"], cb["kill_epoch"], cb["kill_time_ns"]) == (1, 2, 1, T0 + 5)
    assert e.risk.state[K.R_CAUSE] == K.CB_MAX_LOSS
    assert e.update(50, now=T0 + 6) == HALTED
    assert e.cb["kill_epoch"] == 1
    assert e.order() == K.RJ_HALTED
    assert K.breaker_reset(e.risk, e.led, np.array([100]), T0 + 7) == -1


def test_kill_switch_set_by_another_actor_halts_the_gate():
    e = Env()
    control.request_kill(e.words, control.SOURCE_CLI, T0)
    assert e.cb["kill_epoch"] == 1 and e.cb["kill_source"] == 1
    assert e.update(REF) == HALTED
    assert e.risk.state[K.R_CAUSE] == K.CB_KILL
    assert e.order() == K.RJ_HALTED


def test_clearing_the_kill_switch_resumes_trading_but_max_loss_halts_again():
    e = Env(breaker={K.B_MAX_LOSS_E8: 1000})
    control.request_kill(e.words, control.SOURCE_CLI, T0)
    assert e.update(REF) == HALTED
    e.cb["kill"] = 0                                   # what the CLI's reset does
    assert e.update(REF, now=T0 + 1) == RUNNING
    assert e.risk.state[K.R_RESET_CAUSE] == K.CB_MANUAL
    assert e.order() == K.RJ_OK
    P.apply_fill(e.led, 0, BUY, 100, 10, 0)
    assert e.update(90, now=T0 + 2) == HALTED          # -1000 e8
    assert (e.cb["kill"], e.cb["kill_source"], e.cb["kill_epoch"]) == (1, control.SOURCE_MAX_LOSS, 2)


def test_configured_utc_reset_returns_to_running_at_that_time_and_not_before():
    noon = 12 * 3600 * 10**9
    e = Env(breaker={K.B_STREAK_REDUCE: 1, K.B_RESET_TOD_NS: noon})
    _losing_round_trip(e)
    assert e.update(REF) == REDUCING                           # tripped at 10:00
    day0 = (T0 // DAY) * DAY
    assert e.risk.state[K.R_NEXT_RESET_NS] == day0 + noon
    assert e.update(REF, now=day0 + noon - 1) == REDUCING
    assert e.update(REF, now=day0 + noon) == RUNNING
    assert e.risk.state[K.R_RESET_CAUSE] == K.CB_SCHEDULED
    _losing_round_trip(e)
    assert e.update(REF, now=day0 + noon + 3600 * 10**9) == REDUCING    # 13:00: next reset tomorrow
    assert e.risk.state[K.R_NEXT_RESET_NS] == day0 + DAY + noon


def test_manual_reset_restarts_streak_and_peak_so_it_does_not_retrip_at_once():
    e = Env(breaker={K.B_STREAK_REDUCE: 2, K.B_STREAK_PAUSE: 3})
    for _ in range(3):
        _losing_round_trip(e)
    assert e.update(REF) == PAUSED
    assert K.breaker_reset(e.risk, e.led, np.array([REF]), T0 + 1) == 0
    assert e.risk.state[K.R_STATE] == RUNNING and e.risk.state[K.R_RESET_CAUSE] == K.CB_MANUAL
    assert e.update(REF, now=T0 + 2) == RUNNING
    _losing_round_trip(e)                                     # lifetime streak 4, since reset 1
    assert e.update(REF, now=T0 + 3) == RUNNING
    _losing_round_trip(e)
    assert e.update(REF, now=T0 + 4) == REDUCING


def test_build_risk_reads_every_key():
    instr = P.instrument_table([dict(venue="binance", instrument=0, base_asset=0, quote_asset=1,
                                     tick_e8=10**6, lot_e8=10**3)])
    r = K.build_risk({
        "reset_utc": "06:30", "loss_streak_reduce": 3, "loss_streak_pause": 5, "drawdown_reduce": 500.0,
        "drawdown_pause": 1000, "max_loss": 2000.5, "reject_window_s": 30, "reject_min_orders": 20,
        "reject_rate_pct": 50,
        "limits": {"max_qty": 1000, "max_notional": 50000.0, "max_position": 5000, "max_open_orders": 8,
                   "collar_bps": 100, "max_spread_ticks": 1000, "self_trade_prevention": True},
        "instruments": {"binance:BTCUSDT": {"max_qty": 7}},
        "venues": {"binance": {"rate_per_s": 10, "burst": 20, "check_balance": False}},
    }, instr, ["binance:BTCUSDT"])
    b = r.breaker
    assert b[K.B_RESET_TOD_NS] == (6 * 3600 + 30 * 60) * 10**9
    assert (b[K.B_DD_REDUCE_E8], b[K.B_DD_PAUSE_E8], b[K.B_MAX_LOSS_E8]) == (500 * 10**8, 1000 * 10**8, 200050000000)
    assert (b[K.B_REJ_WINDOW_NS], b[K.B_REJ_MIN_ORDERS], b[K.B_REJ_PCT]) == (30 * 10**9, 20, 50)
    # max_value (derived): value_div is 1 on this grid (0.01 x 0.00001 = 10 e8 per tick-lot)
    assert r.limits[0].tolist() == (7, 50000 * 10**8, 5000, 8, 100, 1000, 1, 50000 * 10**8)
    assert r.venue_limits[V].tolist() == (10, 20, 0)
    assert r.buckets[V, 0] == 20 * K.TOKEN


@pytest.mark.parametrize("table,message", [
    ({"max_los": 1}, "risk.max_los: unknown key"),
    ({"limits": {"max_qyt": 1}}, "risk.limits.max_qyt: unknown key"),
    ({"limits": {"max_qty": -1}}, "risk.limits.max_qty: expected an integer"),
    ({"limits": {"self_trade_prevention": 1}}, "expected true/false"),
    ({"reset_utc": "25:00"}, "risk.reset_utc"),
    ({"venues": {"nyse": {}}}, "risk.venues.nyse: unknown key"),
    ({"venues": {"binance": {"burst_size": 3}}}, "risk.venues.binance.burst_size: unknown key"),
    ({"instruments": {"kraken:XBTUSD": {}}}, "risk.instruments.kraken:XBTUSD: unknown key"),
    ({"max_loss": "lots"}, "risk.max_loss: expected a finite amount"),
    ({"max_loss": float("inf")}, "risk.max_loss: expected a finite amount"),
    ({"loss_streak_pause": 10**30}, "risk.loss_streak_pause: expected an integer in"),
    ({"reject_rate_pct": 101}, "reject_rate_pct"),
])
def test_build_risk_rejects_bad_keys_and_values_naming_them(table, message):
    instr = P.instrument_table([dict(venue="binance", instrument=0, base_asset=0, quote_asset=1,
                                     tick_e8=1, lot_e8=1)])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        K.build_risk(table, instr, ["binance:BTCUSDT"])


@pytest.mark.parametrize("tick_e8,lot_e8", [(1, 1), (3, 7), (10**6, 10**3), (25, 10**8)])
def test_notional_limit_matches_the_floored_notional_on_both_sides_of_the_limit(tick_e8, lot_e8):
    """The gate compares price * qty * value_mult with a limit derived once (no division on
    the order path); it must agree with notional_e8 > max_notional_e8 exactly, including where
    the floor of the division matters."""
    spec = dict(venue="binance", instrument=0, base_asset=BASE, quote_asset=QUOTE,
                tick_e8=tick_e8, lot_e8=lot_e8)
    led = P.make_ledger([spec], 2)
    oms = O.make_oms(64, 1, max_live=16, first_clord_id=1)
    vl = np.zeros(P.N_VENUES, K.VENUE_LIMITS)
    vl[V] = (10**6, 10**6, 0)
    rng = np.random.default_rng(5)
    for _ in range(200):
        price = int(rng.integers(1, 10**6))
        qty = int(rng.integers(1, 1000))
        notional = int(P.notional_e8(led.instr, 0, price, qty))
        for limit in (notional - 1, notional, notional + 1):
            lim = np.zeros(1, K.LIMITS)
            lim[0] = (10**6, max(limit, 0), 10**9, 100, 10**4, 10**12, 0, 0)
            rk = K.make_risk(lim, vl, K.default_breaker(), led.instr)
            got = K.check_order(rk, oms, led, 0, BUY, price, qty, K.Touch(price, price, price), T0)
            want = K.RJ_MAX_NOTIONAL if notional > max(limit, 0) else K.RJ_OK
            assert got == want, (price, qty, limit, notional)
