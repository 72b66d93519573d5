"""The exchange simulator: a compiled matching engine that follows a replayed market.

One module, plain arrays in one namedtuple (:class:`Sim`), ``@njit(cache=True, nogil=True,
_nrt=False)`` kernels that return integer codes and allocate nothing. The backtest
(:mod:`appliance.sim.backtest`) and the FIX mock exchange (:mod:`appliance.sim.exchange`) drive the
same kernels: the backtest in event time with latencies, the exchange in wall-clock time with none
(its latency is the real network's).

What it keeps, per instrument (``k``: a sim instrument row; ``imap[venue, md instrument]`` -> k):

- the replayed market's L2 book (``px, qty, n``: :mod:`appliance.engine.book` kernels), rebuilt from
  F_SNAPSHOT records, trusted between BOOK_STATUS VALID and INVALID (``I_VALID``);
- our orders (``orders`` rows, a per-instrument ``live`` list, an open-addressing index by
  (session, ClOrdID)) with their queue position ``front[row, F_FRONT]``: the displayed quantity
  still ahead of the order at its price;
- ``taken``: displayed liquidity our own taking orders consumed (per price level, up to ``TAKEN_N``
  levels a side). The replay does not know we traded, so a level we emptied would otherwise be
  taken again by the next order; what we took is subtracted from the displayed quantity until the
  replay shrinks the level below it (``taken = min(taken, displayed)``) or removes it.

Matching rules (prices in ticks, quantities in lots, all integers; the queue position is a float
because the probabilistic models move it by fractions)::

    arrival    a new order (after the entry latency) is checked: known instrument, positive qty
               (and price for a limit), a ClOrdID not seen in the session, room in the tables, a
               valid book for a market order. Rejected -> REJECT (FIX 103 reason, text).
               Otherwise ACK (150=0).
    crossing   a limit order crosses when available liquidity (displayed - taken) exists at or
               through its price; a market order always walks. Post-only that would cross ->
               REJECT (no ack). FOK without enough available liquidity up to its limit -> ACK
               then EXPIRED. Otherwise it walks the opposite side best level first, filling
               min(available, leaves) at each level's price as TAKER (851=2, taker fee) and
               recording what it took. IOC / FOK / market remainders -> EXPIRED (150=C);
               a GTC / DAY limit remainder rests.
    resting    joins the back of its level: front = displayed quantity at its price on its side
               (while the book is not valid: behind everything, clamped to the level's quantity
               by the next snapshot; such a book never crosses, immediate orders expire).
    trades     a replayed trade whose aggressor hits our side (aggressor SELL: our bids; BUY: our
               asks; unknown aggressor: inferred from the book, skipped when it printed inside
               the spread) fills, as MAKER at our price:
                 - every order strictly better than the print: all its leaves (the aggressor swept
                   through our level);
                 - orders at the print's price: the queue model's ``trade`` (front -= qty), then
                   round(-front) lots if front went negative (front = 0 after), capped at leaves.
    depth      an L2 change at a level where we rest moves front by the queue model's ``depth``:
                 risk_averse   front = min(front, new)          (only trades advance us)
                 power/log/... chg = prev - new - (trade qty seen at the level since the last
                               depth change); an increase only clamps; a decrease takes
                               (1 - p) * chg from ahead of us with p = P(the decrease was behind
                               us) = f(back) / (f(back) + f(front)) (power: f = x**n; log:
                               f = ln(1 + x)), power2 / log2: f(back) / f(back + front),
                               power3: 1 - (front / (front + back))**n; front = min(estimate,
                               new), never below 0 (hftbacktest lets the estimate go negative,
                               which its next trade at the level then counts as filled qty)
    through    at every BATCH_END of a valid book (the frame is consistent), a resting buy whose
               price is >= an ask level with available liquidity fills as MAKER at its own price
               for min(leaves, available at those levels), and takes that liquidity (sells
               alike). A snapshot in the batch clamps every front to the level's new quantity.
    cancel     working -> ACK 150=4; unknown (session, ClOrdID) -> cancel REJECT 102=1; an order
               that is no longer working -> cancel REJECT 102=0 (too late) with its OrdStatus.
    replace    same checks plus: the new ClOrdID unused (102=6), new OrderQty > filled, same side,
               post-only must not cross. The order keeps its queue position when the price is
               unchanged and the remaining quantity does not grow, else it rejoins the back at its
               new price. ACK 150=5 (new ClOrdID, OrigClOrdID = old), then it walks if it crosses.
    mass       scope 7 (all of the session's working orders) or 1 (one instrument): ACK 150=4 for
               each; ``ctr[C_MASS_LAST]`` = how many.

Reduce-only (F_REDUCE_ONLY) is not checked here: a spot venue has no position to reduce.

Latency (event time, ns): entry (order sent -> at the exchange), response (exchange -> our
gateway), feed (market event -> our md gateway, drawn for the backtest driver with ``draw``).
Each is constant or drawn from a distribution (uniform, normal or lognormal, floored at ``min``)
with a fixed-seed splitmix64 generator: the same seed gives the same draws. Orders and responses
stay in send order (one TCP session each way): an arrival time is never earlier than the one
before it. Responses of one event share one draw (they leave in one write).

Fees: ``fee_e8 = notional_e8 * fee_ppm // 1e6`` (truncated toward zero) with ``notional_e8 =
price * qty * value_mult // value_div`` (the instrument's tick_e8 * lot_e8 / 1e8, as in
:mod:`appliance.engine.positions`); maker and taker rates per venue, negative = rebate.

Kernels (``sim`` = a :class:`Sim`; ``t`` = time in ns; ``rec`` a uint8 buffer, ``off`` a byte
offset into it)::

    on_md(sim, rec, off, t) -> n responses emitted | E_QUEUE_FULL
    submit(sim, rec, off, t) -> OK | E_QUEUE_FULL      order record enters the entry-latency queue
    next_arrival(sim) -> time | NEVER;   process_arrivals(sim, t) -> responses | E_QUEUE_FULL
    process_order(sim, rec, off, t) -> responses | E_QUEUE_FULL   (no entry latency: the exchange)
    next_response(sim) -> time | NEVER;  pop_response(sim, out_u8) -> its delivery time
    draw(sim, which) -> ns                latency of LAT_ENTRY / LAT_RESPONSE / LAT_FEED
    find(sim, session, clord_id) -> row | -1
    set_level(sim, k, side_idx, price, qty), set_valid(sim, k, valid)   (a synthetic market)

Responses are exec records exactly as the FIX gateway publishes them (records.ACK / FILL /
REJECT, 128 B): FILL.exec_id is the simulator's execution number, ACK.venue_order_id its
order number in decimal; origin_tsc = the exchange time of the event that caused them.
"""
from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from appliance import jit
from appliance.engine import book
from appliance.transport import records
from appliance.transport.intrinsics import load_relaxed

NEVER = np.int64(2 ** 62)

# --- return codes --------------------------------------------------------------------------------
OK = 0
E_QUEUE_FULL = -1        # the response or in-flight queue has no room: nothing was processed
E_NAMES = {E_QUEUE_FULL: "exchange simulator queue full"}

# --- queue models --------------------------------------------------------------------------------
QM_RISK_AVERSE = 0
QM_POWER = 1
QM_LOG = 2
QM_POWER2 = 3
QM_LOG2 = 4
QM_POWER3 = 5
QUEUE_MODELS = {"risk_averse": QM_RISK_AVERSE, "power": QM_POWER, "log": QM_LOG,
                "power2": QM_POWER2, "log2": QM_LOG2, "power3": QM_POWER3}

# --- latency distributions -------------------------------------------------------------------------
LAT_ENTRY = 0
LAT_RESPONSE = 1
LAT_FEED = 2
LD_CONSTANT = 0
LD_UNIFORM = 1
LD_NORMAL = 2
LD_LOGNORMAL = 3
LAT_DISTS = {"constant": LD_CONSTANT, "uniform": LD_UNIFORM, "normal": LD_NORMAL,
             "lognormal": LD_LOGNORMAL}
# lat[which, :] = kind, a, b, floor   (constant: a = ns; uniform: a..b; normal: mean a, std b;
# lognormal: median a, sigma b)
LAT_KIND, LAT_A, LAT_B, LAT_MIN = range(4)

# --- cfg words (int64) ------------------------------------------------------------------------------
CF_QMODEL = 0
CF_N = 4
# cfgf (float64)
CFF_QPOW = 0
CFF_N = 4

# --- per instrument (ins int64[NI, I_N]) -------------------------------------------------------------
I_VENUE = 0
I_INSTR = 1
I_MAKER_PPM = 2
I_TAKER_PPM = 3
I_VMULT = 4
I_VDIV = 5
I_VALID = 6        # 1 between BOOK_STATUS VALID and INVALID
I_SNAP = 7         # inside a snapshot (book being rebuilt)
I_SNAP_BATCH = 8   # a snapshot happened in the current batch: clamp fronts at BATCH_END
I_NLIVE = 9
I_NTAKEN = 10      # I_NTAKEN + side_idx: entries in taken[k, side]
I_N = 16
TAKEN_N = 16

# --- order rows (orders int64[CAP, O_N]) --------------------------------------------------------------
O_STATE = 0        # OS_FREE / OS_WORKING / OS_DONE
O_CLORD = 1
O_SESSION = 2
O_OID = 3          # order number (venue order id)
O_INS = 4
O_SIDE = 5
O_PRICE = 6
O_QTY = 7          # total order quantity (FIX OrderQty)
O_LEAVES = 8
O_CUM = 9
O_TIF = 10
O_FLAGS = 11
O_ORDTYPE = 12
O_STRATEGY = 13
O_STATUS = 14      # FIX OrdStatus letter
O_ORIGIN = 15
O_LIVE_POS = 16
O_TIME = 17        # when it was accepted (ns)
O_N = 18
OS_FREE = 0
OS_WORKING = 1
OS_DONE = 2
F_FRONT = 0       # front[row, F_FRONT]: displayed quantity ahead of the order (lots, float)
F_TRADED = 1      # traded at the order's level since the last depth change (probabilistic models)
F_NOTIONAL = 2    # sum of price * qty of its fills (ticks * lots, float: the average price)
F_N = 3
UNKNOWN_FRONT = 1e18

# --- counters (ctr int64[C_N]) -------------------------------------------------------------------------
C_NEXT_OID = 0
C_NEXT_EXEC = 1
C_FREE_N = 2
C_RET_HEAD = 3
C_RET_N = 4
C_IN_HEAD = 5
C_IN_TAIL = 6
C_IN_LAST = 7
C_OUT_HEAD = 8
C_OUT_TAIL = 9
C_OUT_LAST = 10
C_RNG = 11
C_ORDERS = 12       # order records processed (new + cancel + replace + mass)
C_NEW = 13
C_CANCELS = 14
C_REPLACES = 15
C_REJECTS = 16      # new orders rejected
C_CXL_REJECTS = 17
C_FILLS = 18
C_MAKER_FILLS = 19
C_TAKER_FILLS = 20
C_VOLUME = 21       # lots filled
C_FEES_E8 = 22
C_EXPIRED = 23
C_MD = 24
C_MASS_LAST = 25
C_TRADES_SKIPPED = 26   # replayed trades printed inside the spread with no aggressor side
C_STALLS = 27           # fills / cancels postponed because the response queue was full
C_SNAP_K = 28           # instrument whose snapshot is being buffered (-1 none)
C_SNAP_N = 29           # C_SNAP_N + side: levels buffered
C_N = 32
CTR_NAMES = {C_ORDERS: "orders", C_NEW: "new", C_CANCELS: "cancels", C_REPLACES: "replaces",
             C_REJECTS: "rejects", C_CXL_REJECTS: "cancel_rejects", C_FILLS: "fills",
             C_MAKER_FILLS: "maker_fills", C_TAKER_FILLS: "taker_fills", C_VOLUME: "volume",
             C_FEES_E8: "fees_e8", C_EXPIRED: "expired", C_MD: "md",
             C_TRADES_SKIPPED: "trades_skipped", C_STALLS: "stalls"}

# --- reject texts (texts[T_*]) and their FIX reasons -----------------------------------------------------
T_NONE = 0
T_UNKNOWN_SYMBOL = 1
T_DUPLICATE = 2
T_BAD_QTY = 3
T_BAD_PRICE = 4
T_BAD_SIDE = 5
T_BAD_TYPE = 6
T_NO_MARKET = 7
T_POST_ONLY = 8
T_TOO_MANY = 9
T_UNKNOWN_ORDER = 10
T_TOO_LATE = 11
T_REPLACE_QTY = 12
T_REPLACE_SIDE = 13
T_BAD_RECORD = 14
TEXTS = {T_NONE: "", T_UNKNOWN_SYMBOL: "unknown instrument", T_DUPLICATE: "duplicate ClOrdID",
         T_BAD_QTY: "quantity must be positive", T_BAD_PRICE: "limit price must be positive",
         T_BAD_SIDE: "bad side", T_BAD_TYPE: "unsupported order type or time in force",
         T_NO_MARKET: "no market data for the instrument",
         T_POST_ONLY: "post-only order would take liquidity", T_TOO_MANY: "too many open orders",
         T_UNKNOWN_ORDER: "unknown order", T_TOO_LATE: "order is not working (too late to cancel)",
         T_REPLACE_QTY: "new quantity not above the filled quantity",
         T_REPLACE_SIDE: "a replace cannot change the side", T_BAD_RECORD: "not an order record"}
# FIX 103 (OrdRejReason) / 102 (CxlRejReason, FIX 4.4 values) per text
REJ_REASON = {T_UNKNOWN_SYMBOL: 1, T_DUPLICATE: 6, T_BAD_QTY: 99, T_BAD_PRICE: 99, T_BAD_SIDE: 99,
              T_BAD_TYPE: 99, T_NO_MARKET: 2, T_POST_ONLY: 99, T_TOO_MANY: 3, T_BAD_RECORD: 99}
CXL_REASON = {T_UNKNOWN_ORDER: 1, T_TOO_LATE: 0, T_DUPLICATE: 6, T_REPLACE_QTY: 99,
              T_REPLACE_SIDE: 99, T_POST_ONLY: 99, T_BAD_PRICE: 99, T_BAD_QTY: 99,
              T_BAD_TYPE: 99, T_TOO_MANY: 99, T_NO_MARKET: 99, T_BAD_RECORD: 99}
TEXT_LEN = 48

EXEC_EXPIRED = ord("C")
ST_NEW = ord("0")
ST_PARTIAL = ord("1")
ST_FILLED = ord("2")
ST_CANCELED = ord("4")
ST_REJECTED = ord("8")
ST_EXPIRED = ord("C")

LIQ_MAKER = 1
LIQ_TAKER = 2
MARGIN = 16        # response rows an event needs free before it is processed (every further
                   # fill or cancel checks its own room: a full queue postpones, never drops)

Sim = namedtuple("Sim", ["cfg", "cfgf", "lat", "ctr", "imap", "ins", "px", "qty", "n", "taken",
                         "live", "orders", "front", "index", "free", "ret", "inq_t", "inq",
                         "outq_t", "outq", "texts", "snap"])
Sim.__doc__ = """The simulator's state (see the module docstring); built by :func:`make_sim`."""

_ACK_VID = records.field_offset(records.ACK, "venue_order_id")
_REJ_TEXT = records.field_offset(records.REJECT, "text")
_TW = np.uint64(records.TYPE_WORD_OFF)
_U8 = np.uint64(0xFF)
_U16 = np.uint64(0xFFFF)


class SimConfigError(ValueError):
    """A [sim.exchange] setting is invalid; the message names the key."""


# =============================================================================================
# settings (Python)
# =============================================================================================
@dataclass(frozen=True)
class Latency:
    """One latency model: ``dist`` (constant, uniform, normal, lognormal) and its parameters in
    ns (``ns``; ``min_ns`` / ``max_ns``; ``mean_ns`` / ``std_ns``; ``median_ns`` / ``sigma``)."""
    dist: str = "constant"
    a: float = 0.0
    b: float = 0.0
    floor: float = 0.0

    def row(self) -> list:
        return [LAT_DISTS[self.dist], self.a, self.b, self.floor]

    def mean_ns(self) -> float:
        if self.dist == "constant":
            return self.a
        if self.dist == "uniform":
            return (self.a + self.b) / 2
        if self.dist == "normal":
            return self.a
        return self.a * math.exp(self.b * self.b / 2)


@dataclass(frozen=True)
class Settings:
    """``[sim.exchange]``: queue model, latencies, fees, seed, table sizes."""
    queue_model: str = "risk_averse"
    queue_power: float = 2.0
    entry: Latency = field(default_factory=Latency)
    response: Latency = field(default_factory=Latency)
    feed: Latency = field(default_factory=Latency)
    fees: dict = field(default_factory=dict)          # venue -> (maker_bps, taker_bps)
    seed: int = 1
    max_orders: int = 1 << 14
    max_live: int = 1024                               # working orders per instrument
    book_levels: int = 512
    queue_capacity: int = 1 << 16                      # in-flight orders / responses

    def fee_ppm(self, venue: str) -> tuple[int, int]:
        maker, taker = self.fees.get(venue, self.fees.get("*", (0.0, 0.0)))
        return int(round(maker * 100)), int(round(taker * 100))


SETTING_KEYS = ("queue_model", "queue_power", "latency", "fees", "seed", "max_orders", "max_live",
                "book_levels", "queue_capacity")
LATENCY_KEYS = ("entry", "response", "feed")


def _num(where, v, minimum=None, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise SimConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise SimConfigError(f"{where}: must be finite, got {v!r}")
    if minimum is not None and v < minimum:
        raise SimConfigError(f"{where}: must be >= {minimum}, got {v!r}")
    return v


def parse_latency(where: str, spec) -> Latency:
    """A latency from a number (constant ns) or a table ``{dist = "...", ...}``."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Latency("constant", float(_num(where, spec, 0)), 0.0, 0.0)
    if not isinstance(spec, dict):
        raise SimConfigError(f"{where}: expected ns or a table with dist = "
                             f"{' | '.join(LAT_DISTS)}, got {spec!r}")
    dist = spec.get("dist", "constant")
    keys = {"constant": ("ns",), "uniform": ("min_ns", "max_ns"), "normal": ("mean_ns", "std_ns"),
            "lognormal": ("median_ns", "sigma")}
    if dist not in keys:
        raise SimConfigError(f"{where}.dist: {dist!r} is not one of {', '.join(keys)}")
    allowed = set(keys[dist]) | {"dist", "floor_ns"}
    for k in spec:
        if k not in allowed:
            raise SimConfigError(f"{where}.{k}: unknown key for dist {dist!r} "
                                 f"(known: {', '.join(sorted(allowed))})")
    for k in keys[dist]:
        if k not in spec:
            raise SimConfigError(f"{where}.{k}: required for dist {dist!r}")
    a = float(_num(f"{where}.{keys[dist][0]}", spec[keys[dist][0]], 0))
    b = float(_num(f"{where}.{keys[dist][1]}", spec[keys[dist][1]], 0)) if len(keys[dist]) > 1 else 0.0
    if dist == "uniform" and b < a:
        raise SimConfigError(f"{where}: max_ns must be >= min_ns")
    if dist == "lognormal" and a <= 0:
        raise SimConfigError(f"{where}.median_ns: must be > 0")
    floor = float(_num(f"{where}.floor_ns", spec.get("floor_ns", 0), 0))
    return Latency(dist, a, b, floor)


def settings(table: dict | None) -> Settings:
    """Validated ``[sim.exchange]`` settings (unknown keys are rejected, naming the key)::

        [sim.exchange]
        queue_model = "risk_averse"     # risk_averse | power | log | power2 | log2 | power3
        queue_power = 2.0               # n of the power models
        seed = 1                        # latency draws
        max_orders = 16384              # order rows (working + recently finished)
        max_live = 1024                 # working orders per instrument
        book_levels = 512               # levels kept per book side
        queue_capacity = 65536          # orders / responses in flight
        [sim.exchange.latency]          # ns, or a table
        entry = 50000                   # = { dist = "constant", ns = 50000 }
        response = { dist = "lognormal", median_ns = 50000, sigma = 0.3, floor_ns = 20000 }
        feed = { dist = "uniform", min_ns = 1000, max_ns = 5000 }
        [sim.exchange.fees]             # venue (or "*") -> [maker_bps, taker_bps]; < 0 = rebate
        binance = [1.0, 10.0]
    """
    table = table or {}
    if not isinstance(table, dict):
        raise SimConfigError("sim.exchange: expected a table")
    for k in table:
        if k not in SETTING_KEYS:
            raise SimConfigError(f"sim.exchange.{k}: unknown key (known: {', '.join(SETTING_KEYS)})")
    qm = table.get("queue_model", "risk_averse")
    if qm not in QUEUE_MODELS:
        raise SimConfigError(f"sim.exchange.queue_model: {qm!r} is not one of {', '.join(QUEUE_MODELS)}")
    qp = float(_num("sim.exchange.queue_power", table.get("queue_power", 2.0), 1e-9))
    lat = table.get("latency", {})
    if not isinstance(lat, dict):
        raise SimConfigError("sim.exchange.latency: expected a table of entry / response / feed")
    for k in lat:
        if k not in LATENCY_KEYS:
            raise SimConfigError(f"sim.exchange.latency.{k}: unknown key (known: {', '.join(LATENCY_KEYS)})")
    lats = {k: parse_latency(f"sim.exchange.latency.{k}", lat.get(k, 0)) for k in LATENCY_KEYS}
    fees_t = table.get("fees", {})
    if not isinstance(fees_t, dict):
        raise SimConfigError("sim.exchange.fees: expected a table of venue = [maker_bps, taker_bps]")
    fees = {}
    for v, pair in fees_t.items():
        if v != "*" and v not in records.VENUE_IDS:
            raise SimConfigError(f"sim.exchange.fees.{v}: unknown venue (known: "
                                 f"{', '.join(sorted(records.VENUE_IDS))}, or \"*\")")
        if not isinstance(pair, list) or len(pair) != 2:
            raise SimConfigError(f"sim.exchange.fees.{v}: expected [maker_bps, taker_bps]")
        fees[v] = (float(_num(f"sim.exchange.fees.{v}[0]", pair[0], -1000)),
                   float(_num(f"sim.exchange.fees.{v}[1]", pair[1], -1000)))
        if max(abs(fees[v][0]), abs(fees[v][1])) > 1000:
            raise SimConfigError(f"sim.exchange.fees.{v}: more than 1000 bps")
    ints = {}
    for k, d, lo, hi in (("seed", 1, 0, 2 ** 63 - 1), ("max_orders", 1 << 14, 16, 1 << 24),
                         ("max_live", 1024, 1, 1 << 16), ("book_levels", 512, 8, 1 << 20),
                         ("queue_capacity", 1 << 16, 64, 1 << 24)):
        v = _num(f"sim.exchange.{k}", table.get(k, d), lo, integer=True)
        if v > hi:
            raise SimConfigError(f"sim.exchange.{k}: must be <= {hi}, got {v}")
        ints[k] = int(v)
    return Settings(qm, qp, lats["entry"], lats["response"], lats["feed"], fees, **ints)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _value_ratio(tick_e8: int, lot_e8: int) -> tuple[int, int]:
    mult, div = tick_e8 * lot_e8, 100_000_000
    g = math.gcd(mult, div)
    return mult // g, div // g


def make_sim(instruments: list[dict], st: Settings | None = None, capacity: int = 0,
             md_width: int = 0) -> Sim:
    """A simulator for ``instruments``: dicts with ``venue`` (name), ``instrument`` (md instrument
    id at that venue), ``tick_e8`` and ``lot_e8`` (the grid in 1e-8 of the quote / base asset;
    default 1). Fees come from ``st.fees`` by venue. ``capacity`` / ``md_width`` reserve instrument
    rows and md ids for instruments added later (the FIX exchange)."""
    st = st or Settings()
    if not instruments and capacity < 1:
        raise SimConfigError("exchange simulator: no instruments")
    ni = max(len(instruments), capacity)
    ins = np.zeros((ni, I_N), np.int64)
    width = 1 + max([int(s["instrument"]) for s in instruments] + [md_width - 1, 0])
    imap = np.full((8, width), -1, np.int64)
    for k, s in enumerate(instruments):
        vname = s["venue"]
        vid = records.VENUE_IDS.get(vname) if isinstance(vname, str) else int(vname)
        if vid is None or not 0 < vid < 8:
            raise SimConfigError(f"exchange simulator: unknown venue {vname!r}")
        vname = records.VENUE_NAMES[vid]
        md = int(s["instrument"])
        if md < 0:
            raise SimConfigError(f"exchange simulator: instrument id {md} < 0")
        if imap[vid, md] >= 0:
            raise SimConfigError(f"exchange simulator: {vname} instrument {md} listed twice")
        imap[vid, md] = k
        maker, taker = st.fee_ppm(vname)
        tick_e8, lot_e8 = int(s.get("tick_e8", 1)), int(s.get("lot_e8", 1))
        if tick_e8 < 1 or lot_e8 < 1:
            raise SimConfigError(f"exchange simulator: {vname} instrument {md}: tick_e8 / lot_e8 >= 1")
        vm, vd = _value_ratio(tick_e8, lot_e8)
        ins[k, I_VENUE] = vid
        ins[k, I_INSTR] = md
        ins[k, I_MAKER_PPM] = maker
        ins[k, I_TAKER_PPM] = taker
        ins[k, I_VMULT] = vm
        ins[k, I_VDIV] = vd
    cfg = np.zeros(CF_N, np.int64)
    cfg[CF_QMODEL] = QUEUE_MODELS[st.queue_model]
    cfgf = np.zeros(CFF_N, np.float64)
    cfgf[CFF_QPOW] = st.queue_power
    lat = np.array([st.entry.row(), st.response.row(), st.feed.row()], np.float64)
    ctr = np.zeros(C_N, np.int64)
    ctr[C_NEXT_OID] = 1
    ctr[C_NEXT_EXEC] = 1
    ctr[C_RNG] = st.seed
    ctr[C_SNAP_K] = -1
    cap = st.max_orders
    ctr[C_FREE_N] = cap
    px, qty, n = book.new_books(ni, st.book_levels)
    qcap = _pow2(st.queue_capacity)
    texts = np.zeros((max(TEXTS) + 1, TEXT_LEN), np.uint8)
    for k, s in TEXTS.items():
        b = s.encode()[:TEXT_LEN]
        texts[k, :len(b)] = np.frombuffer(b, np.uint8)
    orders = np.zeros((cap, O_N), np.int64)
    orders[:, O_LIVE_POS] = -1
    return Sim(cfg, cfgf, lat, ctr, imap, ins, px, qty, n,
               np.zeros((ni, 2, TAKEN_N, 2), np.int64), np.full((ni, st.max_live), -1, np.int32),
               orders, np.zeros((cap, F_N), np.float64),
               np.zeros(_pow2(2 * cap), np.int64), np.arange(cap - 1, -1, -1, dtype=np.int32),
               np.zeros(cap, np.int32), np.zeros(qcap, np.int64),
               np.zeros((qcap, records.EXEC_RECORD_SIZE), np.uint8), np.zeros(qcap, np.int64),
               np.zeros((qcap, records.EXEC_RECORD_SIZE), np.uint8), texts,
               np.zeros((2, st.book_levels, 2), np.int64))


def counters(sim: Sim) -> dict:
    return {name: int(sim.ctr[k]) for k, name in CTR_NAMES.items()}


# =============================================================================================
# compiled helpers
# =============================================================================================
@njit(**jit.HELPER)
def _rand_u53(sim):
    """Next uniform in [0, 1) from the splitmix64 state in ctr[C_RNG]."""
    s = np.uint64(sim.ctr[C_RNG]) + np.uint64(0x9E3779B97F4A7C15)
    sim.ctr[C_RNG] = np.int64(s)
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(**jit.HELPER)
def _gauss(sim):
    u1 = _rand_u53(sim)
    u2 = _rand_u53(sim)
    if u1 < 1e-300:
        u1 = 1e-300
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(**jit.HELPER)
def _draw(sim, which):
    kind = int(sim.lat[which, LAT_KIND])
    a = sim.lat[which, LAT_A]
    if kind == LD_CONSTANT:
        v = a
    elif kind == LD_UNIFORM:
        v = a + _rand_u53(sim) * (sim.lat[which, LAT_B] - a)
    elif kind == LD_NORMAL:
        v = a + sim.lat[which, LAT_B] * _gauss(sim)
    else:
        v = a * math.exp(sim.lat[which, LAT_B] * _gauss(sim))
    if v < sim.lat[which, LAT_MIN]:
        v = sim.lat[which, LAT_MIN]
    if v < 0.0:
        v = 0.0
    return np.int64(v)


@njit(cache=True, nogil=True, _nrt=False)
def draw(sim, which):
    """One latency draw (ns) of LAT_ENTRY / LAT_RESPONSE / LAT_FEED."""
    return _draw(sim, which)


# --- index (session, clord) -> row -----------------------------------------------------------
@njit(**jit.HELPER)
def _home(clord, session, mask):
    h = np.uint64(clord) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(session) * np.uint64(0xC2B2AE3D27D4EB4F)
    h = h ^ (h >> np.uint64(29))
    return np.int64(h & np.uint64(mask))


@njit(**jit.HELPER)
def _find(sim, session, clord):
    mask = sim.index.shape[0] - 1
    i = _home(clord, session, mask)
    while True:
        v = sim.index[i]
        if v == 0:
            return -1
        r = v - 1
        if sim.orders[r, O_CLORD] == clord and sim.orders[r, O_SESSION] == session:
            return r
        i = (i + 1) & mask


@njit(cache=True, nogil=True, _nrt=False)
def find(sim, session, clord):
    """Row of the order known as ``clord`` in ``session`` (working or recently finished), -1."""
    return _find(sim, session, clord)


@njit(**jit.HELPER)
def _index_insert(sim, r):
    mask = sim.index.shape[0] - 1
    i = _home(sim.orders[r, O_CLORD], sim.orders[r, O_SESSION], mask)
    while sim.index[i] != 0:
        i = (i + 1) & mask
    sim.index[i] = r + 1


@njit(**jit.HELPER)
def _index_delete(sim, r):
    """Remove row r's key; backward-shift deletion keeps every probe chain intact."""
    mask = sim.index.shape[0] - 1
    i = _home(sim.orders[r, O_CLORD], sim.orders[r, O_SESSION], mask)
    while sim.index[i] != r + 1:
        if sim.index[i] == 0:
            return
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        v = sim.index[j]
        if v == 0:
            break
        rr = v - 1
        h = _home(sim.orders[rr, O_CLORD], sim.orders[rr, O_SESSION], mask)
        # move v back to the hole at i unless its home lies cyclically in (i, j]
        if (j > i and (h <= i or h > j)) or (j < i and (h <= i and h > j)):
            sim.index[i] = v
            i = j
    sim.index[i] = 0


# --- rows, live lists ------------------------------------------------------------------------
@njit(**jit.HELPER)
def _alloc(sim):
    """A free row (recycling the oldest finished order when none is free), -1 if every row is
    working."""
    nf = sim.ctr[C_FREE_N]
    if nf > 0:
        sim.ctr[C_FREE_N] = nf - 1
        return np.int64(sim.free[nf - 1])
    if sim.ctr[C_RET_N] == 0:
        return -1
    cap = sim.ret.shape[0]
    r = np.int64(sim.ret[sim.ctr[C_RET_HEAD]])
    sim.ctr[C_RET_HEAD] = (sim.ctr[C_RET_HEAD] + 1) % cap
    sim.ctr[C_RET_N] -= 1
    _index_delete(sim, r)
    return r


@njit(**jit.HELPER)
def _finish(sim, r, status):
    """Order r leaves the book: out of its live list, onto the retired FIFO (its id stays known
    for 'too late' answers until the row is recycled)."""
    o = sim.orders
    o[r, O_STATE] = OS_DONE
    o[r, O_STATUS] = status
    k = o[r, O_INS]
    p = o[r, O_LIVE_POS]
    if p >= 0:
        last = sim.ins[k, I_NLIVE] - 1
        moved = sim.live[k, last]
        sim.live[k, p] = moved
        o[np.int64(moved), O_LIVE_POS] = p
        sim.live[k, last] = -1
        sim.ins[k, I_NLIVE] = last
        o[r, O_LIVE_POS] = -1
    cap = sim.ret.shape[0]
    sim.ret[(sim.ctr[C_RET_HEAD] + sim.ctr[C_RET_N]) % cap] = r
    sim.ctr[C_RET_N] += 1


@njit(**jit.HELPER)
def _join(sim, k, side, price):
    """Queue ahead of an order joining ``price``: the displayed quantity there; behind everything
    (UNKNOWN_FRONT, clamped at the next snapshot) while the book is not known."""
    if sim.ins[k, I_VALID] == 0:
        return UNKNOWN_FRONT
    s = 0 if side == records.SIDE_BUY else 1
    return float(book.qty_at(sim.px, sim.qty, sim.n, k, s, price))


@njit(**jit.HELPER)
def _rest(sim, r, k):
    """Order r joins the live list of instrument k with its queue position."""
    nl = sim.ins[k, I_NLIVE]
    sim.live[k, nl] = r
    sim.orders[r, O_LIVE_POS] = nl
    sim.ins[k, I_NLIVE] = nl + 1
    sim.front[r, F_FRONT] = _join(sim, k, sim.orders[r, O_SIDE], sim.orders[r, O_PRICE])
    sim.front[r, F_TRADED] = 0.0


# --- taken liquidity ---------------------------------------------------------------------------
@njit(**jit.HELPER)
def _avail(sim, k, s, price, displayed):
    nt = sim.ins[k, I_NTAKEN + s]
    for j in range(nt):
        if sim.taken[k, s, j, 0] == price:
            a = displayed - sim.taken[k, s, j, 1]
            return a if a > 0 else 0
    return displayed


@njit(**jit.HELPER)
def _take(sim, k, s, price, q):
    nt = sim.ins[k, I_NTAKEN + s]
    for j in range(nt):
        if sim.taken[k, s, j, 0] == price:
            sim.taken[k, s, j, 1] += q
            return
    if nt == TAKEN_N:                 # full: forget the oldest entry
        for j in range(TAKEN_N - 1):
            sim.taken[k, s, j, 0] = sim.taken[k, s, j + 1, 0]
            sim.taken[k, s, j, 1] = sim.taken[k, s, j + 1, 1]
        nt -= 1
    sim.taken[k, s, nt, 0] = price
    sim.taken[k, s, nt, 1] = q
    sim.ins[k, I_NTAKEN + s] = nt + 1


@njit(**jit.HELPER)
def _taken_update(sim, k, s, price, newq):
    """The replay set the level at ``price`` to ``newq``: what we took cannot exceed it."""
    nt = sim.ins[k, I_NTAKEN + s]
    for j in range(nt):
        if sim.taken[k, s, j, 0] == price:
            if newq < sim.taken[k, s, j, 1]:
                sim.taken[k, s, j, 1] = newq
            if sim.taken[k, s, j, 1] <= 0:
                for m in range(j, nt - 1):
                    sim.taken[k, s, m, 0] = sim.taken[k, s, m + 1, 0]
                    sim.taken[k, s, m, 1] = sim.taken[k, s, m + 1, 1]
                sim.ins[k, I_NTAKEN + s] = nt - 1
            return


# --- responses -----------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _room(sim, need):
    cap = sim.outq.shape[0]
    return cap - (sim.ctr[C_OUT_TAIL] - sim.ctr[C_OUT_HEAD]) >= need


# numba-level inline, unlike the HELPERs: it returns a view of sim.out, which a separately
# compiled function without NRT may not return
@njit(cache=True, nogil=True, _nrt=False, inline='always')
def _out(sim, t):
    """Next response row (zeroed), delivered at ``t`` (never before the previous response)."""
    if t < sim.ctr[C_OUT_LAST]:
        t = sim.ctr[C_OUT_LAST]
    sim.ctr[C_OUT_LAST] = t
    cap = sim.outq.shape[0]
    i = sim.ctr[C_OUT_TAIL] & (cap - 1)
    sim.ctr[C_OUT_TAIL] += 1
    sim.outq_t[i] = t
    row = sim.outq[i]
    row[:] = 0
    return row


@njit(**jit.HELPER)
def _write_oid(row, oid):
    """ACK.venue_order_id = the order number in decimal (ASCII, NUL padded)."""
    nd = 1
    v = oid
    while v >= 10:
        v //= 10
        nd += 1
    v = oid
    for j in range(nd - 1, -1, -1):
        row[_ACK_VID + j] = 48 + v % 10
        v //= 10


@njit(**jit.HELPER)
def _ack(sim, r, exec_type, clord, orig, t, tr):
    o = sim.orders
    row = _out(sim, tr)
    a = row.view(records.ACK)[0]
    a.rtype = records.RT_ACK
    k = o[r, O_INS]
    a.venue = sim.ins[k, I_VENUE]
    a.instrument = sim.ins[k, I_INSTR]
    a.origin_tsc = t
    a.clord_id = clord
    a.orig_clord_id = orig
    a.strategy = o[r, O_STRATEGY]
    a.session = o[r, O_SESSION]
    a.price = o[r, O_PRICE]
    a.qty = o[r, O_QTY]
    a.leaves_qty = o[r, O_LEAVES] if o[r, O_STATE] == OS_WORKING else 0
    a.cum_qty = o[r, O_CUM]
    a.exec_type = exec_type
    a.ord_status = o[r, O_STATUS]
    a.side = o[r, O_SIDE]
    _write_oid(row, o[r, O_OID])


@njit(**jit.HELPER)
def _reject(sim, order, why, t, tr):
    """A REJECT record for ``order`` ``(venue, instrument, clord_id, orig_clord_id, strategy,
    session)``, ``why`` = ``(is_cancel_reject, ord_status, text, reason)``: the text is one of
    sim.texts (T_*), the reason a records.RJ_* code."""
    venue, instr, clord, orig, strategy, session = order
    is_cxl, ord_status, text, reason = why
    row = _out(sim, tr)
    j = row.view(records.REJECT)[0]
    j.rtype = records.RT_REJECT
    j.venue = venue
    j.instrument = instr
    j.origin_tsc = t
    j.clord_id = clord
    j.orig_clord_id = orig
    j.strategy = strategy
    j.session = session
    j.reason = reason
    j.is_cancel_reject = is_cxl
    j.ord_status = ord_status
    for m in range(TEXT_LEN):
        row[_REJ_TEXT + m] = sim.texts[text, m]
    if is_cxl:
        sim.ctr[C_CXL_REJECTS] += 1
    else:
        sim.ctr[C_REJECTS] += 1


@njit(**jit.HELPER)
def _fee(sim, k, price, q, liq):
    notional = price * q * sim.ins[k, I_VMULT] // sim.ins[k, I_VDIV]
    ppm = sim.ins[k, I_MAKER_PPM] if liq == LIQ_MAKER else sim.ins[k, I_TAKER_PPM]
    f = notional * ppm
    if f >= 0:
        return f // 1_000_000
    return -((-f) // 1_000_000)


@njit(**jit.HELPER)
def _fill(sim, r, price, q, liq, t, tr):
    """Execute q lots of order r at price; emits the FILL (ends the order when nothing is left)."""
    o = sim.orders
    k = o[r, O_INS]
    o[r, O_LEAVES] -= q
    o[r, O_CUM] += q
    done = o[r, O_LEAVES] <= 0
    o[r, O_STATUS] = ST_FILLED if done else ST_PARTIAL
    fee = _fee(sim, k, price, q, liq)
    row = _out(sim, tr)
    f = row.view(records.FILL)[0]
    f.rtype = records.RT_FILL
    f.venue = sim.ins[k, I_VENUE]
    f.instrument = sim.ins[k, I_INSTR]
    f.origin_tsc = t
    f.clord_id = o[r, O_CLORD]
    f.strategy = o[r, O_STRATEGY]
    f.session = o[r, O_SESSION]
    f.last_price = price
    f.last_qty = q
    f.leaves_qty = o[r, O_LEAVES] if o[r, O_LEAVES] > 0 else 0
    f.cum_qty = o[r, O_CUM]
    f.fee = fee
    f.exec_id = sim.ctr[C_NEXT_EXEC]
    sim.ctr[C_NEXT_EXEC] += 1
    f.ord_status = o[r, O_STATUS]
    f.side = o[r, O_SIDE]
    f.liquidity = liq
    sim.ctr[C_FILLS] += 1
    sim.ctr[C_VOLUME] += q
    sim.ctr[C_FEES_E8] += fee
    sim.front[r, F_NOTIONAL] += float(price) * float(q)
    if liq == LIQ_MAKER:
        sim.ctr[C_MAKER_FILLS] += 1
    else:
        sim.ctr[C_TAKER_FILLS] += 1
    if done and o[r, O_STATE] == OS_WORKING:
        _finish(sim, r, ST_FILLED)


# --- queue models ----------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _prob(model, n, front, back):
    """P(a decrease at the level came from behind us)."""
    if model == QM_POWER:
        fb = back ** n
        ff = front ** n
        return fb / (fb + ff) if fb + ff > 0.0 else 1.0
    if model == QM_LOG:
        fb = math.log(1.0 + back)
        ff = math.log(1.0 + front)
        return fb / (fb + ff) if fb + ff > 0.0 else 1.0
    if model == QM_POWER2:
        d = (back + front) ** n
        return (back ** n) / d if d > 0.0 else 1.0
    if model == QM_LOG2:
        d = math.log(1.0 + back + front)
        return math.log(1.0 + back) / d if d > 0.0 else 1.0
    tot = front + back
    return 1.0 - (front / tot) ** n if tot > 0.0 else 1.0


@njit(**jit.HELPER)
def _q_depth(sim, r, prev, new):
    model = sim.cfg[CF_QMODEL]
    fr = sim.front[r, F_FRONT]
    if model == QM_RISK_AVERSE:
        if new < fr:
            sim.front[r, F_FRONT] = new
        return
    chg = prev - new - sim.front[r, F_TRADED]
    sim.front[r, F_TRADED] = 0.0
    if chg < 0.0:
        if new < fr:
            sim.front[r, F_FRONT] = new
        return
    back = prev - fr
    p = _prob(model, sim.cfgf[CFF_QPOW], fr, back)
    if not (p <= 1.0):          # inf / nan: all of it behind us
        p = 1.0
    est = fr - (1.0 - p) * chg
    extra = back - p * chg
    if extra < 0.0:
        est += extra
    if est > new:
        est = new
    if est < 0.0:
        est = 0.0               # cancellations ahead of us bring us to the front, never fill us
    sim.front[r, F_FRONT] = est


@njit(**jit.HELPER)
def _q_trade(sim, r, q, t, tr):
    """A trade of q lots at order r's price consumes the queue ahead; fills what reaches us."""
    sim.front[r, F_FRONT] -= q
    sim.front[r, F_TRADED] += q
    fr = sim.front[r, F_FRONT]
    if fr < 0.0:
        x = np.int64(math.floor(-fr + 0.5))
        if x > 0:
            sim.front[r, F_FRONT] = 0.0
            lv = sim.orders[r, O_LEAVES]
            if x > lv:
                x = lv
            _fill(sim, r, sim.orders[r, O_PRICE], x, LIQ_MAKER, t, tr)
            return 1
    return 0


# --- matching ------------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _available(sim, k, side, limit, is_market):
    """Available liquidity (displayed - taken) on the side opposite to ``side`` at or through
    ``limit``."""
    os_ = 1 if side == records.SIDE_BUY else 0
    cnt = sim.n[k, os_]
    tot = 0
    for i in range(cnt - 1, -1, -1):
        p = sim.px[k, os_, i]
        if not is_market and ((side == records.SIDE_BUY and p > limit)
                              or (side != records.SIDE_BUY and p < limit)):
            break
        tot += _avail(sim, k, os_, p, sim.qty[k, os_, i])
    return tot


@njit(**jit.HELPER)
def _crosses(sim, k, side, limit):
    os_ = 1 if side == records.SIDE_BUY else 0
    cnt = sim.n[k, os_]
    for i in range(cnt - 1, -1, -1):
        p = sim.px[k, os_, i]
        if (side == records.SIDE_BUY and p > limit) or (side != records.SIDE_BUY and p < limit):
            return False
        if _avail(sim, k, os_, p, sim.qty[k, os_, i]) > 0:
            return True
    return False


@njit(cache=True, nogil=True, _nrt=False)
def _walk(sim, r, is_market, liq, t, tr):
    """Order r takes available liquidity from the opposite side, best level first, up to its
    limit: fills at each level's price (``liq`` decides taker / maker) and records what it took."""
    o = sim.orders
    k = o[r, O_INS]
    side = o[r, O_SIDE]
    limit = o[r, O_PRICE]
    os_ = 1 if side == records.SIDE_BUY else 0
    i = sim.n[k, os_] - 1
    while i >= 0 and o[r, O_LEAVES] > 0 and o[r, O_STATE] == OS_WORKING:
        p = sim.px[k, os_, i]
        if not is_market and ((side == records.SIDE_BUY and p > limit)
                              or (side != records.SIDE_BUY and p < limit)):
            break
        a = _avail(sim, k, os_, p, sim.qty[k, os_, i])
        if a > 0:
            if not _room(sim, 2):
                sim.ctr[C_STALLS] += 1
                break
            x = a if a < o[r, O_LEAVES] else o[r, O_LEAVES]
            _take(sim, k, os_, p, x)
            _fill(sim, r, limit if liq == LIQ_MAKER else p, x, liq, t, tr)
        i -= 1


@njit(**jit.INTERNAL)
def _through(sim, k, t, tr):
    """BATCH_END: resting orders the opposite side's available liquidity now reaches fill as
    makers at their own price. Returns fills."""
    nf = 0
    j = 0
    while j < sim.ins[k, I_NLIVE]:
        r = np.int64(sim.live[k, j])
        side = sim.orders[r, O_SIDE]
        if _crosses(sim, k, side, sim.orders[r, O_PRICE]):
            before = sim.ctr[C_FILLS]
            _walk(sim, r, False, LIQ_MAKER, t, tr)
            nf += sim.ctr[C_FILLS] - before
            if sim.orders[r, O_STATE] != OS_WORKING:
                continue            # finished: the live list moved another order into slot j
        j += 1
    return nf


@njit(**jit.INTERNAL)
def _on_trade(sim, k, price, q, side, t, tr):
    """A replayed trade of q lots at price; ``side`` = aggressor (SIDE_NONE: infer)."""
    if side == records.SIDE_NONE:
        nb = sim.n[k, 0]
        na = sim.n[k, 1]
        if nb > 0 and price <= sim.px[k, 0, nb - 1]:
            side = records.SIDE_SELL
        elif na > 0 and price >= sim.px[k, 1, na - 1]:
            side = records.SIDE_BUY
        else:
            sim.ctr[C_TRADES_SKIPPED] += 1
            return 0
    ours = records.SIDE_BUY if side == records.SIDE_SELL else records.SIDE_SELL
    nf = 0
    j = 0
    while j < sim.ins[k, I_NLIVE]:
        r = np.int64(sim.live[k, j])
        if sim.orders[r, O_SIDE] == ours:
            p = sim.orders[r, O_PRICE]
            if not _room(sim, 2):
                sim.ctr[C_STALLS] += 1
                break
            if (ours == records.SIDE_BUY and p > price) or (ours == records.SIDE_SELL and p < price):
                _fill(sim, r, p, sim.orders[r, O_LEAVES], LIQ_MAKER, t, tr)
                nf += 1
                continue
            if p == price:
                nf += _q_trade(sim, r, q, t, tr)
                if sim.orders[r, O_STATE] != OS_WORKING:
                    continue
        j += 1
    return nf


@njit(**jit.HELPER)
def _on_l2(sim, k, s, price, q):
    nl = sim.ins[k, I_NLIVE]
    if nl > 0:
        prev = book.qty_at(sim.px, sim.qty, sim.n, k, s, price)
        book.update(sim.px, sim.qty, sim.n, k, s, price, q)
        side = records.SIDE_BUY if s == 0 else records.SIDE_SELL
        for j in range(nl):
            r = np.int64(sim.live[k, j])
            if sim.orders[r, O_SIDE] == side and sim.orders[r, O_PRICE] == price:
                _q_depth(sim, r, float(prev), float(q))
    else:
        book.update(sim.px, sim.qty, sim.n, k, s, price, q)
    if sim.ins[k, I_NTAKEN + s] > 0:
        _taken_update(sim, k, s, price, q)


@njit(**jit.HELPER)
def _clear_book(sim, k):
    book.clear(sim.px, sim.qty, sim.n, k)
    sim.ins[k, I_NTAKEN] = 0
    sim.ins[k, I_NTAKEN + 1] = 0


@njit(**jit.INTERNAL)
def _snap_flush(sim):
    """Build the book of the instrument whose snapshot was buffered. Venues send snapshot levels
    best first; inserted one by one at the worst end of a best-at-the-end array each would move
    every level (quadratic in the snapshot's size), so a side that arrived strictly best to
    worst is written in one pass; any other order goes through ``book.update`` level by level."""
    k = sim.ctr[C_SNAP_K]
    sim.ctr[C_SNAP_K] = -1
    if k < 0:
        return
    for s in range(2):
        cnt = sim.ctr[C_SNAP_N + s]
        sim.ctr[C_SNAP_N + s] = 0
        ordered = True
        for j in range(cnt):
            if sim.snap[s, j, 1] <= 0 or sim.snap[s, j, 0] <= 0 or (j > 0 and (
                    (s == 0 and sim.snap[s, j, 0] >= sim.snap[s, j - 1, 0])
                    or (s == 1 and sim.snap[s, j, 0] <= sim.snap[s, j - 1, 0]))):
                ordered = False
                break
        if ordered and sim.n[k, s] == 0:
            m = cnt if cnt < sim.px.shape[2] else sim.px.shape[2]
            for j in range(m):
                sim.px[k, s, j] = sim.snap[s, m - 1 - j, 0]
                sim.qty[k, s, j] = sim.snap[s, m - 1 - j, 1]
            sim.n[k, s] = m
        else:
            for j in range(cnt):
                book.update(sim.px, sim.qty, sim.n, k, s, sim.snap[s, j, 0], sim.snap[s, j, 1])


@njit(**jit.HELPER)
def _snap_level(sim, k, s, price, q):
    """A snapshot level of instrument k: buffered while the buffer has room, else applied."""
    if sim.ctr[C_SNAP_K] == k:
        cnt = sim.ctr[C_SNAP_N + s]
        if cnt < sim.snap.shape[1]:
            sim.snap[s, cnt, 0] = price
            sim.snap[s, cnt, 1] = q
            sim.ctr[C_SNAP_N + s] = cnt + 1
            return
        _snap_flush(sim)          # a side longer than the book: build, the rest one by one
    _on_l2(sim, k, s, price, q)


@njit(**jit.INTERNAL)
def _md_trade(sim, k, price, q, side, t):
    """A replayed trade on instrument k with resting orders (out of line: rare)."""
    if not _room(sim, MARGIN):
        return E_QUEUE_FULL
    before = sim.ctr[C_OUT_TAIL]
    _on_trade(sim, k, price, q, side, t, t + _draw(sim, LAT_RESPONSE))
    return sim.ctr[C_OUT_TAIL] - before


@njit(**jit.INTERNAL)
def _md_batch(sim, k, t):
    """BATCH_END of instrument k with resting orders: clamp queue positions after a snapshot,
    then fill what the book now reaches (out of line: only books we rest on get here)."""
    nl = sim.ins[k, I_NLIVE]
    if sim.ins[k, I_SNAP_BATCH] != 0:
        sim.ins[k, I_SNAP_BATCH] = 0
        for j in range(nl):
            r = np.int64(sim.live[k, j])
            s = 0 if sim.orders[r, O_SIDE] == records.SIDE_BUY else 1
            v = float(book.qty_at(sim.px, sim.qty, sim.n, k, s, sim.orders[r, O_PRICE]))
            if v < sim.front[r, F_FRONT]:
                sim.front[r, F_FRONT] = v
            sim.front[r, F_TRADED] = 0.0
    if sim.ins[k, I_VALID] == 0:
        return 0
    if not _room(sim, MARGIN):
        return E_QUEUE_FULL
    before = sim.ctr[C_OUT_TAIL]
    _through(sim, k, t, t + _draw(sim, LAT_RESPONSE))
    return sim.ctr[C_OUT_TAIL] - before


@njit(**jit.HELPER)
def _on_md(sim, rec, off, t):
    """Apply the md record at ``rec[off:]`` (exchange time ``t``); see the module docstring.
    Returns responses emitted, or E_QUEUE_FULL (nothing applied)."""
    o = np.uint64(off)
    w = load_relaxed(rec, o + _TW)
    rt = np.int64(w & _U8)
    venue = np.int64((w >> np.uint64(8)) & _U8)
    instr = np.int64(w >> np.uint64(32))
    if venue >= sim.imap.shape[0] or instr >= sim.imap.shape[1]:
        return 0
    k = sim.imap[venue, instr]
    if k < 0:
        return 0
    sim.ctr[C_MD] += 1
    if rt == records.RT_L2_UPDATE:
        flags = np.int64((w >> np.uint64(16)) & _U16)
        price = np.int64(load_relaxed(rec, o + np.uint64(records.L2_PRICE_OFF)))
        q = np.int64(load_relaxed(rec, o + np.uint64(records.L2_QTY_OFF)))
        side = np.int64(load_relaxed(rec, o + np.uint64(records.L2_SIDE_OFF)) & _U8)
        s = 0 if side == records.SIDE_BUY else 1
        if side != records.SIDE_BUY and side != records.SIDE_SELL:
            return 0
        if (flags & records.F_SNAPSHOT) != 0:
            if sim.ins[k, I_SNAP] == 0:
                if sim.ctr[C_SNAP_K] >= 0:
                    _snap_flush(sim)
                _clear_book(sim, k)
                sim.ins[k, I_SNAP] = 1
                sim.ins[k, I_SNAP_BATCH] = 1
                sim.ctr[C_SNAP_K] = k
            _snap_level(sim, k, s, price, q)
            return 0
        if sim.ins[k, I_SNAP] != 0:
            sim.ins[k, I_SNAP] = 0
            if sim.ctr[C_SNAP_K] == k:
                _snap_flush(sim)
        _on_l2(sim, k, s, price, q)
        return 0
    if sim.ctr[C_SNAP_K] == k:
        _snap_flush(sim)              # a snapshot ends at the first other record of its book
    if rt == records.RT_TRADE:
        if sim.ins[k, I_VALID] == 0 or sim.ins[k, I_NLIVE] == 0:
            return 0
        return _md_trade(sim, k, np.int64(load_relaxed(rec, o + np.uint64(records.TRADE_PRICE_OFF))),
                         np.int64(load_relaxed(rec, o + np.uint64(records.TRADE_QTY_OFF))),
                         np.int64(load_relaxed(rec, o + np.uint64(records.TRADE_SIDE_OFF)) & _U8), t)
    if rt == records.RT_BATCH_END:
        sim.ins[k, I_SNAP] = 0
        nl = sim.ins[k, I_NLIVE]
        if nl == 0:
            sim.ins[k, I_SNAP_BATCH] = 0
            return 0
        if sim.ins[k, I_SNAP_BATCH] == 0:
            if sim.ins[k, I_VALID] == 0:
                return 0
            # the call below is only worth it when the book now reaches a resting order
            reach = False
            for j in range(nl):
                r = np.int64(sim.live[k, j])
                if _crosses(sim, k, sim.orders[r, O_SIDE], sim.orders[r, O_PRICE]):
                    reach = True
                    break
            if not reach:
                return 0
        return _md_batch(sim, k, t)
    if rt == records.RT_BOOK_STATUS:
        st = np.int64(load_relaxed(rec, o + np.uint64(records.BOOK_STATUS_STATUS_OFF)) & _U8)
        if st == records.BOOK_INVALID:
            _clear_book(sim, k)
            sim.ins[k, I_VALID] = 0
        elif st == records.BOOK_VALID:
            sim.ins[k, I_VALID] = 1
        return 0
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def on_md(sim, rec, off, t):
    """See ``_on_md`` (the backtest inlines that one)."""
    return _on_md(sim, rec, off, t)


@njit(cache=True, nogil=True, _nrt=False)
def on_md_block(sim, recs, n_rec, t, out2d, res):
    """Apply ``n_rec`` md records (uint8[N, 64] rows) at time ``t`` (the mock exchange follows an
    md ring), draining responses into ``out2d`` rows as it goes. ``res[0]`` = responses written
    to ``out2d``, ``res[1]`` = records applied (fewer than ``n_rec`` only when ``out2d`` filled:
    call again with the rest)."""
    m = 0
    j = 0
    while j < n_rec:
        if out2d.shape[0] - m < MARGIN:
            break
        c = _on_md(sim, recs[j], 0, t)
        if c < 0:
            break
        while m < out2d.shape[0] and sim.ctr[C_OUT_HEAD] != sim.ctr[C_OUT_TAIL]:
            _pop_response(sim, out2d[m])
            m += 1
        j += 1
    res[0] = m
    res[1] = j
    return m


# --- orders -----------------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _new_order(sim, rec, t, tr):
    a = rec.view(records.NEW_ORDER)[0]
    venue = np.int64(a.venue)
    instr = np.int64(a.instrument)
    clord = np.int64(a.clord_id)
    session = np.int64(a.session)
    strategy = np.int64(a.strategy)
    side = np.int64(a.side)
    ord_type = np.int64(a.ord_type)
    tif = np.int64(a.tif)
    price = np.int64(a.price)
    q = np.int64(a.qty)
    flags = np.int64(a.flags)
    sim.ctr[C_NEW] += 1
    k = -1
    if venue < sim.imap.shape[0] and 0 <= instr < sim.imap.shape[1]:
        k = sim.imap[venue, instr]
    text = T_NONE
    if k < 0:
        text = T_UNKNOWN_SYMBOL
    elif _find(sim, session, clord) >= 0:
        text = T_DUPLICATE
    elif side != records.SIDE_BUY and side != records.SIDE_SELL:
        text = T_BAD_SIDE
    elif q <= 0:
        text = T_BAD_QTY
    elif ord_type != records.ORD_LIMIT and ord_type != records.ORD_MARKET:
        text = T_BAD_TYPE
    elif tif != records.TIF_GTC and tif != records.TIF_IOC and tif != records.TIF_FOK \
            and tif != records.TIF_DAY:
        text = T_BAD_TYPE
    elif ord_type == records.ORD_LIMIT and price <= 0:
        text = T_BAD_PRICE
    elif sim.ins[k, I_VALID] == 0 and ord_type == records.ORD_MARKET:
        text = T_NO_MARKET
    elif sim.ins[k, I_NLIVE] >= sim.live.shape[1]:
        text = T_TOO_MANY
    is_market = ord_type == records.ORD_MARKET
    crosses = False
    if text == T_NONE and sim.ins[k, I_VALID] != 0:
        crosses = is_market or _crosses(sim, k, side, price)
        if crosses and (flags & records.F_POST_ONLY) != 0:
            text = T_POST_ONLY
    r = -1
    if text == T_NONE:
        r = _alloc(sim)
        if r < 0:
            text = T_TOO_MANY
    if text != T_NONE:
        _reject(sim, (venue, instr if instr >= 0 else 0, clord, 0, strategy, session),
                (0, ST_REJECTED, text, _rej_reason(text)), t, tr)
        return
    o = sim.orders
    o[r, O_STATE] = OS_WORKING
    o[r, O_CLORD] = clord
    o[r, O_SESSION] = session
    o[r, O_OID] = sim.ctr[C_NEXT_OID]
    sim.ctr[C_NEXT_OID] += 1
    o[r, O_INS] = k
    o[r, O_SIDE] = side
    o[r, O_PRICE] = price if not is_market else 0
    o[r, O_QTY] = q
    o[r, O_LEAVES] = q
    o[r, O_CUM] = 0
    o[r, O_TIF] = tif
    o[r, O_FLAGS] = flags
    o[r, O_ORDTYPE] = ord_type
    o[r, O_STRATEGY] = strategy
    o[r, O_STATUS] = ST_NEW
    o[r, O_ORIGIN] = np.int64(a.origin_tsc)
    o[r, O_LIVE_POS] = -1
    o[r, O_TIME] = t
    sim.front[r, F_NOTIONAL] = 0.0
    _index_insert(sim, r)
    _ack(sim, r, records.EXEC_NEW, clord, 0, t, tr)
    immediate = is_market or tif == records.TIF_IOC or tif == records.TIF_FOK
    if tif == records.TIF_FOK and _available(sim, k, side, price, is_market) < q:
        crosses = False           # all or nothing: nothing
    if crosses:
        _walk(sim, r, is_market, LIQ_TAKER, t, tr)
    if o[r, O_STATE] != OS_WORKING:
        return
    if immediate:
        sim.ctr[C_EXPIRED] += 1
        _finish(sim, r, ST_EXPIRED)
        _ack(sim, r, EXEC_EXPIRED, clord, 0, t, tr)
        return
    _rest(sim, r, k)


@njit(**jit.HELPER)
def _rej_reason(text):
    if text == T_UNKNOWN_SYMBOL:
        return 1
    if text == T_DUPLICATE:
        return 6
    if text == T_NO_MARKET:
        return 2
    if text == T_TOO_MANY:
        return 3
    return 99


@njit(**jit.HELPER)
def _cxl_reason(text):
    if text == T_UNKNOWN_ORDER:
        return 1
    if text == T_TOO_LATE:
        return 0
    if text == T_DUPLICATE:
        return 6
    return 99


@njit(**jit.HELPER)
def _cancel(sim, rec, t, tr):
    a = rec.view(records.CANCEL)[0]
    clord = np.int64(a.clord_id)
    orig = np.int64(a.orig_clord_id)
    session = np.int64(a.session)
    sim.ctr[C_CANCELS] += 1
    r = _find(sim, session, orig)
    if r < 0 or sim.orders[r, O_STATE] != OS_WORKING:
        text = T_UNKNOWN_ORDER if r < 0 else T_TOO_LATE
        st = ST_REJECTED if r < 0 else sim.orders[r, O_STATUS]
        _reject(sim, (np.int64(a.venue), np.int64(a.instrument), clord, orig,
                      np.int64(a.strategy), session), (1, st, text, _cxl_reason(text)), t, tr)
        return
    _finish(sim, r, ST_CANCELED)
    _ack(sim, r, records.EXEC_CANCELED, clord, orig, t, tr)


@njit(**jit.HELPER)
def _replace(sim, rec, t, tr):
    a = rec.view(records.REPLACE)[0]
    clord = np.int64(a.clord_id)
    orig = np.int64(a.orig_clord_id)
    session = np.int64(a.session)
    price = np.int64(a.price)
    q = np.int64(a.qty)
    flags = np.int64(a.flags)
    sim.ctr[C_REPLACES] += 1
    r = _find(sim, session, orig)
    o = sim.orders
    text = T_NONE
    if r < 0:
        text = T_UNKNOWN_ORDER
    elif o[r, O_STATE] != OS_WORKING:
        text = T_TOO_LATE
    elif _find(sim, session, clord) >= 0:
        text = T_DUPLICATE
    elif np.int64(a.side) != o[r, O_SIDE]:
        text = T_REPLACE_SIDE
    elif q <= o[r, O_CUM]:
        text = T_REPLACE_QTY
    elif o[r, O_ORDTYPE] == records.ORD_LIMIT and price <= 0:
        text = T_BAD_PRICE
    k = o[r, O_INS] if r >= 0 else 0
    if text == T_NONE and o[r, O_ORDTYPE] == records.ORD_LIMIT and (flags & records.F_POST_ONLY) != 0 \
            and _crosses(sim, k, o[r, O_SIDE], price):
        text = T_POST_ONLY
    if text != T_NONE:
        st = ST_REJECTED if r < 0 else o[r, O_STATUS]
        _reject(sim, (np.int64(a.venue), np.int64(a.instrument), clord, orig,
                      np.int64(a.strategy), session), (1, st, text, _cxl_reason(text)), t, tr)
        return
    keep = price == o[r, O_PRICE] and q - o[r, O_CUM] <= o[r, O_LEAVES]
    _index_delete(sim, r)
    o[r, O_CLORD] = clord
    _index_insert(sim, r)
    o[r, O_PRICE] = price
    o[r, O_QTY] = q
    o[r, O_LEAVES] = q - o[r, O_CUM]
    o[r, O_FLAGS] = flags
    o[r, O_ORIGIN] = np.int64(a.origin_tsc)
    o[r, O_STATUS] = ST_NEW if o[r, O_CUM] == 0 else ST_PARTIAL
    if not keep:
        sim.front[r, F_FRONT] = _join(sim, k, o[r, O_SIDE], price)
        sim.front[r, F_TRADED] = 0.0
    _ack(sim, r, records.EXEC_REPLACED, clord, orig, t, tr)
    if o[r, O_ORDTYPE] == records.ORD_LIMIT and sim.ins[k, I_VALID] != 0 \
            and _crosses(sim, k, o[r, O_SIDE], price):
        _walk(sim, r, False, LIQ_TAKER, t, tr)


@njit(**jit.HELPER)
def _mass_cancel(sim, rec, t, tr):
    a = rec.view(records.MASS_CANCEL)[0]
    session = np.int64(a.session)
    scope = np.int64(a.scope)
    kk = -1
    if scope == 1:
        v = np.int64(a.venue)
        i = np.int64(a.instrument)
        if v < sim.imap.shape[0] and i < sim.imap.shape[1]:
            kk = sim.imap[v, i]
        if kk < 0:
            sim.ctr[C_MASS_LAST] = 0
            return
    cnt = 0
    for k in range(sim.ins.shape[0]):
        if kk >= 0 and k != kk:
            continue
        j = 0
        while j < sim.ins[k, I_NLIVE]:
            r = np.int64(sim.live[k, j])
            if sim.orders[r, O_SESSION] != session:
                j += 1
                continue
            if not _room(sim, 2):
                sim.ctr[C_STALLS] += 1
                break
            _finish(sim, r, ST_CANCELED)
            _ack(sim, r, records.EXEC_CANCELED, sim.orders[r, O_CLORD], 0, t, tr)
            cnt += 1
    sim.ctr[C_MASS_LAST] = cnt


@njit(**jit.HELPER)
def _process_order(sim, rec, t):
    """Handle one order record arriving at the exchange at ``t``; responses leave at ``t`` +
    a response latency draw. Returns responses emitted or E_QUEUE_FULL (nothing done)."""
    if not _room(sim, MARGIN):
        return E_QUEUE_FULL
    sim.ctr[C_ORDERS] += 1
    before = sim.ctr[C_OUT_TAIL]
    tr = t + _draw(sim, LAT_RESPONSE)
    rt = rec[records.RTYPE_OFF]
    if rt == records.RT_NEW_ORDER:
        _new_order(sim, rec, t, tr)
    elif rt == records.RT_CANCEL:
        _cancel(sim, rec, t, tr)
    elif rt == records.RT_REPLACE:
        _replace(sim, rec, t, tr)
    elif rt == records.RT_MASS_CANCEL:
        _mass_cancel(sim, rec, t, tr)
    else:
        a = rec.view(records.NEW_ORDER)[0]
        _reject(sim, (np.int64(a.venue), np.int64(a.instrument), np.int64(a.clord_id), 0,
                      np.int64(a.strategy), np.int64(a.session)),
                (0, ST_REJECTED, T_BAD_RECORD, 99), t, tr)
    return sim.ctr[C_OUT_TAIL] - before


@njit(cache=True, nogil=True, _nrt=False)
def process_order(sim, rec, t):
    """One order record (uint8[128]) at the exchange now (no entry latency)."""
    return _process_order(sim, rec, t)


# --- in-flight orders (entry latency) ------------------------------------------------------------
@njit(**jit.HELPER)
def _submit(sim, rec, t):
    cap = sim.inq.shape[0]
    if sim.ctr[C_IN_TAIL] - sim.ctr[C_IN_HEAD] >= cap:
        return E_QUEUE_FULL
    ta = t + _draw(sim, LAT_ENTRY)
    if ta < sim.ctr[C_IN_LAST]:
        ta = sim.ctr[C_IN_LAST]
    sim.ctr[C_IN_LAST] = ta
    i = sim.ctr[C_IN_TAIL] & (cap - 1)
    sim.ctr[C_IN_TAIL] += 1
    sim.inq_t[i] = ta
    row = sim.inq[i]
    for m in range(records.ORDER_RECORD_SIZE):
        row[m] = rec[m]
    return OK


@njit(cache=True, nogil=True, _nrt=False)
def submit(sim, rec, t):
    """Order record (uint8[128]) sent at ``t``: it arrives at ``t`` + an entry latency draw."""
    return _submit(sim, rec, t)


@njit(**jit.HELPER)
def _next_arrival(sim):
    if sim.ctr[C_IN_HEAD] == sim.ctr[C_IN_TAIL]:
        return NEVER
    return sim.inq_t[sim.ctr[C_IN_HEAD] & (sim.inq.shape[0] - 1)]


@njit(cache=True, nogil=True, _nrt=False)
def next_arrival(sim):
    return _next_arrival(sim)


@njit(**jit.HELPER)
def _process_arrivals(sim, t):
    tot = 0
    cap = sim.inq.shape[0]
    while sim.ctr[C_IN_HEAD] != sim.ctr[C_IN_TAIL]:
        i = sim.ctr[C_IN_HEAD] & (cap - 1)
        ta = sim.inq_t[i]
        if ta > t:
            break
        c = _process_order(sim, sim.inq[i], ta)
        if c < 0:
            return c
        sim.ctr[C_IN_HEAD] += 1
        tot += c
    return tot


@njit(cache=True, nogil=True, _nrt=False)
def process_arrivals(sim, t):
    """Every in-flight order due by ``t``, in arrival order."""
    return _process_arrivals(sim, t)


@njit(**jit.HELPER)
def _next_response(sim):
    if sim.ctr[C_OUT_HEAD] == sim.ctr[C_OUT_TAIL]:
        return NEVER
    return sim.outq_t[sim.ctr[C_OUT_HEAD] & (sim.outq.shape[0] - 1)]


@njit(cache=True, nogil=True, _nrt=False)
def next_response(sim):
    return _next_response(sim)


@njit(**jit.HELPER)
def _pop_response(sim, out):
    i = sim.ctr[C_OUT_HEAD] & (sim.outq.shape[0] - 1)
    sim.ctr[C_OUT_HEAD] += 1
    row = sim.outq[i]
    for m in range(records.EXEC_RECORD_SIZE):
        out[m] = row[m]
    return sim.outq_t[i]


@njit(cache=True, nogil=True, _nrt=False)
def pop_response(sim, out):
    """Copy the oldest response into ``out`` (uint8[128]); returns its delivery time. Call only
    when ``next_response`` is not NEVER."""
    return _pop_response(sim, out)


@njit(cache=True, nogil=True, _nrt=False)
def drain_responses(sim, out2d):
    """Every queued response into rows of ``out2d`` (as many as fit); returns how many."""
    m = 0
    while m < out2d.shape[0] and sim.ctr[C_OUT_HEAD] != sim.ctr[C_OUT_TAIL]:
        _pop_response(sim, out2d[m])
        m += 1
    return m


# --- a synthetic market (reference prices, tests) ------------------------------------------------
@njit(cache=True, nogil=True, _nrt=False)
def set_level(sim, k, s, price, q):
    """Set one level of instrument k's book as an md update would (queue positions move)."""
    _on_l2(sim, k, s, price, q)


@njit(cache=True, nogil=True, _nrt=False)
def clear_book(sim, k):
    _clear_book(sim, k)


@njit(cache=True, nogil=True, _nrt=False)
def set_valid(sim, k, valid):
    sim.ins[k, I_VALID] = 1 if valid else 0


@njit(cache=True, nogil=True, _nrt=False)
def match_resting(sim, k, t):
    """What a BATCH_END does: resting orders the book now reaches fill (responses at ``t``)."""
    if sim.ins[k, I_VALID] == 0:
        return 0
    if not _room(sim, MARGIN):
        return E_QUEUE_FULL
    before = sim.ctr[C_OUT_TAIL]
    _through(sim, k, t, t)
    return sim.ctr[C_OUT_TAIL] - before


def order_view(sim: Sim, row: int) -> dict:
    """One order row as a dict (the FIX exchange's status replies, tests)."""
    o = sim.orders[row]
    return {"state": int(o[O_STATE]), "clord_id": int(o[O_CLORD]), "session": int(o[O_SESSION]),
            "order_id": int(o[O_OID]), "instrument": int(o[O_INS]), "side": int(o[O_SIDE]),
            "price": int(o[O_PRICE]), "qty": int(o[O_QTY]), "leaves": int(o[O_LEAVES]),
            "cum": int(o[O_CUM]), "tif": int(o[O_TIF]), "flags": int(o[O_FLAGS]),
            "ord_type": int(o[O_ORDTYPE]), "status": int(o[O_STATUS]),
            "front": float(sim.front[row, F_FRONT])}


def warm() -> None:
    """Compile (or load from the cache) every kernel the mock exchange calls, on a throwaway
    simulator: a live exchange must not stall its FIX sessions on a first compile."""
    sim = make_sim([{"venue": "sim", "instrument": 0}], Settings(max_orders=16, max_live=4,
                                                                  book_levels=8, queue_capacity=64))
    rec = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
    md = np.zeros((1, records.MD_RECORD_SIZE), np.uint8)
    out = np.zeros((MARGIN + 1, records.EXEC_RECORD_SIZE), np.uint8)
    res = np.zeros(2, np.int64)
    on_md_block(sim, md, 1, 0, out, res)
    set_level(sim, 0, 0, 1, 1)
    set_valid(sim, 0, True)
    clear_book(sim, 0)
    match_resting(sim, 0, 0)
    process_order(sim, rec, 0)
    drain_responses(sim, out)
    find(sim, 0, 1)
