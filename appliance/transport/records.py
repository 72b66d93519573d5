"""The one schema: every fixed-size record that crosses a ring, and the shared control block.

Every ring slot holds exactly one record of the ring's record size: 64 B (one cache line) for
market data, 128 B (two cache lines) for orders and execution reports. All record kinds of one
family share the 32-byte header below, so a consumer reads ``rtype`` first and then looks at the
same bytes through the dtype of that kind (``buf.view(L2_UPDATE)`` works inside numba too).

Header (32 B, identical in every record)::

    off  size  field        meaning
    0    8     ver          seqlock word, owned by the ring: 2*seq+1 while the slot is being
                            written, 2*seq+2 once record ``seq`` is published (0 = never written).
                            ``record_seq(ver) = ver // 2 - 1`` is the record's ring sequence.
    8    1     rtype        one of the RT_* constants below
    9    1     venue        one of the VENUE_* constants below
    10   2     flags        F_* bits below
    12   4     instrument   per-venue instrument index (position in the venue's instrument list)
    16   8     origin_tsc   TSC of the market event that caused this record (carried downstream)
    24   8     publish_tsc  TSC at which the ring published the record (stamped by the ring)

Prices are integers in ticks and quantities integers in lots of the record's instrument; there is
no float between parsing and encoding. Sides are SIDE_BUY / SIDE_SELL.

Numba note: padding is expressed through ``itemsize`` (numba cannot type void fields), and every
dtype is built aligned; sizes and offsets are asserted at import.
"""
from __future__ import annotations

import numpy as np

CACHE_LINE = 64
MD_RECORD_SIZE = 64
ORDER_RECORD_SIZE = 128
EXEC_RECORD_SIZE = 128
HEADER_SIZE = 32

# --- record types -------------------------------------------------------------------------------
# market data (64 B)
RT_L2_UPDATE = 1      # one price level changed (qty 0 = level removed)
RT_TRADE = 2          # a public trade
RT_BATCH_END = 3      # end of one venue frame's worth of book updates: book is consistent here
RT_BBO = 4            # venue best bid/offer ticker (e.g. Binance bookTicker); not book state
RT_BOOK_STATUS = 5    # book became valid (synced) or invalid (gap, checksum failure, stale...)
# orders (128 B), engine -> FIX gateway
RT_NEW_ORDER = 16
RT_CANCEL = 17
RT_REPLACE = 18
RT_MASS_CANCEL = 19
RT_RECONCILE = 20     # the engine asks a FIX gateway to confirm every working order with the venue
# execution (128 B), FIX gateway -> engine
RT_ACK = 32           # order/cancel/replace accepted (exec_type says which)
RT_FILL = 33          # partial or full fill
RT_REJECT = 34        # order rejected or cancel/replace rejected (OrderCancelReject)
RT_SESSION = 35       # session state change: UP, DOWN (orders in unknown state), RECONCILED

RTYPE_NAMES = {
    RT_L2_UPDATE: "L2_UPDATE", RT_TRADE: "TRADE", RT_BATCH_END: "BATCH_END", RT_BBO: "BBO",
    RT_BOOK_STATUS: "BOOK_STATUS", RT_NEW_ORDER: "NEW_ORDER", RT_CANCEL: "CANCEL",
    RT_REPLACE: "REPLACE", RT_MASS_CANCEL: "MASS_CANCEL", RT_RECONCILE: "RECONCILE", RT_ACK: "ACK", RT_FILL: "FILL",
    RT_REJECT: "REJECT", RT_SESSION: "SESSION",
}

# --- venues -------------------------------------------------------------------------------------
VENUE_NONE = 0
VENUE_BINANCE = 1
VENUE_COINBASE = 2
VENUE_KRAKEN = 3
VENUE_BITSTAMP = 4
VENUE_BITFINEX = 5
VENUE_COINBASE_ADVANCED = 6
VENUE_SIM = 7
VENUE_IDS = {
    "binance": VENUE_BINANCE, "coinbase": VENUE_COINBASE, "kraken": VENUE_KRAKEN,
    "bitstamp": VENUE_BITSTAMP, "bitfinex": VENUE_BITFINEX,
    "coinbase_advanced": VENUE_COINBASE_ADVANCED, "sim": VENUE_SIM,
}
VENUE_NAMES = {v: k for k, v in VENUE_IDS.items()}

# --- sides, flags, enums ------------------------------------------------------------------------
SIDE_NONE = 0
SIDE_BUY = 1   # bid side of a book / buy order / buyer-initiated trade
SIDE_SELL = 2  # ask side of a book / sell order / seller-initiated trade

F_SNAPSHOT = 1 << 0     # record belongs to a snapshot (book rebuilt from scratch)
F_LAST = 1 << 1         # last record of a venue frame
F_REDUCE_ONLY = 1 << 2  # order may only reduce the position
F_POST_ONLY = 1 << 3    # order must not take liquidity
F_POSS_DUP = 1 << 4     # record is a possible duplicate (replayed / resent)

BOOK_VALID = 1
BOOK_INVALID = 2
# reasons for BOOK_INVALID (RT_BOOK_STATUS.reason)
BR_NONE = 0
BR_GAP = 1
BR_CHECKSUM = 2
BR_CROSSED = 3
BR_STALE = 4
BR_DISCONNECT = 5
BR_SNAPSHOT_PENDING = 6
BR_BAD_FRAME = 7

ORD_LIMIT = 1
ORD_MARKET = 2
TIF_GTC = 1
TIF_IOC = 2
TIF_FOK = 3
TIF_DAY = 4

# exec_type / ord_status follow FIX tag 150 / 39 letters as ASCII codes (b'0' new, b'F' trade...)
EXEC_NEW = ord("0")
EXEC_CANCELED = ord("4")
EXEC_REPLACED = ord("5")
EXEC_PENDING_CANCEL = ord("6")
EXEC_REJECTED = ord("8")
EXEC_PENDING_NEW = ord("A")
EXEC_PENDING_REPLACE = ord("E")
EXEC_TRADE = ord("F")
EXEC_ORDER_STATUS = ord("I")

SESSION_UP = 1
SESSION_DOWN = 2          # orders sent on this session are in an unknown state
SESSION_RECONCILED = 3    # status of every working order confirmed after reconnect

# RT_RECONCILE.reason: what the engine asks a FIX gateway to do with the session's working orders
RECONCILE_ENGINE_RESTART = 1   # the engine restarted and lost them: confirm, then cancel them all;
                               # SESSION_RECONCILED once nothing of the session is working
RECONCILE_CONFIRM = 2          # confirm their status with the venue only (0 is read as this too)

# REJECT.reason codes the appliance itself assigns (venue codes from FIX 103/102 are < 1000)
RJ_GW_NOT_READY = 1001       # FIX session down or reconciling: the order was not sent
RJ_GW_TOO_MANY_OPEN = 1002   # the gateway's open-order table is full
RJ_GW_BAD_CLORD = 1003       # ClOrdID 0 is reserved
RJ_GW_KILLED = 1004          # the kill switch is set: the gateway lets no new order or replace out
RJ_GW_SESSION_REJECT = 1005  # the venue answered the message with a session Reject (35=3)
RJ_GW_BUSINESS_REJECT = 1006 # the venue answered it with a BusinessMessageReject (35=j)
RJ_GW_UNCONFIRMED = 1007     # engine-restart reconciliation: the venue did not confirm this
                             # order cancelled (is_cancel_reject = 1; retried until it does)
RJ_GW_ENCODE_BASE = 1010     # RJ_GW_ENCODE_BASE - codec.E_*: the encoder refused the record


def _dtype(fields: list[tuple[str, str]], itemsize: int) -> np.dtype:
    return np.dtype({
        "names": [f[0] for f in fields],
        "formats": [f[1] for f in fields],
        "itemsize": itemsize,
        "aligned": True,
    })


HEADER_FIELDS = [
    ("ver", "<u8"),
    ("rtype", "u1"),
    ("venue", "u1"),
    ("flags", "<u2"),
    ("instrument", "<u4"),
    ("origin_tsc", "<u8"),
    ("publish_tsc", "<u8"),
]
HEADER = _dtype(HEADER_FIELDS, HEADER_SIZE)

# --- market data, 64 B ---------------------------------------------------------------------------
L2_UPDATE = _dtype(HEADER_FIELDS + [
    ("price", "<i8"),        # ticks
    ("qty", "<i8"),          # lots; 0 removes the level
    ("venue_seq", "<u8"),    # venue sequence / update id of the frame (0 if none)
    ("side", "u1"),
], MD_RECORD_SIZE)

TRADE = _dtype(HEADER_FIELDS + [
    ("price", "<i8"),
    ("qty", "<i8"),
    ("trade_id", "<u8"),     # venue trade id (0 if the venue has none numeric)
    ("side", "u1"),          # aggressor side, SIDE_NONE when unknown
], MD_RECORD_SIZE)

BATCH_END = _dtype(HEADER_FIELDS + [
    ("bid_price", "<i8"),    # best bid after the batch (ticks; 0 if the side is empty)
    ("ask_price", "<i8"),    # best ask after the batch (ticks; 0 if the side is empty)
    ("venue_seq", "<u8"),
    ("n_updates", "<u4"),    # L2 updates in this batch
], MD_RECORD_SIZE)

BBO = _dtype(HEADER_FIELDS + [
    ("bid_price", "<i8"),
    ("bid_qty", "<i8"),
    ("ask_price", "<i8"),
    ("ask_qty", "<i8"),
], MD_RECORD_SIZE)

BOOK_STATUS = _dtype(HEADER_FIELDS + [
    ("venue_seq", "<u8"),
    ("status", "u1"),        # BOOK_VALID / BOOK_INVALID
    ("reason", "<u2"),       # BR_*
], MD_RECORD_SIZE)

# --- orders, 128 B -------------------------------------------------------------------------------
_ORDER_COMMON = [
    ("clord_id", "<u8"),     # client order id of this request
    ("strategy", "<u4"),     # strategy instance id
    ("session", "<u4"),      # FIX session index the order goes out on
]
NEW_ORDER = _dtype(HEADER_FIELDS + _ORDER_COMMON + [
    ("price", "<i8"),
    ("qty", "<i8"),
    ("side", "u1"),
    ("ord_type", "u1"),
    ("tif", "u1"),
], ORDER_RECORD_SIZE)

CANCEL = _dtype(HEADER_FIELDS + _ORDER_COMMON + [
    ("orig_clord_id", "<u8"),
    ("qty", "<i8"),          # remaining qty of the order being cancelled (FIX OrderQty)
    ("side", "u1"),
], ORDER_RECORD_SIZE)

REPLACE = _dtype(HEADER_FIELDS + _ORDER_COMMON + [
    ("orig_clord_id", "<u8"),
    ("price", "<i8"),
    ("qty", "<i8"),
    ("side", "u1"),
    ("ord_type", "u1"),
    ("tif", "u1"),
], ORDER_RECORD_SIZE)

MASS_CANCEL = _dtype(HEADER_FIELDS + _ORDER_COMMON + [
    ("scope", "u1"),         # 1 = instrument, 7 = all orders (FIX MassCancelRequestType)
    ("reason", "<u2"),       # why (e.g. kill switch)
], ORDER_RECORD_SIZE)

RECONCILE = _dtype(HEADER_FIELDS + _ORDER_COMMON + [
    ("reason", "<u2"),       # RECONCILE_* below (clord_id: the request's id, echoed by SESSION)
], ORDER_RECORD_SIZE)

# --- execution, 128 B ----------------------------------------------------------------------------
_EXEC_COMMON = [
    ("clord_id", "<u8"),
    ("orig_clord_id", "<u8"),
    ("strategy", "<u4"),
    ("session", "<u4"),
]
ACK = _dtype(HEADER_FIELDS + _EXEC_COMMON + [
    ("price", "<i8"),
    ("qty", "<i8"),
    ("leaves_qty", "<i8"),
    ("cum_qty", "<i8"),
    ("venue_order_id", "S24"),
    ("exec_type", "u1"),
    ("ord_status", "u1"),
    ("side", "u1"),
], EXEC_RECORD_SIZE)

FILL = _dtype(HEADER_FIELDS + _EXEC_COMMON + [
    ("last_price", "<i8"),
    ("last_qty", "<i8"),
    ("leaves_qty", "<i8"),
    ("cum_qty", "<i8"),
    ("fee", "<i8"),          # in fee units of the quote asset (1e-8), positive = paid
    ("exec_id", "<u8"),      # numeric hash of the venue ExecID (duplicate detection)
    ("ord_status", "u1"),
    ("side", "u1"),
    ("liquidity", "u1"),     # 1 maker (added), 2 taker (removed)
], EXEC_RECORD_SIZE)

REJECT = _dtype(HEADER_FIELDS + _EXEC_COMMON + [
    ("reason", "<u2"),       # venue reason code (FIX 103 / 102) or our own RJ_* code
    ("is_cancel_reject", "u1"),
    ("ord_status", "u1"),
    ("text", "S48"),
], EXEC_RECORD_SIZE)

SESSION = _dtype(HEADER_FIELDS + [
    ("session", "<u4"),
    ("state", "u1"),         # SESSION_*
    ("reconcile_id", "<u8"), # clord_id of the RT_RECONCILE request this state answers, 0 = none
], EXEC_RECORD_SIZE)

RECORD_DTYPES = {
    RT_L2_UPDATE: L2_UPDATE, RT_TRADE: TRADE, RT_BATCH_END: BATCH_END, RT_BBO: BBO,
    RT_BOOK_STATUS: BOOK_STATUS, RT_NEW_ORDER: NEW_ORDER, RT_CANCEL: CANCEL, RT_REPLACE: REPLACE,
    RT_MASS_CANCEL: MASS_CANCEL, RT_RECONCILE: RECONCILE, RT_ACK: ACK, RT_FILL: FILL, RT_REJECT: REJECT,
    RT_SESSION: SESSION,
}

# --- shared control block (one region, kind CONTROL) ---------------------------------------------
MAX_ACTORS = 32
ACTOR_NAME_LEN = 24
MAX_STRATEGIES = 64

RISK_RUNNING = 0
RISK_REDUCING = 1
RISK_PAUSED = 2
RISK_HALTED = 3
RISK_STATE_NAMES = {RISK_RUNNING: "RUNNING", RISK_REDUCING: "REDUCING", RISK_PAUSED: "PAUSED",
                    RISK_HALTED: "HALTED"}

ACTOR = _dtype([
    ("pid", "<u8"),
    ("heartbeat_ns", "<u8"),     # CLOCK_REALTIME ns of the actor's last loop heartbeat
    ("loops", "<u8"),            # poll loops since start
    ("kind", "<u4"),             # 1 md, 2 engine, 3 fix, 4 recorder, 5 other
    ("core", "<i4"),
    ("name", f"S{ACTOR_NAME_LEN}"),
    ("kill_ack_epoch", "<u8"),   # this actor has done its part of kill epoch N (a FIX gateway:
                                 # nothing of its own is working at the venue any more)
], 64)

# One line per actor slot (same index as ``actors``), written only by a FIX gateway on that slot:
# the stages of its part of a kill (the last stage, nothing of its own working any more, is the
# actor line's ``kill_ack_epoch``), so a kill can be followed and confirmed while the engine is dead.
GW_KILL = _dtype([
    ("seen_epoch", "<u8"),       # last kill_epoch the gateway acted on (no new order passes)
    ("sent_epoch", "<u8"),       # = seen_epoch once its cancels for that kill went out
    ("done_time_ns", "<u8"),     # CLOCK_REALTIME ns when it set the actor's kill_ack_epoch
    ("working", "<u8"),          # working orders it still knows (open-order table size)
], 64)

CONTROL_BLOCK = np.dtype({
    "names": ["kill", "kill_epoch", "kill_time_ns", "kill_source", "kill_tsc",
              "kill_ack_epoch", "kill_ack_time_ns", "risk_state", "engine_pid", "kill_ack_tsc",
              "kill_reason", "actors", "gw_kill"],
    "formats": ["<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "S64",
                (ACTOR, (MAX_ACTORS,)), (GW_KILL, (MAX_ACTORS,))],
    # line 0 (offset 0): kill request, written by the CLI / risk, read by every actor every loop:
    #   kill (0 = trading allowed, 1 = HALT), kill_epoch (bumped by every request),
    #   kill_time_ns (CLOCK_REALTIME of the request), kill_source (1 CLI, 2 max loss, 3 persisted),
    #   kill_tsc (TSC when the flag was set)
    # line 1 (offset 64): written by the engine: kill_ack_epoch (= kill_epoch once halted),
    #   kill_ack_time_ns, risk_state (RISK_*), engine_pid, kill_ack_tsc (TSC of the ack: the
    #   kill acknowledgement is kill_ack_tsc - kill_tsc, one clock)
    # line 2 (offset 128): kill_reason text; lines 3.. (offset 192): one line per actor;
    # then (offset 192 + 64 * MAX_ACTORS) one GW_KILL line per actor slot (FIX gateways only)
    "offsets": [0, 8, 16, 24, 32, 64, 72, 80, 88, 96, 128, 192, 192 + 64 * MAX_ACTORS],
    "itemsize": 192 + 128 * MAX_ACTORS,
    "aligned": True,
})


# --- field offsets (bytes from the start of a record), derived from the dtypes above -------------
# Compiled readers that look at a record's raw bytes (aligned 64-bit loads instead of a record
# view) use these; numba freezes them as constants.
def field_offset(dt: np.dtype, name: str) -> int:
    return int(dt.fields[name][1])


VER_OFF = field_offset(HEADER, "ver")
RTYPE_OFF = field_offset(HEADER, "rtype")
VENUE_OFF = field_offset(HEADER, "venue")
FLAGS_OFF = field_offset(HEADER, "flags")
INSTRUMENT_OFF = field_offset(HEADER, "instrument")
TYPE_WORD_OFF = RTYPE_OFF    # u64 word: rtype | venue << 8 | flags << 16 | instrument << 32
ORIGIN_TSC_OFF = field_offset(HEADER, "origin_tsc")
PUBLISH_TSC_OFF = field_offset(HEADER, "publish_tsc")
# fields common to every order record (NEW_ORDER, CANCEL, REPLACE, MASS_CANCEL, RECONCILE)
ORDER_CLORD_OFF = field_offset(NEW_ORDER, "clord_id")
ORDER_STRATEGY_OFF = field_offset(NEW_ORDER, "strategy")
ORDER_SESSION_OFF = field_offset(NEW_ORDER, "session")
# fields common to ACK, FILL and REJECT
EXEC_CLORD_OFF = field_offset(ACK, "clord_id")
EXEC_ORIG_CLORD_OFF = field_offset(ACK, "orig_clord_id")
EXEC_STRATEGY_OFF = field_offset(ACK, "strategy")
EXEC_SESSION_OFF = field_offset(ACK, "session")
L2_PRICE_OFF = field_offset(L2_UPDATE, "price")
L2_QTY_OFF = field_offset(L2_UPDATE, "qty")
L2_SIDE_OFF = field_offset(L2_UPDATE, "side")
TRADE_PRICE_OFF = field_offset(TRADE, "price")
TRADE_QTY_OFF = field_offset(TRADE, "qty")
TRADE_SIDE_OFF = field_offset(TRADE, "side")
BOOK_STATUS_STATUS_OFF = field_offset(BOOK_STATUS, "status")


def record_seq(ver: int) -> int:
    """Ring sequence of a published record from its seqlock word (an int or a uint64 array)."""
    return ver // 2 - 1


def record_seqs(rows: np.ndarray) -> np.ndarray:
    """``record_seq`` of records given as bytes: ``rows`` uint8[..., record_size] (one record
    or a batch) -> int64[...] (0-d for one record; -1 for a slot never written)."""
    ver = np.ascontiguousarray(rows[..., VER_OFF:VER_OFF + 8]).view("<u8")[..., 0]
    return record_seq(ver.astype(np.int64))      # ver < 2**63: 2 * seq + 2 with seq < 2**62


def _check_layout() -> None:
    for name, dt in [("L2_UPDATE", L2_UPDATE), ("TRADE", TRADE), ("BATCH_END", BATCH_END),
                     ("BBO", BBO), ("BOOK_STATUS", BOOK_STATUS)]:
        assert dt.itemsize == MD_RECORD_SIZE, (name, dt.itemsize)
    for name, dt in [("NEW_ORDER", NEW_ORDER), ("CANCEL", CANCEL), ("REPLACE", REPLACE),
                     ("MASS_CANCEL", MASS_CANCEL), ("RECONCILE", RECONCILE), ("ACK", ACK), ("FILL", FILL),
                     ("REJECT", REJECT), ("SESSION", SESSION)]:
        assert dt.itemsize == ORDER_RECORD_SIZE, (name, dt.itemsize)
    for dt in RECORD_DTYPES.values():
        for fname, off in (("ver", 0), ("rtype", 8), ("venue", 9), ("flags", 10),
                           ("instrument", 12), ("origin_tsc", 16), ("publish_tsc", 24)):
            assert dt.fields[fname][1] == off, (dt, fname)
        assert dt.isalignedstruct
    # common order/exec fields sit at the same offsets in every kind of the family
    for fam, names in ((("NEW_ORDER", "CANCEL", "REPLACE", "MASS_CANCEL", "RECONCILE"),
                        ("clord_id", "strategy", "session")),
                       (("ACK", "FILL", "REJECT"), ("clord_id", "orig_clord_id", "strategy", "session"))):
        for f in names:
            offs = {globals()[k].fields[f][1] for k in fam}
            assert len(offs) == 1, (fam, f, offs)
    # the packed type word read by compiled readers
    assert (VENUE_OFF, FLAGS_OFF, INSTRUMENT_OFF) == (TYPE_WORD_OFF + 1, TYPE_WORD_OFF + 2, TYPE_WORD_OFF + 4)
    # field widths the byte-wise readers assume (rec[RTYPE_OFF] is the whole rtype, ...)
    for dt, widths in ((HEADER, (("ver", 8), ("rtype", 1), ("venue", 1), ("flags", 2),
                                 ("instrument", 4), ("origin_tsc", 8), ("publish_tsc", 8))),
                       (NEW_ORDER, (("clord_id", 8), ("strategy", 4), ("session", 4))),
                       (ACK, (("clord_id", 8), ("orig_clord_id", 8), ("strategy", 4), ("session", 4)))):
        for fname, width in widths:
            assert dt.fields[fname][0].itemsize == width, (dt, fname)
    # byte ranges copied as one block: instrument + origin_tsc of the header, strategy + session
    # of an order record into an exec record
    assert INSTRUMENT_OFF + 4 == ORIGIN_TSC_OFF
    assert ORDER_STRATEGY_OFF + 4 == ORDER_SESSION_OFF and EXEC_STRATEGY_OFF + 4 == EXEC_SESSION_OFF
    assert VER_OFF == 0                  # the ring's seqlock word is word 0 of every slot
    for off in (L2_PRICE_OFF, L2_QTY_OFF, L2_SIDE_OFF, TRADE_PRICE_OFF, TRADE_QTY_OFF,
                TRADE_SIDE_OFF, BOOK_STATUS_STATUS_OFF):
        assert off % 8 == 0, off          # read as aligned 64-bit words
    assert CONTROL_BLOCK.fields["kill_ack_epoch"][1] == 64
    assert CONTROL_BLOCK.fields["actors"][1] % 64 == 0
    assert ACTOR.itemsize == 64
    assert GW_KILL.itemsize == 64 and CONTROL_BLOCK.fields["gw_kill"][1] % 64 == 0


_check_layout()
