"""``appliance fix exchange``: the mock exchange, a FIX acceptor over the compiled exchange simulator.

It runs on the session layer (``appliance.fix.session``: logon, heartbeats, sequence numbers,
resend, persistence are its job); this module is the application: it turns each order message into
an order record for :mod:`appliance.sim.matching` (the same simulator the backtest runs) and the
simulator's exec records back into FIX messages. ``MatchingVenue.handle(msg, owner)`` takes one
parsed application message and returns the replies as ``[(msg_type, body_fields)]``; fills of
resting orders caused by the market come from ``MatchingVenue.poll_market`` /
``set_reference`` as ``[(owner, (msg_type, body))]``.

The market. Each instrument follows, in order of preference:

- the md ring of its venue (``md.<venue>``, attached as an ordinary reader in the exchange
  process): the replayed or live market the md gateway publishes; in ``appliance sim`` this is the
  same market the engine sees, so its quotes fill by queue position and trades, and positions,
  PnL and the risk gate's limits move with real fills;
- a reference price (``--ref SYMBOL=PRICE`` or ``set_reference``): a one-level market at that price
  on both sides with unlimited quantity (orders at or through it take, resting orders it crosses
  fill as makers at their own price);
- nothing: limit orders rest (no queue position is known: they stay behind whatever is displayed
  when a market appears), immediate orders expire, market orders are rejected.

Instruments: the ``[[instruments]]`` entries of each FIX session's venue (``[fix.sessions.NAME]
.venue``; symbol, md id, tick, lot: the grid of the venue's md records, maker / taker fees) plus
any symbol seen in an order or a reference (grid 1e-8 when nothing says otherwise). Prices and quantities cross the wire as decimal
text: an off-grid value is rejected, never rounded.

Replies (FIX 4.4, and FIX 4.2 on a 4.2 session; the dictionary orders the fields):

- NewOrderSingle (D): ExecutionReport New (150=0 39=0), then fills: 4.4 150=F with 31/32, 39=1/2,
  851 (1 maker, 2 taker), Commission (12, CommType 13=3); 4.2 ExecTransType 20=0 with 150=1/2
  (partial / fill) and 39=1/2 (no 851: 4.2 has no such field). IOC/FOK/market remainders expire
  (150=C 39=C). Rejects 150=8 39=8 with OrdRejReason 103 (4.2: values 0-8 only) and Text 58.
- OrderCancelRequest (F): 150=4 39=4 (11 = the cancel's id, 41 = the order's); unknown ->
  OrderCancelReject (35=9, 434=1, 102=1); no longer working -> 35=9 102=0 (too late) with its
  OrdStatus.
- OrderCancelReplaceRequest (G): 150=5 with the new ClOrdID, price and qty (39=0/1), then fills if
  it now crosses; rejects -> 35=9 434=2.
- OrderMassCancelRequest (q, FIX 4.4 only): a 150=4 for each working order of the session (530=7)
  or of the symbol (530=1), then OrderMassCancelReport (35=r, 531 = the request type, 533 = how
  many). FIX 4.2 has no mass cancel (the dictionary rejects 35=q as an invalid MsgType).
- OrderStatusRequest (H): 4.4 150=I; 4.2 20=3 (status) with 150 = the order's OrdStatus; unknown
  order -> 39=8 and 58 "unknown order".
- OrderMassStatusRequest (AF): one 150=I report per working order of the requesting session (585=7
  all, 1 by Symbol; 584 = the request's id, 911 their number, 912=Y on the last); nothing when none
  is working.

The venue renders FIX 4.4 bodies; :func:`for_version` turns them into the FIX 4.2 form on a 4.2
session (``ExchangeApplication`` applies it to everything it sends).

Identity across restarts: OrderID (37) and ExecID (17) are ``<boot>-<n>`` where ``boot`` is a
counter kept in the store directory (incremented at every start; without a store directory, the
start time in ms), so a restarted exchange never repeats an id a gateway has seen. The CLI uses a
persistent session store by default (``<state_dir>/fix-exchange``): sequence numbers continue
after a restart, and an order resent with PossDupFlag below the expected sequence is not taken as
new. Working orders do not survive a restart (a reconnecting gateway's status requests get
"unknown order").
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
from decimal import Decimal, InvalidOperation

import numpy as np

from appliance import fsutil
from appliance.actor import Actor, ActorError
from appliance.fix import dictionary as dictionary_mod
from appliance.fix.session import Application, Session, SessionConfig, UnsupportedMessageType
from appliance.fix.store import DIR_MODE, FILE_MODE, FileStore, MemoryStore, private_dir
from appliance.fix.transport import EventLoop
from appliance.fix.wire import Message
from appliance.sim import matching as M
from appliance.transport import records as R

log = logging.getLogger(__name__)

# OrdRejReason (103)
REJ_UNKNOWN_SYMBOL = 1
REJ_ORDER_EXCEEDS_LIMIT = 3
REJ_DUPLICATE = 6
REJ_OTHER = 99
# CxlRejReason (102)
CXL_TOO_LATE = 0
CXL_UNKNOWN_ORDER = 1
CXL_BROKER_OPTION = 2
CXL_DUPLICATE_CLORDID = 6
CXL_BROKER_OPTION_B = b"2"

DEFAULT_GRID = "0.00000001"
MAX_INSTRUMENTS = 256
MAX_MD_ID = 4096
HUGE_QTY = 1 << 60            # a reference market's depth
OUT_ROWS = 4096

_STATUS_CHR = {M.ST_NEW: b"0", M.ST_PARTIAL: b"1", M.ST_FILLED: b"2", M.ST_CANCELED: b"4",
               M.ST_REJECTED: b"8", M.ST_EXPIRED: b"C"}
_SIDE = {b"1": R.SIDE_BUY, b"2": R.SIDE_SELL, b"5": R.SIDE_SELL, b"6": R.SIDE_SELL}
_TIF = {b"0": R.TIF_DAY, b"1": R.TIF_GTC, b"3": R.TIF_IOC, b"4": R.TIF_FOK}
_TIF_CHR = {R.TIF_DAY: b"0", R.TIF_GTC: b"1", R.TIF_IOC: b"3", R.TIF_FOK: b"4"}


class BadOrder(ValueError):
    """An order message that cannot be accepted; carries the OrdRejReason."""

    def __init__(self, text: str, reason: int = REJ_OTHER):
        super().__init__(text)
        self.reason = reason


def _grid(text: str, what: str) -> Decimal:
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a decimal") from None
    if not d.is_finite() or d <= 0:
        raise ValueError(f"{what} {text!r} must be a positive decimal")
    return d


def fmt(d: Decimal) -> bytes:
    """Decimal -> FIX text without exponent or trailing zeros ("100", "1.5")."""
    d = d.normalize()
    if d == 0:
        return b"0"
    s = format(d, "f")
    return s.encode()


class Instrument:
    """One tradable symbol of the mock exchange: its sim row, md identity and grid."""

    def __init__(self, k: int, symbol: bytes, venue: int, md_id: int, tick: Decimal, lot: Decimal):
        self.k = k
        self.symbol = symbol
        self.venue = venue
        self.md_id = md_id
        self.tick = tick
        self.lot = lot

    def ticks(self, d: Decimal, what: str) -> int:
        v = d / self.tick
        if v != v.to_integral_value():
            raise BadOrder(f"{what} {fmt(d).decode()} is not on the {fmt(self.tick).decode()} grid")
        return int(v)

    def lots(self, d: Decimal, what: str) -> int:
        v = d / self.lot
        if v != v.to_integral_value():
            raise BadOrder(f"{what} {fmt(d).decode()} is not a multiple of the lot "
                           f"{fmt(self.lot).decode()}")
        return int(v)

    def px(self, ticks: int) -> Decimal:
        return Decimal(int(ticks)) * self.tick

    def qty(self, lots: int) -> Decimal:
        return Decimal(int(lots)) * self.lot


def _decimal(msg: Message, tag: int, what: str, required: bool = True) -> Decimal | None:
    v = msg.get(tag)
    if v is None:
        if required:
            raise BadOrder(f"{what} ({tag}) missing")
        return None
    try:
        d = Decimal(v.decode())
    except (InvalidOperation, UnicodeDecodeError):
        raise BadOrder(f"{what} ({tag}) not a number: {v[:20]!r}") from None
    if not d.is_finite():
        raise BadOrder(f"{what} ({tag}) not finite")
    return d


class _Ids:
    """ClOrdID text <-> the simulator's u64 ids, per session. Canonical decimals map to
    themselves (a gateway's ids stay readable); any other text gets an id with the top bit set."""

    def __init__(self):
        self.text: dict[int, bytes] = {}
        self.num: dict[bytes, int] = {}
        self._next = 1

    def of(self, s: bytes, create: bool = True) -> int | None:
        if s.isdigit() and (len(s) == 1 or s[0] != 48) and len(s) <= 19:
            v = int(s)
            if 0 < v < 1 << 63:
                return v
        v = self.num.get(s)
        if v is None and create:
            v = (1 << 62) | self._next
            self._next += 1
            self.num[s] = v
            self.text[v] = s
        return v

    def name(self, v: int) -> bytes:
        t = self.text.get(v)
        return t if t is not None else str(v).encode()


class Order:
    """An order as a test or a tool describes it (the old mock exchange's shape). Assigned into
    ``MatchingVenue.orders[clord]`` it becomes a working order of the simulator on its ``owner``'s
    session, placed without any report (an order the venue has that the client never sent, e.g.
    after the client lost its state); ``status`` / ``working`` / ``cum_qty`` then read the
    simulator."""

    def __init__(self, order_id, clord_id: bytes, symbol: bytes, side: bytes, ord_type: bytes,
                 tif: bytes, qty: Decimal, price: Decimal | None, cum_qty=Decimal(0), status=b"0",
                 avg_px=Decimal(0), owner=None):
        self.order_id, self.clord_id, self.symbol = order_id, clord_id, symbol
        self.side, self.ord_type, self.tif, self.qty, self.price = side, ord_type, tif, qty, price
        self.owner = owner
        self._status = status
        self._bound = None             # (venue, session index, clord u64) once placed

    def _row(self) -> int:
        v, si, c = self._bound
        return M.find(v.sim, si, c)

    @property
    def status(self) -> bytes:
        if self._bound is None:
            return self._status
        r = self._row()
        return _STATUS_CHR.get(int(self._bound[0].sim.orders[r, M.O_STATUS]), b"8") if r >= 0 else b"8"

    @property
    def working(self) -> bool:
        if self._bound is None:
            return self._status in (b"0", b"1")
        r = self._row()
        return r >= 0 and int(self._bound[0].sim.orders[r, M.O_STATE]) == M.OS_WORKING


class OrderBookView:
    """``MatchingVenue.orders``: orders by ClOrdID over every session (read), and placement of an
    :class:`Order` (write)."""

    def __init__(self, venue: "MatchingVenue"):
        self._venue = venue

    def __getitem__(self, clord: bytes) -> Order:
        v = self._venue
        for si, ids in v.ids.items():
            c = ids.of(clord, create=False)
            r = M.find(v.sim, si, c) if c is not None else -1
            if r >= 0:
                o = v.sim.orders[r]
                ins = v.by_k[int(o[M.O_INS])]
                view = Order(v._oid(int(o[M.O_OID])), clord, ins.symbol,
                             b"1" if int(o[M.O_SIDE]) == R.SIDE_BUY else b"2", b"2",
                             _TIF_CHR.get(int(o[M.O_TIF]), b"1"), ins.qty(int(o[M.O_QTY])),
                             ins.px(int(o[M.O_PRICE])), owner=v.owners.get(si))
                view._bound = (v, si, c)
                return view
        raise KeyError(clord)

    def __contains__(self, clord: bytes) -> bool:
        try:
            self[clord]
            return True
        except KeyError:
            return False

    def __setitem__(self, clord: bytes, order: Order) -> None:
        v = self._venue
        si = v.session_index(order.owner)
        ins = v._instrument(order.symbol, v._venue_of(order.owner))
        c = v._ids(si).of(clord)
        v._fill_header(R.RT_NEW_ORDER, ins, si, c)
        r = v.rec[0]
        r["price"] = ins.ticks(Decimal(order.price), "Price") if order.price is not None else 0
        r["qty"] = ins.lots(Decimal(order.qty), "OrderQty")
        r["side"] = _SIDE.get(order.side, R.SIDE_BUY)
        r["ord_type"] = R.ORD_LIMIT
        r["tif"] = _TIF.get(order.tif, R.TIF_GTC)
        M.process_order(v.sim, v.rec_u8.reshape(-1), time.time_ns())
        M.drain_responses(v.sim, v.out)          # placed silently: nobody was told
        order._bound = (v, si, c)


class MatchingVenue:
    """Order state and replies of the mock exchange (one instance serves every session)."""

    def __init__(self, symbols=None, references: dict | None = None, fee_rate: Decimal = Decimal(0),
                 settings: M.Settings | None = None, boot: int | None = None):
        st = settings or M.Settings(max_orders=1 << 17, max_live=1 << 14, book_levels=4096)
        if fee_rate:
            bps = float(Decimal(fee_rate) * 10_000)
            st = M.Settings(**{**st.__dict__, "fees": {"*": (bps, bps)}})
        self.settings = st
        M.warm()
        self.sim = M.make_sim([], st, capacity=MAX_INSTRUMENTS, md_width=MAX_MD_ID)
        self.instruments: dict[tuple[int, bytes], Instrument] = {}
        self.by_k: dict[int, Instrument] = {}
        self.only = {s.encode() if isinstance(s, str) else s for s in symbols} if symbols else None
        self.boot = boot if boot is not None else time.time_ns() // 1_000_000
        self._eid = 0
        self.ids: dict[int, _Ids] = {}
        self.owners: dict[int, object] = {}         # session index -> session object
        self._sess_index: dict[int, int] = {}       # id(session) -> index
        self.refs: dict[bytes, Decimal] = {}
        self.session_venue: dict[int, int] = {}     # session index -> records.VENUE_*
        self._pending_new: dict = {}                # (session, clord) -> the order's fields
        self._pending_cxl: dict = {}                # (session, clord) -> 1 cancel / 2 replace
        self.rec = np.zeros(1, R.NEW_ORDER)
        self.rec_u8 = self.rec.view(np.uint8)
        self.out = np.zeros((OUT_ROWS, R.EXEC_RECORD_SIZE), np.uint8)
        self.res = np.zeros(2, np.int64)
        self.counts = {"orders": 0, "cancels": 0, "replaces": 0, "fills": 0, "rejects": 0,
                       "status": 0, "mass_cancels": 0, "mass_status": 0, "unsent_fills": 0,
                       "md_records": 0}
        self.orders = OrderBookView(self)
        for s, p in (references or {}).items():
            self.set_reference(s, p)

    # ---- instruments ----------------------------------------------------------------------
    def add_instrument(self, symbol, venue: int = R.VENUE_SIM, md_id: int | None = None,
                       tick: str = DEFAULT_GRID, lot: str = DEFAULT_GRID,
                       fees_bps: tuple | None = None) -> Instrument:
        """Trade ``symbol`` of ``venue`` (records.VENUE_*): ``md_id`` its instrument id on the
        venue's md ring (None: an id no md record uses), ``tick`` / ``lot`` its grid (decimal
        strings), ``fees_bps`` (maker, taker) (default: the settings' fees of the venue)."""
        sym = symbol.encode() if isinstance(symbol, str) else bytes(symbol)
        key = (venue, sym)
        ins = self.instruments.get(key)
        if ins is not None:
            return ins
        k = len(self.by_k)
        if k >= MAX_INSTRUMENTS:
            raise BadOrder("too many instruments", REJ_UNKNOWN_SYMBOL)
        if md_id is None:
            md_id = MAX_MD_ID - 1 - k
        if not 0 <= md_id < self.sim.imap.shape[1] or self.sim.imap[venue, md_id] >= 0:
            raise ValueError(f"instrument {sym!r}: md id {md_id} of venue {venue} unusable")
        t, lt = _grid(tick, "tick_size"), _grid(lot, "lot_size")
        ins = Instrument(k, sym, venue, md_id, t, lt)
        self.sim.imap[venue, md_id] = k
        self.sim.ins[k, M.I_VENUE] = venue
        self.sim.ins[k, M.I_INSTR] = md_id
        vname = R.VENUE_NAMES.get(venue, "sim")
        if fees_bps is not None:
            maker, taker = int(round(fees_bps[0] * 100)), int(round(fees_bps[1] * 100))
        else:
            maker, taker = self.settings.fee_ppm(vname)
        tick_e8 = t * 100_000_000
        lot_e8 = lt * 100_000_000
        if tick_e8 == tick_e8.to_integral_value() and lot_e8 == lot_e8.to_integral_value():
            vm, vd = M._value_ratio(int(tick_e8), int(lot_e8))
        else:
            vm, vd = 0, 1                            # finer than 1e-8: fees are not charged
        self.sim.ins[k, M.I_MAKER_PPM] = maker
        self.sim.ins[k, M.I_TAKER_PPM] = taker
        self.sim.ins[k, M.I_VMULT] = vm
        self.sim.ins[k, M.I_VDIV] = vd
        self.instruments[key] = ins
        self.by_k[k] = ins
        return ins

    def _instrument(self, sym: bytes, venue: int) -> Instrument:
        ins = self.instruments.get((venue, sym))
        if ins is None:
            ins = self.instruments.get((R.VENUE_SIM, sym))
        if ins is None:
            for (v, s), i in self.instruments.items():
                if s == sym:
                    return i
            if self.only is not None and sym not in self.only:
                raise BadOrder(f"unknown symbol {sym.decode(errors='replace')}", REJ_UNKNOWN_SYMBOL)
            ins = self.add_instrument(sym, venue if venue != R.VENUE_NONE else R.VENUE_SIM)
        return ins

    # ---- sessions ---------------------------------------------------------------------------
    def session_index(self, owner) -> int:
        if owner is None:
            return 0
        i = self._sess_index.get(id(owner))
        if i is None:
            i = len(self._sess_index)
            self._sess_index[id(owner)] = i
            self.owners[i] = owner
        return i

    def _ids(self, si: int) -> _Ids:
        ids = self.ids.get(si)
        if ids is None:
            ids = self.ids[si] = _Ids()
        return ids

    @staticmethod
    def _version(owner) -> str:
        cfg = getattr(owner, "cfg", None)
        return getattr(cfg, "begin_string", "FIX.4.4") if cfg is not None else "FIX.4.4"

    def _venue_of(self, owner) -> int:
        if owner is None:
            return R.VENUE_SIM
        return self.session_venue.get(self.session_index(owner), R.VENUE_SIM)

    # ---- replies ------------------------------------------------------------------------------
    def _exec_id(self) -> bytes:
        self._eid += 1
        return b"%d-%d" % (self.boot, self._eid)

    def _oid(self, n: int) -> bytes:
        return b"%d-%d" % (self.boot, n)

    def _er(self, v42: bool, exec_type: bytes, ord_status: bytes, order_id: bytes, clord: bytes,
            sym: bytes, side: bytes, qty: Decimal | None, ord_type: bytes | None,
            price: Decimal | None, tif: bytes | None, leaves: Decimal, cum: Decimal, avg: Decimal,
            orig: bytes | None = None, last_px: Decimal | None = None, last_qty: Decimal | None = None,
            fee: Decimal | None = None, liq: int = 0, text: str | None = None,
            reason: int | None = None, status_reply: bool = False, flags: int = 0) -> tuple:
        body = [(37, order_id), (11, clord)]
        if orig is not None:
            body.append((41, orig))
        body.append((17, self._exec_id()))
        body += [(150, exec_type), (39, ord_status), (55, sym), (54, side)]
        if qty is not None:
            body.append((38, fmt(qty)))
        if ord_type is not None:
            body.append((40, ord_type))
        if price is not None and ord_type == b"2":
            body.append((44, fmt(price)))
        if tif is not None:
            body.append((59, tif))
        if flags & R.F_POST_ONLY:
            body.append((18, b"6"))
        if last_qty is not None:
            body += [(32, fmt(last_qty)), (31, fmt(last_px))]
            if fee is not None and fee != 0:
                body += [(12, fmt(fee)), (13, b"3")]
        if reason is not None:
            body.append((103, str(reason).encode()))
        body += [(151, fmt(leaves)), (14, fmt(cum)), (6, fmt(avg))]
        if text:
            body.append((58, text.encode()))
        if liq:
            body.append((851, str(liq).encode()))
        return (b"8", body)

    def _cancel_reject(self, v42: bool, clord: bytes, orig: bytes, response_to: int,
                       status: bytes, order_id: bytes, reason: int, text: str) -> tuple:
        return (b"9", [(37, order_id), (11, clord), (41, orig), (39, status),
                       (434, str(response_to).encode()), (102, str(reason).encode()),
                       (58, text.encode())])

    def _avg(self, row: int, ins: Instrument) -> Decimal:
        cum = int(self.sim.orders[row, M.O_CUM])
        if cum <= 0:
            return Decimal(0)
        avg_ticks = Decimal(float(self.sim.front[row, M.F_NOTIONAL]) / cum)
        return (avg_ticks * ins.tick).quantize(ins.tick / 10_000).normalize()

    def _render(self, rows: np.ndarray, n: int, want_owner: bool = False) -> list:
        """Exec records from the simulator -> FIX replies (with their session if ``want_owner``)."""
        out = []
        sim = self.sim
        for j in range(n):
            row = rows[j]
            rt = int(row[R.RTYPE_OFF])
            rec = row.view(R.RECORD_DTYPES[rt])[0]
            si = int(rec["session"])
            owner = self.owners.get(si)
            v42 = self._version(owner) == "FIX.4.2"
            ids = self._ids(si)
            clord = ids.name(int(rec["clord_id"]))
            orig_v = int(rec["orig_clord_id"])
            orig = ids.name(orig_v) if orig_v else None
            k = int(sim.imap[int(rec["venue"]), int(rec["instrument"])]) \
                if int(rec["instrument"]) < sim.imap.shape[1] else -1
            ins = self.by_k.get(k)
            if rt == R.RT_REJECT:
                text = bytes(rec["text"]).rstrip(b"\0").decode(errors="replace")
                reason = int(rec["reason"])
                if rec["is_cancel_reject"]:
                    r = M.find(sim, si, orig_v) if orig_v else -1
                    oid = self._oid(int(sim.orders[r, M.O_OID])) if r >= 0 else b"NONE"
                    msg = self._cancel_reject(v42, clord, orig or b"NONE", self._pending_cxl.pop(
                        (si, int(rec["clord_id"])), 1), _STATUS_CHR.get(int(rec["ord_status"]), b"8"),
                        oid, reason, text)
                else:
                    self.counts["rejects"] += 1
                    p = self._pending_new.pop((si, int(rec["clord_id"])), None)
                    sym, side, qty, ot, px, tif = p if p else (b"?", b"1", None, None, None, None)
                    msg = self._er(v42, b"8", b"8", b"NONE", clord, sym, side, qty, ot, px, tif,
                                   Decimal(0), Decimal(0), Decimal(0), text=text, reason=reason)
                out.append((owner, msg) if want_owner else msg)
                continue
            r = M.find(sim, si, int(rec["clord_id"]))
            if r < 0 and orig_v:
                r = M.find(sim, si, orig_v)          # a cancel's ack carries the cancel's id
            if r < 0 or ins is None:
                log.warning("exec record for an order the simulator no longer knows (clord %s)", clord)
                continue
            o = sim.orders[r]
            side = b"1" if int(o[M.O_SIDE]) == R.SIDE_BUY else b"2"
            ot = b"1" if int(o[M.O_ORDTYPE]) == R.ORD_MARKET else b"2"
            common = dict(order_id=self._oid(int(o[M.O_OID])), clord=clord, sym=ins.symbol,
                          side=side, qty=ins.qty(int(o[M.O_QTY])), ord_type=ot,
                          price=ins.px(int(o[M.O_PRICE])), tif=_TIF_CHR.get(int(o[M.O_TIF])),
                          flags=int(o[M.O_FLAGS]))
            if rt == R.RT_FILL:
                self.counts["fills"] += 1
                lq = int(rec["last_qty"])
                lp = int(rec["last_price"])
                msg = self._er(v42, b"F", _STATUS_CHR[int(rec["ord_status"])], leaves=ins.qty(int(rec["leaves_qty"])),
                               cum=ins.qty(int(rec["cum_qty"])), avg=self._avg(r, ins),
                               last_px=ins.px(lp), last_qty=ins.qty(lq),
                               fee=Decimal(int(rec["fee"])) / 100_000_000, liq=int(rec["liquidity"]),
                               **common)
            else:
                et = bytes([int(rec["exec_type"])])
                msg = self._er(v42, et, _STATUS_CHR.get(int(rec["ord_status"]), b"0"),
                               leaves=ins.qty(int(rec["leaves_qty"])), cum=ins.qty(int(rec["cum_qty"])),
                               avg=self._avg(r, ins), orig=orig, **common)
            out.append((owner, msg) if want_owner else msg)
        return out

    # ---- inbound ------------------------------------------------------------------------------
    def handle(self, msg: Message, owner=None) -> list:
        """Replies to one order message; ``owner`` (the session it came in on) receives later
        unsolicited fills of its orders."""
        t = msg.msg_type
        si = self.session_index(owner)
        v42 = self._version(owner) == "FIX.4.2"
        try:
            if t == b"D":
                return self._new_order(msg, owner, si, v42)
            if t == b"F":
                return self._cancel(msg, owner, si, v42)
            if t == b"G":
                return self._replace(msg, owner, si, v42)
            if t == b"q":
                return self._mass_cancel(msg, owner, si, v42)
            if t == b"H":
                return self._status(msg, owner, si, v42)
            if t == b"AF":
                return self._mass_status(msg, owner, si, v42)
        except BadOrder as e:
            self.counts["rejects"] += 1
            log.info("rejecting %s: %s", t.decode(errors="replace"), e)
            clord = msg.get(11, b"NONE")
            if t in (b"F", b"G"):
                return [self._cancel_reject(v42, clord, msg.get(41, b"NONE"), 1 if t == b"F" else 2,
                                            b"8", b"NONE", REJ_OTHER, str(e))]
            return [self._er(v42, b"8", b"8", b"NONE", clord, msg.get(55, b"?"), msg.get(54, b"1"),
                             None, msg.get(40), None, msg.get(59), Decimal(0), Decimal(0),
                             Decimal(0), text=str(e), reason=e.reason)]
        return []   # other application messages: the session layer rejects unsupported types

    def _run(self, t_ns: int | None = None) -> list:
        c = M.process_order(self.sim, self.rec_u8.reshape(-1), t_ns or time.time_ns())
        if c < 0:
            raise BadOrder("exchange busy", REJ_OTHER)
        n = M.drain_responses(self.sim, self.out)
        return self._render(self.out, n)

    def _order_fields(self, msg: Message, owner, ins_required=True):
        sym = msg.get(55)
        if not sym:
            raise BadOrder("Symbol (55) missing", REJ_UNKNOWN_SYMBOL)
        ins = self._instrument(sym, self._venue_of(owner))
        side = _SIDE.get(msg.get(54))
        if side is None:
            raise BadOrder(f"bad side {msg.get(54)!r}")
        ot = msg.get(40, b"2")
        if ot not in (b"1", b"2"):
            raise BadOrder(f"unsupported OrdType {ot!r}")
        qty = _decimal(msg, 38, "OrderQty")
        if qty <= 0:
            raise BadOrder("OrderQty must be positive", REJ_ORDER_EXCEEDS_LIMIT)
        lots = ins.lots(qty, "OrderQty")
        price = _decimal(msg, 44, "Price", required=ot == b"2")
        ticks = 0
        if ot == b"2":
            if price <= 0:
                raise BadOrder("Price must be positive")
            ticks = ins.ticks(price, "Price")
        tif_b = msg.get(59, b"0")
        tif = _TIF.get(tif_b)
        if tif is None:
            raise BadOrder(f"unsupported TimeInForce {tif_b!r}")
        flags = 0
        ei = msg.get(18, b"")
        if b"6" in ei.split(b" "):
            flags |= R.F_POST_ONLY
        if b"E" in ei.split(b" "):
            flags |= R.F_REDUCE_ONLY
        return sym, ins, side, ot, qty, lots, price, ticks, tif, tif_b, flags

    def _fill_header(self, rtype: int, ins: Instrument, si: int, clord: int, flags: int = 0) -> None:
        self.rec_u8[:] = 0
        r = self.rec[0]
        r["rtype"] = rtype
        r["venue"] = ins.venue
        r["instrument"] = ins.md_id
        r["flags"] = flags
        r["session"] = si
        r["clord_id"] = clord

    def _new_order(self, msg: Message, owner, si: int, v42: bool) -> list:
        self.counts["orders"] += 1
        clord_b = msg.get(11)
        if not clord_b:
            raise BadOrder("ClOrdID (11) missing")
        sym, ins, side, ot, qty, lots, price, ticks, tif, tif_b, flags = self._order_fields(msg, owner)
        clord = self._ids(si).of(clord_b)
        self._fill_header(R.RT_NEW_ORDER, ins, si, clord, flags)
        r = self.rec[0]
        r["price"] = ticks
        r["qty"] = lots
        r["side"] = side
        r["ord_type"] = R.ORD_MARKET if ot == b"1" else R.ORD_LIMIT
        r["tif"] = R.TIF_IOC if ot == b"1" and tif in (R.TIF_DAY, R.TIF_GTC) else tif
        self._pending_new[(si, clord)] = (sym, msg.get(54), qty, ot, price, tif_b)
        out = self._run()
        self._pending_new.pop((si, clord), None)
        return out

    def _cancel(self, msg: Message, owner, si: int, v42: bool) -> list:
        self.counts["cancels"] += 1
        clord_b, orig_b = msg.get(11), msg.get(41)
        if not clord_b or not orig_b:
            return [self._cancel_reject(v42, clord_b or b"NONE", orig_b or b"NONE", 1, b"8", b"NONE",
                                        CXL_UNKNOWN_ORDER, "ClOrdID (11) and OrigClOrdID (41) required")]
        ids = self._ids(si)
        orig = ids.of(orig_b, create=False)
        row = M.find(self.sim, si, orig) if orig is not None else -1
        if row < 0:
            return [self._cancel_reject(v42, clord_b, orig_b, 1, b"8", b"NONE", CXL_UNKNOWN_ORDER,
                                        "unknown order")]
        ins = self.by_k[int(self.sim.orders[row, M.O_INS])]
        clord = ids.of(clord_b)
        self._fill_header(R.RT_CANCEL, ins, si, clord)
        self.rec.view(R.CANCEL)[0]["orig_clord_id"] = orig
        self._pending_cxl[(si, clord)] = 1
        out = self._run()
        self._pending_cxl.pop((si, clord), None)
        return out

    def _replace(self, msg: Message, owner, si: int, v42: bool) -> list:
        self.counts["replaces"] += 1
        clord_b, orig_b = msg.get(11), msg.get(41)
        if not clord_b or not orig_b:
            return [self._cancel_reject(v42, clord_b or b"NONE", orig_b or b"NONE", 2, b"8", b"NONE",
                                        CXL_UNKNOWN_ORDER, "ClOrdID (11) and OrigClOrdID (41) required")]
        ids = self._ids(si)
        orig = ids.of(orig_b, create=False)
        row = M.find(self.sim, si, orig) if orig is not None else -1
        if row < 0:
            return [self._cancel_reject(v42, clord_b, orig_b, 2, b"8", b"NONE", CXL_UNKNOWN_ORDER,
                                        "unknown order")]
        try:
            sym, ins, side, ot, qty, lots, price, ticks, tif, tif_b, flags = self._order_fields(msg, owner)
        except BadOrder as e:
            st = _STATUS_CHR.get(int(self.sim.orders[row, M.O_STATUS]), b"0")
            return [self._cancel_reject(v42, clord_b, orig_b, 2, st,
                                        self._oid(int(self.sim.orders[row, M.O_OID])),
                                        REJ_OTHER, str(e))]
        clord = ids.of(clord_b)
        self._fill_header(R.RT_REPLACE, ins, si, clord, flags)
        r = self.rec.view(R.REPLACE)[0]
        r["orig_clord_id"] = orig
        r["price"] = ticks
        r["qty"] = lots
        r["side"] = side
        r["ord_type"] = R.ORD_MARKET if ot == b"1" else R.ORD_LIMIT
        r["tif"] = tif
        self._pending_cxl[(si, clord)] = 2
        out = self._run()
        self._pending_cxl.pop((si, clord), None)
        return out

    def _mass_cancel(self, msg: Message, owner, si: int, v42: bool) -> list:
        self.counts["mass_cancels"] += 1
        kind = msg.get(530, b"7")
        sym = msg.get(55)
        out = []
        n = 0
        if kind in (b"1", b"7"):
            ins = None
            if kind == b"1":
                ins = self.instruments.get((self._venue_of(owner), sym or b"")) or next(
                    (i for (v, s), i in self.instruments.items() if s == sym), None)
            if kind == b"7" or ins is not None:
                self.rec_u8[:] = 0
                r = self.rec.view(R.MASS_CANCEL)[0]
                r["rtype"] = R.RT_MASS_CANCEL
                r["session"] = si
                r["scope"] = 7 if kind == b"7" else 1
                if ins is not None:
                    r["venue"] = ins.venue
                    r["instrument"] = ins.md_id
                out = self._run()
                n = int(self.sim.ctr[M.C_MASS_LAST])
        report = [(11, msg.get(11, b"NONE")), (37, b"MC" + self._exec_id()), (530, kind),
                  (531, kind if kind in (b"1", b"7") else b"0"), (533, str(n).encode())]
        if kind == b"1" and sym:
            report.append((55, sym))
        out.append((b"r", report))
        return out

    def _status_er(self, row: int, ids: "_Ids") -> tuple:
        o = self.sim.orders[row]
        ins = self.by_k[int(o[M.O_INS])]
        working = int(o[M.O_STATE]) == M.OS_WORKING
        return self._er(False, b"I", _STATUS_CHR.get(int(o[M.O_STATUS]), b"0"),
                        self._oid(int(o[M.O_OID])), ids.name(int(o[M.O_CLORD])), ins.symbol,
                        b"1" if int(o[M.O_SIDE]) == R.SIDE_BUY else b"2",
                        ins.qty(int(o[M.O_QTY])), b"1" if int(o[M.O_ORDTYPE]) == R.ORD_MARKET else b"2",
                        ins.px(int(o[M.O_PRICE])), _TIF_CHR.get(int(o[M.O_TIF])),
                        ins.qty(int(o[M.O_LEAVES])) if working else Decimal(0),
                        ins.qty(int(o[M.O_CUM])), self._avg(row, ins), status_reply=True,
                        flags=int(o[M.O_FLAGS]))

    def _status(self, msg: Message, owner, si: int, v42: bool) -> list:
        self.counts["status"] += 1
        clord_b = msg.get(11, b"")
        ids = self._ids(si)
        v = ids.of(clord_b, create=False) if clord_b else None
        row = M.find(self.sim, si, v) if v is not None else -1
        if row < 0:
            return [self._er(False, b"I", b"8", b"NONE", clord_b or b"NONE", msg.get(55, b"?"),
                             msg.get(54, b"1"), None, None, None, None, Decimal(0), Decimal(0),
                             Decimal(0), text="unknown order", status_reply=True)]
        return [self._status_er(row, ids)]

    def working_rows(self, si: int, k: int | None = None) -> list:
        """Rows of the session's working orders (of instrument row ``k``), oldest first."""
        rows = []
        sim = self.sim
        for kk in (range(sim.ins.shape[0]) if k is None else (k,)):
            for j in range(int(sim.ins[kk, M.I_NLIVE])):
                r = int(sim.live[kk, j])
                if int(sim.orders[r, M.O_SESSION]) == si:
                    rows.append(r)
        rows.sort(key=lambda r: int(sim.orders[r, M.O_OID]))
        return rows

    def _mass_status(self, msg: Message, owner, si: int, v42: bool) -> list:
        """OrderMassStatusRequest (AF): one 150=I report (584 = the request's id) per working
        order of the requesting session (585=7 all, 1 by Symbol)."""
        self.counts["mass_status"] += 1
        req, kind, sym = msg.get(584, b"NONE"), msg.get(585, b"7"), msg.get(55)
        k = None
        if kind == b"1":
            ins = next((i for (v, s), i in self.instruments.items() if s == sym), None)
            if ins is None:
                return []
            k = ins.k
        rows = self.working_rows(si, k)
        ids = self._ids(si)
        out = []
        for n, r in enumerate(rows, 1):
            mt, body = self._status_er(r, ids)
            body += [(584, req), (911, str(len(rows)).encode())] + ([(912, b"Y")] if n == len(rows) else [])
            out.append((mt, body))
        return out

    # ---- the market ------------------------------------------------------------------------------
    def set_reference(self, symbol, price) -> list:
        """A one-level market at ``price`` on both sides (unlimited quantity); returns
        ``[(owner, (msg_type, body))]``: fills of resting orders it crosses (as makers)."""
        sym = symbol.encode() if isinstance(symbol, str) else bytes(symbol)
        px = Decimal(str(price))
        ins = self._instrument(sym, R.VENUE_SIM)
        ticks = ins.ticks(px, "reference price") if px > 0 else 0
        if ticks <= 0:
            raise ValueError(f"reference price {price!r} for {sym!r} must be > 0 and on the grid")
        self.refs[sym] = px
        M.clear_book(self.sim, ins.k)
        M.set_level(self.sim, ins.k, 0, ticks, HUGE_QTY)
        M.set_level(self.sim, ins.k, 1, ticks, HUGE_QTY)
        M.set_valid(self.sim, ins.k, True)
        c = M.match_resting(self.sim, ins.k, time.time_ns())
        if c < 0:
            return []
        n = M.drain_responses(self.sim, self.out)
        return self._render(self.out, n, want_owner=True)

    def poll_market(self, reader, buf: np.ndarray) -> list:
        """Apply what the md ring ``reader`` published since the last call; returns the fills it
        caused as ``[(owner, (msg_type, body))]``."""
        from appliance.transport import ring
        out = []
        while True:
            n = int(ring.drain(reader.hdr, reader.data, reader.cur, buf, buf.shape[0]))
            if n == 0:
                return out
            self.counts["md_records"] += n
            done = 0
            while done < n:
                M.on_md_block(self.sim, buf[done:], n - done, time.time_ns(), self.out, self.res)
                if self.res[0]:
                    out += self._render(self.out, int(self.res[0]), want_owner=True)
                done += int(self.res[1])
            if n < buf.shape[0]:
                return out


# ------------------------------------------------------------------------------------------------
# the acceptor process
# ------------------------------------------------------------------------------------------------
class ExchangeApplication(Application):
    """Session-layer application: every order message goes to the MatchingVenue."""

    HANDLED = (b"D", b"F", b"G", b"q", b"H", b"AF")

    def __init__(self, venue: MatchingVenue):
        self.venue = venue
        self.pending: dict[int, list] = {}        # id(session) -> replies waiting for a logon

    def on_logon(self, session):
        for mt, body in self.pending.pop(id(session), []):
            self._send(session, mt, body)

    def on_app_message(self, session, msg):
        if msg.msg_type not in self.HANDLED:
            raise UnsupportedMessageType()
        for mt, body in self.venue.handle(msg, owner=session):
            self._send(session, mt, body)

    def deliver(self, owner, mt: bytes, body: list) -> None:
        """An unsolicited report (a fill caused by the market): sent now, or after the session's
        next logon (bounded)."""
        if owner is None:
            self.venue.counts["unsent_fills"] += 1
            return
        if owner.logged_on:
            self._send(owner, mt, body)
            return
        q = self.pending.setdefault(id(owner), [])
        if len(q) < 100_000:
            q.append((mt, body))
        else:
            self.venue.counts["unsent_fills"] += 1

    @staticmethod
    def _send(session, mt: bytes, body: list) -> None:
        body = for_version(session.cfg.begin_string, mt, body)
        if session.dd is not None:
            body = session.dd.order_body(mt, body)
        session.send_app(mt, body)


def fix42_execution_report(body: list) -> list:
    """The FIX 4.2 form of an ExecutionReport body: ExecTransType (20) 0 new / 3 status, a fill as
    ExecType 1 (partial) / 2 (filled) instead of F, a status reply's ExecType = its OrdStatus
    instead of I, no LastLiquidityInd (851, FIX 4.4 only), OrdRejReason (103) within 4.2's 0-8
    (other reasons become 0, broker option)."""
    d = dict(body)
    et = d.get(150)
    trans = b"3" if et == b"I" else b"0"
    out = []
    for t, v in body:
        if t == 851:
            continue
        if t == 150:
            if et == b"F":
                v = b"2" if d.get(39) == b"2" else b"1"
            elif et == b"I":
                v = d.get(39, b"0")
        elif t == 103 and int(v) > 8:
            v = b"0"
        out.append((t, v))
    out.append((20, trans))
    return out


def for_version(begin_string, mt: bytes, body: list) -> list:
    """A FIX 4.4 reply body in the dialect of a session: unchanged for 4.4; for 4.2 the
    ExecutionReport form of :func:`fix42_execution_report` and an OrderCancelReject's CxlRejReason
    (102) within 4.2's 0-3 (other reasons become 2, broker option)."""
    bs = begin_string.decode() if isinstance(begin_string, bytes) else begin_string
    if bs != "FIX.4.2":
        return body
    if mt == b"8":
        return fix42_execution_report(body)
    if mt == b"9":
        return [(t, CXL_BROKER_OPTION_B if t == 102 and int(v) > 3 else v) for t, v in body]
    return body


def session_specs(cfg) -> list:
    """(begin_string, our sender, our target, the session's table) per ``[fix.sessions.NAME]``:
    the exchange is the counterparty, so our sender is the gateway's target and vice versa."""
    out = []
    sessions = (cfg.extra.get("fix", {}) if cfg is not None else {}).get("sessions", {})
    for name, s in sessions.items():
        out.append((s.get("begin_string", "FIX.4.4"), s.get("target_comp_id", "SIMEX"),
                    s.get("sender_comp_id", "APPLIANCE"), s))
    return out


def next_boot(store_dir) -> int:
    """The exchange's start counter, kept in ``<store_dir>/exchange.boot`` (written atomically and
    durably, 0600 in a 0700 directory like the rest of the FIX store)."""
    p = private_dir(store_dir) / "exchange.boot"
    try:
        n = int(p.read_text().strip() or 0)
    except FileNotFoundError:
        n = 0
    except ValueError:
        raise ValueError(f"{p}: not a start counter; remove it to start over") from None
    n += 1
    fsutil.write_atomic(p, f"{n}\n".encode(), mode=FILE_MODE, fsync=True, dir_mode=DIR_MODE)
    return n


class ExchangeServer:
    """The mock exchange on a background thread (tests, benches) or the foreground (CLI).

    ``pairs``: [(begin_string, sender, target)] sessions to accept (the exchange's own view), or
    4-tuples with the session's config table (its ``venue``). ``venue_instruments``: {venue name:
    the venue's [[instruments]] entries (config.instruments.Instrument, id order)} traded on the
    sessions of that venue. ``md_rings``: {venue name: ring name} markets to follow (attached
    once their writer has created them).
    Sessions keep their stores across ``restart()`` (a venue that went away and came back with
    its sequence numbers), so a gateway reconnecting afterwards continues its numbering."""

    def __init__(self, pairs, host: str = "127.0.0.1", port: int = 0, venue: MatchingVenue | None = None,
                 store_dir=None, validate: bool = True, heartbeat_tick: float = 0.01,
                 md_rings: dict | None = None, shm_dir=None, venue_instruments: dict | None = None):
        boot = next_boot(store_dir) if store_dir else None
        self.venue = venue or MatchingVenue(boot=boot)
        if boot is not None:
            self.venue.boot = boot
        self.app = ExchangeApplication(self.venue)
        self.host = host
        self.tick = heartbeat_tick
        self.sessions = []
        venue_instruments = venue_instruments or {}
        for spec in pairs:
            bs, sender, target = spec[:3]
            table = spec[3] if len(spec) > 3 else {}
            cfg = SessionConfig(begin_string=bs, sender_comp_id=sender, target_comp_id=target,
                                initiator=False, validate=validate)
            store = FileStore(f"{store_dir}/{bs}-{sender}-{target}") if store_dir else MemoryStore()
            dd = dictionary_mod.for_version(bs) if validate else None
            s = Session(cfg, store, self.app, dd)
            vname = table.get("venue", "sim")
            vid = R.VENUE_IDS.get(vname, R.VENUE_SIM)
            self.venue.session_venue[self.venue.session_index(s)] = vid
            for ins in venue_instruments.get(vname, []):
                self.venue.add_instrument(ins.symbol, vid, ins.id, ins.tick, ins.lot,
                                          (ins.maker_fee_bps, ins.taker_fee_bps))
            self.sessions.append(s)
        self.md_rings = dict(md_rings or {})
        self.shm_dir = shm_dir
        self.readers: dict[str, object] = {}
        self._md_buf = np.zeros((1024, R.MD_RECORD_SIZE), np.uint8)
        self._next_attach = 0.0
        self._commands: queue.Queue = queue.Queue()
        self._thread = None
        self._stop = threading.Event()
        self.loop = None
        self.port = port
        self._open()

    def _open(self) -> None:
        self.loop = EventLoop(tick=self.tick)
        for s in self.sessions:
            self.loop.add_acceptor_session(s)
        self.port = self.loop.listen(self.host, self.port)

    # ---- commands (thread-safe) -------------------------------------------------------
    def set_reference(self, symbol, price) -> None:
        """Set a reference price; resting orders it crosses are filled (sent within a tick)."""
        self._commands.put((symbol, price))

    def _run_commands(self) -> None:
        while True:
            try:
                sym, px = self._commands.get_nowait()
            except queue.Empty:
                return
            for owner, (mt, body) in self.venue.set_reference(sym, px):
                self.app.deliver(owner, mt, body)

    # ---- the market -----------------------------------------------------------------------
    def _attach(self) -> None:
        from appliance.transport import ring, shm
        now = time.monotonic()
        if now < self._next_attach:
            return
        self._next_attach = now + 0.5
        for vname, name in self.md_rings.items():
            r = self.readers.get(name)
            if r is not None and r.writer_restarted():
                log.warning("%s writer restarted: its books restart from its next snapshot", name)
                r.resync(ring.START_OLDEST)
                for ins in self.venue.by_k.values():
                    if ins.venue == R.VENUE_IDS.get(vname):
                        M.clear_book(self.venue.sim, ins.k)
                        M.set_valid(self.venue.sim, ins.k, False)
            if r is None:
                try:
                    self.readers[name] = ring.RingReader.attach(name, consumer="exchange",
                                                                start=ring.START_OLDEST,
                                                                shm_dir=self.shm_dir)
                    log.info("following the market on %s", name)
                except (shm.ShmError, FileNotFoundError, OSError):
                    continue

    def poll_market(self) -> int:
        if not self.md_rings:
            return 0
        self._attach()
        n = 0
        for r in self.readers.values():
            for owner, (mt, body) in self.venue.poll_market(r, self._md_buf):
                self.app.deliver(owner, mt, body)
                n += 1
        return n

    def serve(self, stop) -> None:
        tick = min(self.tick, 0.002) if self.md_rings else self.tick
        while not stop():
            self.loop.poll(tick)
            self._run_commands()
            self.poll_market()

    def start(self) -> "ExchangeServer":
        self._stop.clear()
        self._thread = threading.Thread(target=self.serve, args=(self._stop.is_set,),
                                        name="mock-exchange", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.loop.close()

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
        self.readers.clear()

    def restart(self) -> None:
        """Drop every connection and listen again on the same port (the venue bounced)."""
        self.stop()
        self._open()
        self.start()


def parse_refs(items) -> dict:
    refs = {}
    for it in items or ():
        sym, sep, px = it.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--ref {it!r}: expected SYMBOL=PRICE")
        try:
            d = Decimal(px)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"--ref {it!r}: {px!r} is not a decimal") from None
        if not d.is_finite() or d <= 0:
            raise argparse.ArgumentTypeError(f"--ref {it!r}: the price must be > 0")
        refs[sym] = d
    return refs


class ExchangeActor(Actor):
    """``appliance fix exchange`` as an actor: the exchange server's event loop in the actor loop
    (heartbeat, status and counters like every other actor). The simulator's kernels are warmed
    before anything listens; the sessions' venues' md rings are attached as they appear."""

    def __init__(self, cfg, args):
        super().__init__(cfg, "exchange", log)
        self.specs = session_specs(cfg) or [("FIX.4.4", getattr(args, "sender", None) or "SIMEX",
                                             getattr(args, "target", None) or "APPLIANCE", {})]
        self.refs = parse_refs(getattr(args, "ref", None))
        self.host = getattr(args, "host", "127.0.0.1")
        self.port = args.port
        self.store = getattr(args, "store", None)
        if self.store is None and not getattr(args, "memory_store", False):
            self.store = os.path.join(cfg.appliance.state_dir, "fix-exchange")
        st = M.settings((cfg.extra.get("sim", {}) or {}).get("exchange"))
        self.settings = M.Settings(**{**st.__dict__, "max_orders": max(st.max_orders, 1 << 17),
                                      "max_live": max(st.max_live, 1 << 14)})
        self.venue_instruments = {v.name: cfg.instruments_of(v.name) for v in cfg.venues
                                  if v.enabled}
        md_venues = {t.get("venue") for _, _, _, t in self.specs if t.get("venue")}
        self.md_rings = {v: f"md.{v}" for v in md_venues if self.venue_instruments.get(v)}
        self.venue = self.srv = None

    def warm(self) -> None:
        M.warm()

    def open(self) -> None:
        self.venue = MatchingVenue(settings=self.settings)
        try:
            self.srv = ExchangeServer(self.specs, self.host, self.port, self.venue,
                                      store_dir=self.store, md_rings=self.md_rings,
                                      shm_dir=self.shm_dir, venue_instruments=self.venue_instruments)
            for sym, px in self.refs.items():
                self.venue.set_reference(sym, px)
        except OSError as e:
            raise ActorError(f"cannot listen on {self.host}:{self.port} or use the store "
                             f"{self.store}: {e.strerror or e}") from None
        except (ValueError, BadOrder) as e:
            raise ActorError(str(e)) from None
        self.log.info("mock exchange listening on %s:%d for %s; market from %s; store %s; boot %d",
                      self.srv.host, self.srv.port,
                      ", ".join(f"{t}->{s} ({b})" for b, s, t, _ in self.specs),
                      ", ".join(self.md_rings.values()) or "reference prices only",
                      self.store or "memory", self.venue.boot)
        print(f"listening {self.srv.host}:{self.srv.port}", flush=True)

    def poll(self) -> None:
        self.srv.loop.poll(0.002 if self.md_rings else self.srv.tick)
        self.srv._run_commands()
        self.srv.poll_market()

    def status(self) -> dict:
        out = {"counters": dict(self.venue.counts) if self.venue else {}}
        if self.venue is not None:
            out["simulator"] = M.counters(self.venue.sim)
            out["md_rings"] = sorted(self.srv.readers) if self.srv else []
        return out

    def counters(self) -> dict:
        if self.venue is None:
            return {}
        return {**self.venue.counts, **{f"sim_{k}": v for k, v in M.counters(self.venue.sim).items()}}

    def close(self) -> None:
        if self.srv is not None:
            self.srv.loop.close()
            self.srv.close()
            self.log.info("mock exchange stopped: %s; simulator %s", self.venue.counts,
                          M.counters(self.venue.sim))


def run_from_args(args) -> int:
    from appliance import config as config_mod
    try:
        cfg = config_mod.load(getattr(args, "config", None))
        actor = ExchangeActor(cfg, args)
    except (config_mod.ConfigError, M.SimConfigError, argparse.ArgumentTypeError, ValueError) as e:
        print(f"appliance fix exchange: {e}", file=sys.stderr)
        return 2
    return actor.run()
