"""Positions ledger: exact integer average cost, realised/unrealised PnL, fees, balances."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.engine import positions as P
from appliance.transport.records import SIDE_BUY, SIDE_SELL

BUY, SELL = SIDE_BUY, SIDE_SELL
BASE, QUOTE = 0, 1
V = 1  # binance


def ledger(tick_e8=10**6, lot_e8=10**3, balances=None):
    """BTC-USDT-like: tick 0.01 quote, lot 1e-5 base -> one tick-lot = 1e-7 quote = 10 e8."""
    spec = dict(venue="binance", instrument=0, base_asset=BASE, quote_asset=QUOTE, tick_e8=tick_e8, lot_e8=lot_e8)
    return P.make_ledger([spec], 2, balances)


def test_value_factors_reduce_tick_times_lot_over_1e8():
    led = ledger(tick_e8=10**6, lot_e8=10**3)
    assert (led.instr[0]["value_mult"], led.instr[0]["value_div"]) == (10, 1)
    led = ledger(tick_e8=10**6, lot_e8=1)           # 0.01 quote tick, 1e-8 base lot
    assert (led.instr[0]["value_mult"], led.instr[0]["value_div"]) == (1, 100)
    # 1 lot (1 satoshi) at 100000.00 (1e7 ticks) = 0.001 quote = 100000 e8
    assert P.notional_e8(led.instr, 0, 10**7, 1) == 100_000


def test_two_buys_keep_exact_cost_basis_and_rational_average():
    led = ledger()
    assert P.apply_fill(led, 0, BUY, 10, 1, 0) == 0
    assert P.apply_fill(led, 0, BUY, 11, 2, 0) == 0
    p = led.pos[0]
    assert (p["qty"], p["cost"]) == (3, 32)
    assert P.avg_price(led, 0) == pytest.approx(32 / 3)


def test_partial_closes_floor_the_removed_cost_and_the_round_trip_is_exact():
    led = ledger()
    P.apply_fill(led, 0, BUY, 10, 1, 0)
    P.apply_fill(led, 0, BUY, 11, 2, 0)
    assert P.apply_fill(led, 0, SELL, 12, 1, 0) == 0
    p = led.pos[0]
    assert (p["qty"], p["cost"], p["realised"]) == (2, 22, 2)      # removed 32*1//3 = 10
    assert P.apply_fill(led, 0, SELL, 12, 2, 0) == 1               # closes the round trip
    p = led.pos[0]
    assert (p["qty"], p["cost"], p["realised"]) == (0, 0, 12 * 3 - 32)
    assert led.acct[P.A_RT_COUNT] == 1
    assert led.acct[P.A_LAST_RT_E8] == 4 * 10
    assert led.acct[P.A_LOSS_STREAK] == 0


def test_short_position_realises_gain_when_bought_back_lower():
    led = ledger()
    P.apply_fill(led, 0, SELL, 100, 5, 0)
    assert (led.pos[0]["qty"], led.pos[0]["cost"]) == (-5, -500)
    assert P.unrealised_tl(led, 0, 90) == 50
    assert P.apply_fill(led, 0, BUY, 90, 5, 0) == 1
    assert led.pos[0]["realised"] == 50
    assert led.acct[P.A_REALISED_E8] == 500


def test_fill_crossing_zero_closes_the_trip_and_opens_the_rest_at_fill_price():
    led = ledger()
    P.apply_fill(led, 0, BUY, 100, 4, 0)
    assert P.apply_fill(led, 0, SELL, 97, 10, 0) == 1
    p = led.pos[0]
    assert (p["qty"], p["cost"], p["realised"]) == (-6, -6 * 97, -12)
    assert led.acct[P.A_LOSS_STREAK] == 1
    assert p["rt_realised"] == 0


def test_fees_make_a_gross_winner_a_losing_round_trip_and_hit_the_quote_balance():
    led = ledger(balances={("binance", QUOTE): 10**12, ("binance", BASE): 0})
    P.apply_fill(led, 0, BUY, 100, 10, 30)
    # notional 100*10 tick-lots = 1000 tl = 10000 e8
    assert led.balances[V, QUOTE] == 10**12 - 10_000 - 30
    assert led.balances[V, BASE] == 10 * 10**3
    P.apply_fill(led, 0, SELL, 101, 10, 30)      # gross +10 tl = +100 e8, fees 60 e8... net +40
    assert led.acct[P.A_LAST_RT_E8] == 100 - 60
    assert led.acct[P.A_LOSS_STREAK] == 0
    P.apply_fill(led, 0, BUY, 100, 10, 80)
    P.apply_fill(led, 0, SELL, 101, 10, 80)      # gross +100 e8, fees 160 e8: a losing trip
    assert led.acct[P.A_LAST_RT_E8] == -60
    assert led.acct[P.A_LOSS_STREAK] == 1
    assert led.acct[P.A_FEES_E8] == 220
    assert led.pos[0]["fees_e8"] == 220
    assert led.balances[V, QUOTE] == 10**12 + 2 * 100 - 220
    assert led.balances[V, BASE] == 0


def test_loss_streak_counts_consecutive_losers_and_break_even_resets_it():
    led = ledger()
    for _ in range(3):
        P.apply_fill(led, 0, BUY, 100, 1, 0)
        P.apply_fill(led, 0, SELL, 99, 1, 0)
    assert led.acct[P.A_LOSS_STREAK] == 3
    P.apply_fill(led, 0, BUY, 100, 1, 0)
    P.apply_fill(led, 0, SELL, 100, 1, 0)
    assert led.acct[P.A_LOSS_STREAK] == 0
    assert led.acct[P.A_RT_COUNT] == 4


def test_equity_sums_realised_unrealised_minus_fees_and_skips_unmarked():
    led = ledger()
    P.apply_fill(led, 0, BUY, 100, 10, 7)
    P.apply_fill(led, 0, SELL, 104, 4, 0)          # realised 4*4 = 16 tl
    # remaining 6 lots at cost 600, mark 110 -> unrealised 60 tl
    assert P.equity_e8(led, np.array([110])) == (16 + 60) * 10 - 7
    assert P.equity_e8(led, np.array([0])) == 16 * 10 - 7


@pytest.mark.parametrize("side,price,qty", [(BUY, 100, 0), (BUY, 0, 1), (3, 100, 1), (SELL, -5, 1)])
def test_invalid_fill_is_refused_and_books_nothing(side, price, qty):
    led = ledger()
    assert P.apply_fill(led, 0, side, price, qty, 5) == P.POS_INVALID
    assert led.pos[0]["n_fills"] == 0 and led.acct[P.A_FEES_E8] == 0


def test_instrument_table_rejects_unknown_keys_and_nonpositive_sizes():
    with pytest.raises(ValueError, match="tick_sz"):
        P.instrument_table([dict(venue="sim", instrument=0, base_asset=0, quote_asset=1, tick_sz=1, lot_e8=1)])
    with pytest.raises(ValueError, match="must be > 0"):
        P.instrument_table([dict(venue="sim", instrument=0, base_asset=0, quote_asset=1, tick_e8=0, lot_e8=1)])


def test_instrument_map_finds_rows_and_rejects_duplicates():
    specs = [dict(venue="binance", instrument=1, base_asset=0, quote_asset=1, tick_e8=1, lot_e8=1),
             dict(venue="kraken", instrument=0, base_asset=0, quote_asset=1, tick_e8=1, lot_e8=1)]
    imap = P.instrument_map(P.instrument_table(specs))
    assert P.instrument_index(imap, 1, 1) == 0
    assert P.instrument_index(imap, 3, 0) == 1
    assert P.instrument_index(imap, 3, 1) == -1
    assert P.instrument_index(imap, 7, 9) == -1
    with pytest.raises(ValueError, match="twice"):
        P.instrument_map(P.instrument_table(specs + specs[:1]))
