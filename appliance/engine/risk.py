"""The three-tier risk gate: per-order checks, the circuit breaker, and the automatic kill switch.

All state lives in a :class:`Risk` (namedtuple of plain arrays, one argument to numba code) built
from the ``[risk]`` TOML table by :func:`build_risk` (or :func:`make_risk` with explicit limits).
Units follow ``appliance.engine.positions``: prices in ticks, quantities in lots, money in e8 of
the quote asset, time ``now_ns`` = UTC nanoseconds (``clock.tsc_to_utc_ns(cal, rdtsc())``; tests
inject it). Every function is ``@njit(cache=True, nogil=True, _nrt=False)``, O(1) (the self-trade
scan is bounded by the per-instrument live-order list) and allocation-free. ``check`` and
``check_cancel`` are ``forceinline=True``: LLVM inlines them into the engine's order path (a call
would flatten the Risk / Oms / Ledger namedtuples into ~150 argument words, which costs more
than the checks).

Tier 1, per order, before the order ring::

    check(risk, oms, led, req, touch, now_ns) -> RJ_*           the general form
    check_order(risk, oms, led, ii, side, price, qty, touch, now_ns) -> RJ_*
    check_replace(risk, oms, led, row, price, leaves_qty, touch, now_ns) -> RJ_*

``req`` is an :class:`OrderReq` (what the order does to the book of exposures), ``touch`` a
:class:`Touch` (the reference price and the touch it is checked against); both are tuples of
scalars built in compiled code (no allocation), so no two integers of the gate can be swapped
by position.
    check_cancel(risk, led, ii, now_ns) -> RJ_OK | RJ_THROTTLE     (cancels cost a token too)

Checks, in this order (the first failure is returned, ``risk.denials[code]`` counts it;
``denials[RJ_OK]`` counts passes):

    RJ_HALTED        tier 3 kill is active (state HALTED)
    RJ_PAUSED        tier 2 PAUSED: no new orders
    RJ_BAD_ORDER     qty <= 0, price <= 0, bad side or instrument
    RJ_REDUCE_ONLY   tier 2 REDUCING and the order (with open orders on its side) would not
                     strictly reduce the position towards zero
    RJ_MAX_QTY       qty > limits.max_qty
    RJ_NO_REFERENCE  ref_price <= 0 (no fair price to collar against)
    RJ_COLLAR        |price - ref_price| * 10_000 > collar_bps * ref_price (fat finger)
    RJ_MAX_NOTIONAL  price*qty in quote e8 > limits.max_notional_e8 (after the collar and the
                     qty limit, so a fat-finger price cannot overflow the product)
    RJ_SPREAD        bid/ask missing or crossed, or ask - bid > max_spread_ticks
    RJ_OPEN_ORDERS   live orders on the instrument + 1 > max_open_orders
    RJ_POSITION      worst case |position + same-side open orders + qty| > max_position
    RJ_SELF_TRADE    an own live order on the other side would cross (buy >= own ask ...)
    RJ_BALANCE       venue has check_balance and the free balance (balance - reserved by open
                     orders) cannot pay: quote notional for a buy, base lots for a sell
    RJ_THROTTLE      the venue's token bucket (rate_per_s, burst; orders + cancels) is empty

The throttle is last, so a denied order never consumes a token. A pass counts as an order sent
for the reject-rate breaker.

Tier 2, circuit breaker (``risk.state[R_STATE]`` = records.RISK_*; escalates only)::

    breaker_update(risk, led, marks, now_ns, words) -> state     after fills / per book batch
    on_venue_reject(risk, now_ns) -> state                       oms.apply_exec returned EX_REJECT
    breaker_reset(risk, led, marks, now_ns) -> 0 | -1            manual reset; -1 while HALTED

- losing round trips in a row (positions.acct[A_LOSS_STREAK]) >= loss_streak_reduce -> REDUCING,
  >= loss_streak_pause -> PAUSED;
- drawdown of equity from its peak >= drawdown_reduce_e8 -> REDUCING, >= drawdown_pause_e8 -> PAUSED;
- venue rejects >= reject_rate_pct % of orders passed in the current window (window_ns, at least
  reject_min_orders orders) -> PAUSED;
- equity <= -max_loss_e8 -> HALTED and the kill switch is set in the control block with
  ``control.request_kill(words, control.SOURCE_MAX_LOSS, now_ns)`` (kill = 1, kill_source = 2,
  kill_time_ns = now_ns, kill_epoch bumped), once: not when the flag is already set.
- reset: at the configured UTC time of day (``reset_utc = "HH:MM"``: the first such instant after
  the trip), or manually; either way the drawdown peak restarts at the current equity, the loss
  streak restarts at zero and the reject window is cleared. HALTED is never reset here (the kill
  switch has its own CLI). A parameter of 0 disables its trigger.

Tier 3: ``breaker_update`` also moves to HALTED when it sees ``control.kill`` set by anyone, and
back to RUNNING (a manual reset) once the flag is cleared; if the loss is still beyond max_loss
it halts again at once
(``words`` = ``ControlBlock.words``; pass an empty uint64 array when there is no control block).
Publishing ``risk.state[R_STATE]`` to the control block (``control.set_risk_state``) is the
engine's job, as is cancelling every live order (``oms.live_rows`` + ``oms.cancel_order``).

``[risk]`` TOML keys (:func:`build_risk`; unknown keys are rejected, naming the key)::

    [risk]
    reset_utc = "00:00"        # "" = manual reset only
    loss_streak_reduce = 3     # 0 = off
    loss_streak_pause = 5
    drawdown_reduce = 500.0    # quote units (converted to e8), 0 = off
    drawdown_pause = 1000.0
    max_loss = 2000.0          # -> HALTED + kill switch
    reject_window_s = 60
    reject_min_orders = 20
    reject_rate_pct = 50       # 0 = off
    [risk.limits]              # defaults for every instrument
    max_qty = 1000             # lots
    max_notional = 50000.0     # quote units
    max_position = 5000        # lots
    max_open_orders = 8
    collar_bps = 100
    max_spread_ticks = 1000
    self_trade_prevention = true
    [risk.instruments."binance:BTCUSDT"]   # per-instrument overrides, same keys as [risk.limits]
    [risk.venues.binance]
    rate_per_s = 10            # orders + cancels per second
    burst = 20
    check_balance = true
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from appliance.config import ConfigError, known_table
from appliance.transport import control, records
from appliance.engine.oms import G_LIST_LEN, G_N_OPEN, G_OPEN_BUY, G_OPEN_SELL, OS_PENDING_CANCEL
from appliance.engine.positions import (A_LOSS_STREAK, A_RT_COUNT, N_VENUES, equity_e8,
                                         notional_e8)
from appliance.jit import HELPER

OrderReq = namedtuple("OrderReq", ("ii", "side", "price", "qty", "add_qty", "add_orders",
                                   "exclude_row", "exclude_row2"))
"""An order as tier 1 sees it: ``qty`` lots at ``price`` on instrument ``ii``, adding
``add_qty`` lots to the worst-case position (and one open order if ``add_orders``), never
trading against its own rows ``exclude_row`` / ``exclude_row2`` (-1: none)."""

Touch = namedtuple("Touch", ("ref", "bid", "ask"))
"""The market an order is checked against: reference (fair) price, best bid, best ask (ticks;
0 = none)."""

# --- denial reasons ------------------------------------------------------------------------------
RJ_OK = 0
RJ_MAX_QTY = 1
RJ_MAX_NOTIONAL = 2
RJ_POSITION = 3
RJ_OPEN_ORDERS = 4
RJ_COLLAR = 5
RJ_SPREAD = 6
RJ_THROTTLE = 7
RJ_SELF_TRADE = 8
RJ_BALANCE = 9
RJ_REDUCE_ONLY = 10
RJ_PAUSED = 11
RJ_HALTED = 12
RJ_BAD_ORDER = 13
RJ_NO_REFERENCE = 14
N_RJ = 16
RJ_NAMES = {RJ_OK: "ok", RJ_MAX_QTY: "max_qty", RJ_MAX_NOTIONAL: "max_notional",
            RJ_POSITION: "position", RJ_OPEN_ORDERS: "open_orders", RJ_COLLAR: "price_collar",
            RJ_SPREAD: "max_spread", RJ_THROTTLE: "throttle", RJ_SELF_TRADE: "self_trade",
            RJ_BALANCE: "balance", RJ_REDUCE_ONLY: "reduce_only", RJ_PAUSED: "paused",
            RJ_HALTED: "halted", RJ_BAD_ORDER: "bad_order", RJ_NO_REFERENCE: "no_reference"}

# --- breaker causes ------------------------------------------------------------------------------
CB_NONE = 0
CB_LOSS_STREAK = 1
CB_DRAWDOWN = 2
CB_REJECT_RATE = 3
CB_MAX_LOSS = 4
CB_KILL = 5          # kill switch seen in the control block
CB_MANUAL = 6        # last reset was manual
CB_SCHEDULED = 7     # last reset was the configured UTC time
CB_ACK_TIMEOUT = 8   # a request stayed unanswered past the engine's ack_timeout_ms
CB_NAMES = {CB_NONE: "none", CB_LOSS_STREAK: "loss_streak", CB_DRAWDOWN: "drawdown",
            CB_REJECT_RATE: "reject_rate", CB_MAX_LOSS: "max_loss", CB_KILL: "kill_switch",
            CB_MANUAL: "manual", CB_SCHEDULED: "scheduled", CB_ACK_TIMEOUT: "ack_timeout"}

DAY_NS = 86_400 * 10**9
TOKEN = 10**9        # one message in token units (token units refill at rate_per_s per ns)

# --- breaker parameters (risk.breaker, int64) ----------------------------------------------------
B_STREAK_REDUCE = 0
B_STREAK_PAUSE = 1
B_DD_REDUCE_E8 = 2
B_DD_PAUSE_E8 = 3
B_MAX_LOSS_E8 = 4
B_REJ_WINDOW_NS = 5
B_REJ_MIN_ORDERS = 6
B_REJ_PCT = 7
B_RESET_TOD_NS = 8   # UTC ns after midnight, -1 = manual only
N_B = 9

# --- breaker state (risk.state, int64) -----------------------------------------------------------
R_STATE = 0          # records.RISK_*
R_CAUSE = 1          # CB_* of the last trip
R_TRIP_NS = 2
R_NEXT_RESET_NS = 3  # 0 = none scheduled
R_PEAK_E8 = 4
R_EQUITY_E8 = 5      # equity at the last breaker_update
R_STREAK_BASE = 6    # acct[A_RT_COUNT] at the last reset
R_WIN_START_NS = 7
R_WIN_SENT = 8
R_WIN_REJECTS = 9
R_TRIPS = 10
R_RESETS = 11
R_RESET_CAUSE = 12
N_R = 16

LIMITS = np.dtype([
    ("max_qty", "<i8"),            # lots
    ("max_notional_e8", "<i8"),    # quote e8
    ("max_position", "<i8"),       # lots, absolute worst case incl. open orders
    ("max_open_orders", "<i8"),
    ("collar_bps", "<i8"),
    ("max_spread_ticks", "<i8"),
    ("stp", "<i8"),                # 1 = self-trade prevention on
    ("max_value", "<i8"),          # derived (make_risk): max_notional_e8 as the largest
                                   # price * qty * value_mult that stays within it
], align=True)

VENUE_LIMITS = np.dtype([
    ("rate_per_s", "<i8"),         # tokens per second (orders + cancels)
    ("burst", "<i8"),              # bucket size in messages
    ("check_balance", "<i8"),      # 1 = check free balance (spot)
], align=True)

Risk = namedtuple("Risk", ["limits", "venue_limits", "breaker", "state", "denials", "buckets"])
Risk.__doc__ = """limits: LIMITS[n_instruments] (indexed by ii); venue_limits: VENUE_LIMITS[N_VENUES]
(indexed by records.VENUE_*); breaker: int64[N_B]; state: int64[N_R]; denials: int64[N_RJ];
buckets: int64[N_VENUES, 2] (tokens in TOKEN units, last refill ns)."""


def make_risk(limits: np.ndarray, venue_limits: np.ndarray, breaker: np.ndarray,
              instr: np.ndarray) -> Risk:
    """A Risk from explicit arrays (copied) for the ledger's instruments ``instr`` (the derived
    ``max_value`` of each limit row is filled in); buckets start full, state RUNNING."""
    if limits.dtype != LIMITS or venue_limits.dtype != VENUE_LIMITS or venue_limits.shape != (N_VENUES,):
        raise ValueError("limits must be LIMITS[n], venue_limits VENUE_LIMITS[N_VENUES]")
    if breaker.shape != (N_B,):
        raise ValueError(f"breaker must be int64[{N_B}]")
    if len(instr) != len(limits):
        raise ValueError(f"{len(limits)} limit rows for {len(instr)} instruments")
    limits = limits.copy()
    for ii in range(len(limits)):
        # notional_e8 = price * qty * mult // div > max  <=>  price * qty * mult >= (max + 1) * div
        lim, div = int(limits[ii]["max_notional_e8"]), int(instr[ii]["value_div"])
        limits[ii]["max_value"] = min((max(lim, -1) + 1) * div - 1, 2**63 - 1)
    buckets = np.zeros((N_VENUES, 2), np.int64)
    buckets[:, 0] = venue_limits["burst"] * TOKEN
    buckets[:, 1] = -1
    return Risk(limits, venue_limits.copy(), breaker.astype(np.int64), np.zeros(N_R, np.int64),
                np.zeros(N_RJ, np.int64), buckets)


def default_breaker() -> np.ndarray:
    """All triggers off, manual reset only."""
    b = np.zeros(N_B, np.int64)
    b[B_REJ_WINDOW_NS] = 60 * 10**9
    b[B_RESET_TOD_NS] = -1
    return b


_TOP_KEYS = {"reset_utc", "loss_streak_reduce", "loss_streak_pause", "drawdown_reduce",
             "drawdown_pause", "max_loss", "reject_window_s", "reject_min_orders",
             "reject_rate_pct", "limits", "instruments", "venues"}
_LIMIT_KEYS = {"max_qty", "max_notional", "max_position", "max_open_orders", "collar_bps",
               "max_spread_ticks", "self_trade_prevention"}
_VENUE_KEYS = {"rate_per_s", "burst", "check_balance"}


_INT_MAX = (1 << 62) - 1          # values land in int64 arrays (with headroom for sums)
_MONEY_MAX = 1e18                 # quote units


def _int(where: str, v, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= _INT_MAX:
        raise ConfigError(f"{where}: expected an integer in {lo}..{_INT_MAX}, got {v!r}")
    return v


def _money_e8(where: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= _MONEY_MAX:
        raise ConfigError(f"{where}: expected a finite amount in 0..{_MONEY_MAX:g} quote units, "
                          f"got {v!r}")
    return min(int(round(v * 10**8)), _INT_MAX)


def _bool(where: str, v) -> int:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: expected true/false, got {v!r}")
    return int(v)


_table = known_table


def _limit_row(row, where: str, t: dict) -> None:
    conv = {"max_qty": ("max_qty", _int), "max_notional": ("max_notional_e8", _money_e8),
            "max_position": ("max_position", _int), "max_open_orders": ("max_open_orders", _int),
            "collar_bps": ("collar_bps", _int), "max_spread_ticks": ("max_spread_ticks", _int),
            "self_trade_prevention": ("stp", _bool)}
    for k, v in t.items():
        field, fn = conv[k]
        row[field] = fn(f"{where}.{k}", v)


def parse_reset_utc(where: str, s) -> int:
    """"HH:MM" or "HH:MM:SS" -> ns after UTC midnight; "" -> -1 (manual only)."""
    if not isinstance(s, str):
        raise ConfigError(f"{where}: expected \"HH:MM\", got {s!r}")
    if s == "":
        return -1
    parts = s.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(parts) not in (2, 3) or len(nums) != len(parts) or not (0 <= nums[0] < 24 and 0 <= nums[1] < 60
                                                                   and (len(nums) < 3 or 0 <= nums[2] < 60)):
        raise ConfigError(f"{where}: expected \"HH:MM\" or \"HH:MM:SS\" (UTC), got {s!r}")
    secs = nums[0] * 3600 + nums[1] * 60 + (nums[2] if len(nums) == 3 else 0)
    return secs * 10**9


def build_risk(table: dict, instr: np.ndarray, names: list[str] | None = None) -> Risk:
    """Risk arrays from the ``[risk]`` table (``cfg.extra.get("risk", {})``) for the ledger's
    instruments ``instr`` (positions.INSTRUMENT rows); ``names[ii]`` ("venue:SYMBOL") resolves
    ``[risk.instruments."venue:SYMBOL"]`` overrides. Missing limits default to 0, which denies
    every order (a limit must be configured to trade)."""
    t = _table("risk", table, _TOP_KEYS)
    b = default_breaker()
    b[B_RESET_TOD_NS] = parse_reset_utc("risk.reset_utc", t.get("reset_utc", ""))
    b[B_STREAK_REDUCE] = _int("risk.loss_streak_reduce", t.get("loss_streak_reduce", 0))
    b[B_STREAK_PAUSE] = _int("risk.loss_streak_pause", t.get("loss_streak_pause", 0))
    b[B_DD_REDUCE_E8] = _money_e8("risk.drawdown_reduce", t.get("drawdown_reduce", 0))
    b[B_DD_PAUSE_E8] = _money_e8("risk.drawdown_pause", t.get("drawdown_pause", 0))
    b[B_MAX_LOSS_E8] = _money_e8("risk.max_loss", t.get("max_loss", 0))
    b[B_REJ_WINDOW_NS] = _int("risk.reject_window_s", t.get("reject_window_s", 60), 1) * 10**9
    b[B_REJ_MIN_ORDERS] = _int("risk.reject_min_orders", t.get("reject_min_orders", 0))
    b[B_REJ_PCT] = _int("risk.reject_rate_pct", t.get("reject_rate_pct", 0))
    if b[B_REJ_PCT] > 100:
        raise ConfigError("risk.reject_rate_pct: must be <= 100")
    limits = np.zeros(len(instr), LIMITS)
    defaults = _table("risk.limits", t.get("limits", {}), _LIMIT_KEYS)
    for ii in range(len(instr)):
        _limit_row(limits[ii], "risk.limits", defaults)
    overrides = _table("risk.instruments", t.get("instruments", {}), set(names or ()))
    for name, sub in overrides.items():
        ii = names.index(name)
        _limit_row(limits[ii], f"risk.instruments.{name}", _table(f"risk.instruments.{name}", sub, _LIMIT_KEYS))
    vl = np.zeros(N_VENUES, VENUE_LIMITS)
    venues = _table("risk.venues", t.get("venues", {}), set(records.VENUE_IDS))
    for vname, sub in venues.items():
        sub = _table(f"risk.venues.{vname}", sub, _VENUE_KEYS)
        row = vl[records.VENUE_IDS[vname]]
        row["rate_per_s"] = _int(f"risk.venues.{vname}.rate_per_s", sub.get("rate_per_s", 0))
        row["burst"] = _int(f"risk.venues.{vname}.burst", sub.get("burst", 0))
        row["check_balance"] = _bool(f"risk.venues.{vname}.check_balance", sub.get("check_balance", True))
    return make_risk(limits, vl, b, instr)


def denial_counts(risk: Risk) -> dict:
    return {RJ_NAMES[c]: int(risk.denials[c]) for c in RJ_NAMES}


def state_name(risk: Risk) -> str:
    return records.RISK_STATE_NAMES[int(risk.state[R_STATE])]


# --- tier 1 --------------------------------------------------------------------------------------
@njit(**HELPER)
def _take_token(risk, venue, now_ns):
    vl = risk.venue_limits[venue]
    cap = vl.burst * TOKEN
    b = risk.buckets
    last = b[venue, 1]
    if last >= 0 and now_ns > last:
        dt = now_ns - last
        if dt > cap:           # rate >= 1/s, so cap ns always refill the whole bucket
            dt = cap
        tokens = b[venue, 0] + dt * vl.rate_per_s
        b[venue, 0] = tokens if tokens < cap else cap
    if last < 0 or now_ns > last:
        b[venue, 1] = now_ns
    if b[venue, 0] < TOKEN:
        return False
    b[venue, 0] -= TOKEN
    return True


@njit(**HELPER)
def _roll_window(risk, now_ns):
    s = risk.state
    if now_ns - s[R_WIN_START_NS] >= risk.breaker[B_REJ_WINDOW_NS] or now_ns < s[R_WIN_START_NS]:
        s[R_WIN_START_NS] = now_ns
        s[R_WIN_SENT] = 0
        s[R_WIN_REJECTS] = 0


@njit(**HELPER)
def _verdict(risk, oms, led, req, touch, now_ns):
    """The tier-1 list in order (see the module docstring); the first failing check's RJ_*, or
    RJ_OK once a throttle token was taken."""
    ii = req.ii
    side = req.side
    price = req.price
    qty = req.qty
    add_qty = req.add_qty
    ref_price = touch.ref
    bid = touch.bid
    ask = touch.ask
    st = risk.state[R_STATE]
    if st == records.RISK_HALTED:
        return RJ_HALTED
    if st == records.RISK_PAUSED:
        return RJ_PAUSED
    if (qty <= 0 or price <= 0 or ii < 0 or ii >= risk.limits.shape[0]
            or (side != records.SIDE_BUY and side != records.SIDE_SELL)):
        return RJ_BAD_ORDER
    lim = risk.limits[ii]
    pos = led.pos[ii].qty
    buy = side == records.SIDE_BUY
    open_same = oms.agg[ii, G_OPEN_BUY] if buy else oms.agg[ii, G_OPEN_SELL]
    worst = pos + open_same + add_qty if buy else pos - open_same - add_qty
    if st == records.RISK_REDUCING:
        if buy:
            ok = pos < 0 and worst <= 0
        else:
            ok = pos > 0 and worst >= 0
        if not ok:
            return RJ_REDUCE_ONLY
    if qty > lim.max_qty:
        return RJ_MAX_QTY
    if ref_price <= 0:
        return RJ_NO_REFERENCE
    dev = price - ref_price if price >= ref_price else ref_price - price
    if dev > lim.collar_bps * ref_price // 10_000:      # == dev * 10_000 > bps * ref, no overflow
        return RJ_COLLAR
    # price is now within the collar and qty <= max_qty, which bounds the product below; the
    # limit is compared in price * qty * value_mult units (no division, see make_risk)
    if price * qty * led.instr[ii].value_mult > lim.max_value:
        return RJ_MAX_NOTIONAL
    if bid <= 0 or ask <= 0 or ask < bid or ask - bid > lim.max_spread_ticks:
        return RJ_SPREAD
    if req.add_orders and oms.agg[ii, G_N_OPEN] + 1 > lim.max_open_orders:
        return RJ_OPEN_ORDERS
    if worst > lim.max_position or -worst > lim.max_position:
        return RJ_POSITION
    if lim.stp:
        for j in range(oms.agg[ii, G_LIST_LEN]):
            r = oms.live[ii, j]
            if r == req.exclude_row or r == req.exclude_row2:
                continue
            o = oms.orders[r]
            if o.side == side or o.state == OS_PENDING_CANCEL:
                continue
            if (buy and o.price <= price) or (not buy and o.price >= price):
                return RJ_SELF_TRADE
    ins = led.instr[ii]
    v = ins.venue
    if risk.venue_limits[v].check_balance:
        if buy:
            need = notional_e8(led.instr, ii, price, add_qty)
            free = led.balances[v, ins.quote_asset] - led.reserved[v, ins.quote_asset]
        else:
            need = add_qty * ins.lot_e8
            free = led.balances[v, ins.base_asset] - led.reserved[v, ins.base_asset]
        if need > free:
            return RJ_BALANCE
    if not _take_token(risk, v, now_ns):
        return RJ_THROTTLE
    return RJ_OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def check(risk, oms, led, req, touch, now_ns):
    """Tier 1 for the :class:`OrderReq` ``req`` against the :class:`Touch` ``touch``. The verdict
    is counted in ``risk.denials`` (``RJ_OK``: passes); a pass counts in the reject-rate
    window. ``check_order`` and ``check_replace`` are the two usual cases."""
    code = _verdict(risk, oms, led, req, touch, now_ns)
    risk.denials[code] += 1
    if code == RJ_OK:
        _roll_window(risk, now_ns)
        risk.state[R_WIN_SENT] += 1
    return code


@njit(cache=True, nogil=True, _nrt=False)
def check_order(risk, oms, led, ii, side, price, qty, touch, now_ns):
    """Tier 1 for ``oms.new_order``: its whole quantity and one more open order."""
    return check(risk, oms, led, OrderReq(np.int64(ii), np.int64(side), np.int64(price),
                                          np.int64(qty), np.int64(qty), True, np.int64(-1),
                                          np.int64(-1)), touch, now_ns)


@njit(cache=True, nogil=True, _nrt=False)
def check_replace(risk, oms, led, row, price, leaves_qty, touch, now_ns):
    """Tier 1 for ``oms.replace_order(row, price, leaves_qty)``: the order's own exposure is
    already counted, so only the increase of its leaves adds to the worst case and the balance
    need; it does not add an open order; it cannot self-trade against itself."""
    o = oms.orders[row]
    extra = leaves_qty - o.leaves
    if extra < 0:
        extra = 0
    return check(risk, oms, led, OrderReq(np.int64(o.ii), np.int64(o.side), np.int64(price),
                                          np.int64(leaves_qty), np.int64(extra), False,
                                          np.int64(row), np.int64(o.link)), touch, now_ns)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def check_cancel(risk, led, ii, now_ns):
    """A cancel costs a throttle token too: RJ_OK or RJ_THROTTLE (counted)."""
    code = RJ_OK if _take_token(risk, led.instr[ii].venue, now_ns) else RJ_THROTTLE
    if code != RJ_OK:
        risk.denials[code] += 1
    return code


# --- tier 3 --------------------------------------------------------------------------------------
@njit(**HELPER)
def _kill_set(words):
    return words.shape[0] > 0 and control.kill_requested(words)


# --- tier 2 --------------------------------------------------------------------------------------
@njit(**HELPER)
def _trip(risk, new_state, cause, now_ns):
    s = risk.state
    if new_state <= s[R_STATE]:
        return
    s[R_STATE] = new_state
    s[R_CAUSE] = cause
    s[R_TRIP_NS] = now_ns
    s[R_TRIPS] += 1
    tod = risk.breaker[B_RESET_TOD_NS]
    if tod >= 0 and new_state != records.RISK_HALTED:
        t = (now_ns // DAY_NS) * DAY_NS + tod
        if t <= now_ns:
            t += DAY_NS
        s[R_NEXT_RESET_NS] = t
    else:
        s[R_NEXT_RESET_NS] = 0


@njit(**HELPER)
def _reset(risk, led, equity, cause, now_ns):
    s = risk.state
    s[R_STATE] = records.RISK_RUNNING
    s[R_PEAK_E8] = equity
    s[R_EQUITY_E8] = equity
    s[R_STREAK_BASE] = led.acct[A_RT_COUNT]
    s[R_WIN_START_NS] = now_ns
    s[R_WIN_SENT] = 0
    s[R_WIN_REJECTS] = 0
    s[R_NEXT_RESET_NS] = 0
    s[R_RESETS] += 1
    s[R_RESET_CAUSE] = cause


@njit(cache=True, nogil=True, _nrt=False)
def breaker_update(risk, led, marks, now_ns, words):
    s = risk.state
    b = risk.breaker
    if s[R_STATE] != records.RISK_HALTED and _kill_set(words):
        _trip(risk, np.int64(records.RISK_HALTED), np.int64(CB_KILL), now_ns)
    if s[R_STATE] == records.RISK_HALTED:
        if words.shape[0] == 0 or _kill_set(words):
            return s[R_STATE]
        # the kill switch was cleared (manual reset through the CLI): trade again
        _reset(risk, led, equity_e8(led, marks), np.int64(CB_MANUAL), now_ns)
    eq = equity_e8(led, marks)
    s[R_EQUITY_E8] = eq
    if s[R_NEXT_RESET_NS] > 0 and now_ns >= s[R_NEXT_RESET_NS]:
        _reset(risk, led, eq, np.int64(CB_SCHEDULED), now_ns)
    if eq > s[R_PEAK_E8]:
        s[R_PEAK_E8] = eq
    if b[B_MAX_LOSS_E8] > 0 and eq <= -b[B_MAX_LOSS_E8]:
        _trip(risk, np.int64(records.RISK_HALTED), np.int64(CB_MAX_LOSS), now_ns)
        if words.shape[0] > 0 and not _kill_set(words):
            control.request_kill(words, control.SOURCE_MAX_LOSS, now_ns)
        return s[R_STATE]
    dd = s[R_PEAK_E8] - eq
    streak = led.acct[A_LOSS_STREAK]
    since = led.acct[A_RT_COUNT] - s[R_STREAK_BASE]
    if since < streak:
        streak = since
    if b[B_DD_PAUSE_E8] > 0 and dd >= b[B_DD_PAUSE_E8]:
        _trip(risk, np.int64(records.RISK_PAUSED), np.int64(CB_DRAWDOWN), now_ns)
    elif b[B_STREAK_PAUSE] > 0 and streak >= b[B_STREAK_PAUSE]:
        _trip(risk, np.int64(records.RISK_PAUSED), np.int64(CB_LOSS_STREAK), now_ns)
    elif b[B_DD_REDUCE_E8] > 0 and dd >= b[B_DD_REDUCE_E8]:
        _trip(risk, np.int64(records.RISK_REDUCING), np.int64(CB_DRAWDOWN), now_ns)
    elif b[B_STREAK_REDUCE] > 0 and streak >= b[B_STREAK_REDUCE]:
        _trip(risk, np.int64(records.RISK_REDUCING), np.int64(CB_LOSS_STREAK), now_ns)
    return s[R_STATE]


@njit(cache=True, nogil=True, _nrt=False)
def trip(risk, new_state, cause, now_ns):
    """Trip the breaker to ``new_state`` (PAUSED / REDUCING) for a cause found outside the gate
    (e.g. CB_ACK_TIMEOUT); never lowers the state. The usual reset rules apply."""
    _trip(risk, new_state, cause, now_ns)
    return risk.state[R_STATE]


@njit(cache=True, nogil=True, _nrt=False)
def on_venue_reject(risk, now_ns):
    s = risk.state
    _roll_window(risk, now_ns)
    s[R_WIN_REJECTS] += 1
    pct = risk.breaker[B_REJ_PCT]
    if (pct > 0 and s[R_WIN_SENT] >= risk.breaker[B_REJ_MIN_ORDERS] and s[R_WIN_SENT] > 0
            and s[R_WIN_REJECTS] * 100 >= pct * s[R_WIN_SENT]):
        _trip(risk, np.int64(records.RISK_PAUSED), np.int64(CB_REJECT_RATE), now_ns)
    return s[R_STATE]


@njit(cache=True, nogil=True, _nrt=False)
def breaker_reset(risk, led, marks, now_ns):
    if risk.state[R_STATE] == records.RISK_HALTED:
        return -1
    _reset(risk, led, equity_e8(led, marks), np.int64(CB_MANUAL), now_ns)
    return 0
