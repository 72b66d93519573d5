"""The mock exchange: a FIX acceptor application with a tiny matching engine (sim-mode venue).

It runs on the session layer (``appliance.sim.acceptor`` / ``appliance.fix.session``: logon,
heartbeats, sequence numbers, resend, persistence are theirs); this module is only the
application: what the venue answers to each order message. ``MatchingVenue.handle(msg)`` takes
one parsed application message (``wire.Message``) and returns the replies as
``[(msg_type, body_fields)]``; the session layer stamps the header and sends them in order.

Behaviour (FIX 4.4 tags):

- NewOrderSingle (D): duplicate or malformed -> ExecutionReport 150=8 39=8 (103 reason, 58 text).
  Otherwise an ack 150=0 39=0, then, if the order crosses the instrument's reference price (buy
  limit >= ref, sell limit <= ref, market whenever a reference exists), a full fill at the
  reference price, 150=F 39=2, 851=2 (taker). IOC/FOK orders that do not cross are cancelled
  (150=4 39=4) right after the ack. Market orders without a reference price are rejected.
- OrderCancelRequest (F): working order -> 150=4 39=4 (11 = the cancel's id, 41 = the order's);
  unknown/closed -> OrderCancelReject (35=9, 434=1, 102=1 unknown order).
- OrderCancelReplaceRequest (G): working order -> 150=5 39=0 with the new price/qty, the order now
  known by the new ClOrdID; it fills at once if the new price crosses. Unknown -> 35=9 434=2.
- OrderMassCancelRequest (q): every working order (530=7) or of the symbol (530=1) is cancelled
  (one 150=4 each), then an OrderMassCancelReport (35=r, 531 = the request type, 533 = count).
- OrderStatusRequest (H): 150=I with the order's current 39/151/14; unknown -> 150=I 39=8 and
  58 "unknown order".
- OrderMassStatusRequest (AF): one 150=I per working order of the requesting session (584 = the
  request's id, 911 their number, 912=Y on the last); nothing when none is working.
- Reference prices: ``set_reference(symbol, price)`` (tests, the bench, or ``--ref SYMBOL=PRICE``
  on the command line); a new reference fills every resting order it crosses (150=F, 851=1,
  maker), returned from ``set_reference`` for the caller to send.

Prices and quantities are ``decimal.Decimal`` from the wire text, never floats; replies render
them back with ``format(d, "f")``.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import queue
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from appliance.actor import Actor, ActorError
from appliance.fix import dictionary as dictionary_mod
from appliance.fix.session import Application, Session, SessionConfig, UnsupportedMessageType
from appliance.fix.store import FileStore, MemoryStore
from appliance.fix.transport import EventLoop
from appliance.fix.wire import Message

log = logging.getLogger(__name__)

# OrdRejReason (103)
REJ_UNKNOWN_SYMBOL = 1
REJ_ORDER_EXCEEDS_LIMIT = 3
REJ_DUPLICATE = 6
REJ_OTHER = 99
# CxlRejReason (102)
CXL_UNKNOWN_ORDER = 1
CXL_DUPLICATE_CLORDID = 6

WORKING = (b"0", b"1")  # New, PartiallyFilled (39=5 marks the closed old id of a replace)


class BadOrder(ValueError):
    """An order message that cannot be accepted; carries the OrdRejReason."""

    def __init__(self, text: str, reason: int = REJ_OTHER):
        super().__init__(text)
        self.reason = reason


@dataclass
class Order:
    order_id: str
    clord_id: bytes
    symbol: bytes
    side: bytes
    ord_type: bytes
    tif: bytes
    qty: Decimal
    price: Decimal | None
    cum_qty: Decimal = Decimal(0)
    status: bytes = b"0"
    avg_px: Decimal = Decimal(0)
    owner: object = None       # the session the order came in on (for unsolicited fills)

    @property
    def leaves(self) -> Decimal:
        return Decimal(0) if self.status not in WORKING else self.qty - self.cum_qty

    @property
    def working(self) -> bool:
        return self.status in WORKING


def fmt(d: Decimal | None) -> bytes:
    return format(d if d is not None else Decimal(0), "f").encode()


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


class MatchingVenue:
    """Order state and replies of the mock exchange (one instance serves every session)."""

    def __init__(self, symbols=None, references: dict | None = None, fee_rate: Decimal = Decimal(0)):
        self.symbols = {s.encode() if isinstance(s, str) else s for s in symbols} if symbols else None
        self.refs: dict[bytes, Decimal] = {}
        for s, p in (references or {}).items():
            self.refs[s.encode() if isinstance(s, str) else s] = Decimal(str(p))
        self.fee_rate = Decimal(fee_rate)
        self.orders: dict[bytes, Order] = {}       # by current ClOrdID
        self.seen_clord: set[bytes] = set()
        self._oid = itertools.count(1)
        self._eid = itertools.count(1)
        self.counts = {"orders": 0, "cancels": 0, "replaces": 0, "fills": 0, "rejects": 0,
                       "status": 0, "mass_cancels": 0, "mass_status": 0}

    # ---- replies ----------------------------------------------------------------------------
    def _er(self, o: Order, exec_type: bytes, clord: bytes | None = None, orig: bytes | None = None,
            last_px: Decimal | None = None, last_qty: Decimal | None = None, liq: int = 0,
            text: str | None = None, reason: int | None = None) -> tuple:
        body = [(37, o.order_id.encode()), (11, clord or o.clord_id)]
        if orig is not None:
            body.append((41, orig))
        body += [(17, b"X%d" % next(self._eid)), (150, exec_type), (39, o.status), (55, o.symbol),
                 (54, o.side), (38, fmt(o.qty)), (40, o.ord_type)]
        if o.price is not None:
            body.append((44, fmt(o.price)))
        if o.tif:
            body.append((59, o.tif))
        if last_qty is not None:
            body += [(32, fmt(last_qty)), (31, fmt(last_px))]
            if self.fee_rate:
                body.append((12, fmt((last_qty * last_px * self.fee_rate).quantize(Decimal("0.00000001")))))
        if reason is not None:
            body.append((103, str(reason).encode()))
        body += [(151, fmt(o.leaves)), (14, fmt(o.cum_qty)), (6, fmt(o.avg_px))]
        if text:
            body.append((58, text.encode()))
        if liq:
            body.append((851, str(liq).encode()))
        return (b"8", body)

    def _cancel_reject(self, clord: bytes, orig: bytes, response_to: int, status: bytes,
                       order_id: str = "NONE", text: str = "unknown order") -> tuple:
        return (b"9", [(37, order_id.encode()), (11, clord), (41, orig), (39, status),
                       (434, str(response_to).encode()), (102, str(CXL_UNKNOWN_ORDER).encode()),
                       (58, text.encode())])

    def _crosses(self, o: Order) -> Decimal | None:
        ref = self.refs.get(o.symbol)
        if ref is None or not o.working:
            return None
        if o.ord_type == b"1":
            return ref
        if o.side == b"1" and o.price >= ref:
            return ref
        if o.side in (b"2", b"5") and o.price <= ref:
            return ref
        return None

    def _fill(self, o: Order, px: Decimal, liq: int) -> tuple:
        qty = o.qty - o.cum_qty
        o.avg_px = ((o.avg_px * o.cum_qty) + px * qty) / o.qty if o.qty else px
        o.cum_qty = o.qty
        o.status = b"2"
        self.counts["fills"] += 1
        return self._er(o, b"F", last_px=px, last_qty=qty, liq=liq)

    # ---- inbound ----------------------------------------------------------------------------
    def handle(self, msg: Message, owner=None) -> list:
        """Replies to one order message; ``owner`` (the session it came in on) is remembered with
        new orders so later unsolicited fills go back on it."""
        t = msg.msg_type
        try:
            if t == b"D":
                return self._new_order(msg, owner)
            if t == b"F":
                return self._cancel(msg)
            if t == b"G":
                return self._replace(msg)
            if t == b"q":
                return self._mass_cancel(msg)
            if t == b"H":
                return self._status(msg)
            if t == b"AF":
                return self._mass_status(msg, owner)
        except BadOrder as e:
            self.counts["rejects"] += 1
            log.info("rejecting %s: %s", t.decode(errors="replace"), e)
            clord = msg.get(11, b"NONE")
            if t in (b"F", b"G"):
                return [self._cancel_reject(clord, msg.get(41, b"NONE"), 1 if t == b"F" else 2,
                                            b"8", text=str(e))]
            o = Order("NONE", clord, msg.get(55, b"?"), msg.get(54, b"1"), msg.get(40, b"2"),
                      msg.get(59, b""), Decimal(0), None, status=b"8")
            return [self._er(o, b"8", text=str(e), reason=e.reason)]
        return []   # other application messages: the session layer rejects unsupported types

    def _parse_order(self, msg: Message, order_id: str) -> Order:
        clord = msg.get(11)
        if not clord:
            raise BadOrder("ClOrdID (11) missing")
        sym = msg.get(55)
        if not sym:
            raise BadOrder("Symbol (55) missing", REJ_UNKNOWN_SYMBOL)
        if self.symbols is not None and sym not in self.symbols:
            raise BadOrder(f"unknown symbol {sym.decode(errors='replace')}", REJ_UNKNOWN_SYMBOL)
        side = msg.get(54)
        if side not in (b"1", b"2", b"5"):
            raise BadOrder(f"bad side {side!r}")
        ord_type = msg.get(40, b"2")
        if ord_type not in (b"1", b"2"):
            raise BadOrder(f"unsupported OrdType {ord_type!r}")
        qty = _decimal(msg, 38, "OrderQty")
        if qty <= 0:
            raise BadOrder("OrderQty must be positive", REJ_ORDER_EXCEEDS_LIMIT)
        price = _decimal(msg, 44, "Price", required=ord_type == b"2")
        return Order(order_id, clord, sym, side, ord_type, msg.get(59, b"0"), qty, price)

    def _new_order(self, msg: Message, owner=None) -> list:
        self.counts["orders"] += 1
        clord = msg.get(11)
        if clord in self.seen_clord:
            raise BadOrder(f"duplicate ClOrdID {clord.decode(errors='replace')}", REJ_DUPLICATE)
        o = self._parse_order(msg, "O%d" % next(self._oid))
        if o.ord_type == b"1" and o.symbol not in self.refs:
            raise BadOrder("no market for a market order", REJ_OTHER)
        self.seen_clord.add(clord)
        o.owner = owner
        self.orders[clord] = o
        out = [self._er(o, b"0")]
        px = self._crosses(o)
        if px is not None:
            out.append(self._fill(o, px, 2))
        elif o.tif in (b"3", b"4"):
            o.status = b"4"
            out.append(self._er(o, b"4"))
        return out

    def _cancel(self, msg: Message) -> list:
        self.counts["cancels"] += 1
        clord, orig = msg.get(11, b""), msg.get(41, b"")
        o = self.orders.get(orig)
        if not clord or o is None or not o.working:
            status = o.status if o is not None else b"8"
            return [self._cancel_reject(clord or b"NONE", orig or b"NONE", 1, status,
                                        o.order_id if o else "NONE",
                                        "order not working" if o else "unknown order")]
        o.status = b"4"
        self.seen_clord.add(clord)
        return [self._er(o, b"4", clord=clord, orig=orig)]

    def _replace(self, msg: Message) -> list:
        self.counts["replaces"] += 1
        clord, orig = msg.get(11, b""), msg.get(41, b"")
        o = self.orders.get(orig)
        if not clord or o is None or not o.working or clord in self.seen_clord:
            status = o.status if o is not None else b"8"
            return [self._cancel_reject(clord or b"NONE", orig or b"NONE", 2, status,
                                        o.order_id if o else "NONE",
                                        "order not working" if o else "unknown order")]
        new = self._parse_order(msg, o.order_id)
        if new.qty <= o.cum_qty:
            return [self._cancel_reject(clord, orig, 2, o.status, o.order_id, "qty below filled")]
        new.cum_qty, new.avg_px, new.owner = o.cum_qty, o.avg_px, o.owner
        new.status = b"0" if new.cum_qty == 0 else b"1"
        o.status = b"5"        # the old id is closed (replaced)
        self.seen_clord.add(clord)
        self.orders[clord] = new
        self.orders[orig] = o
        out = [self._er(new, b"5", clord=clord, orig=orig)]
        px = self._crosses(new)
        if px is not None:
            out.append(self._fill(new, px, 2))
        return out

    def _mass_cancel(self, msg: Message) -> list:
        self.counts["mass_cancels"] += 1
        kind = msg.get(530, b"7")
        sym = msg.get(55)
        out = []
        n = 0
        for o in self.orders.values():
            if o.working and (kind == b"7" or (kind == b"1" and o.symbol == sym)):
                o.status = b"4"
                out.append(self._er(o, b"4"))
                n += 1
        report = [(11, msg.get(11, b"NONE")), (37, b"MC%d" % next(self._oid)), (530, kind),
                  (531, kind if kind in (b"1", b"7") else b"0"), (533, str(n).encode())]
        if kind == b"1" and sym:
            report.append((55, sym))
        out.append((b"r", report))
        return out

    def _status(self, msg: Message) -> list:
        self.counts["status"] += 1
        clord = msg.get(11, b"")
        o = self.orders.get(clord)
        if o is None:
            u = Order("NONE", clord or b"NONE", msg.get(55, b"?"), msg.get(54, b"1"), b"2", b"",
                      Decimal(0), None, status=b"8")
            return [self._er(u, b"I", text="unknown order")]
        return [self._er(o, b"I")]

    def _mass_status(self, msg: Message, owner=None) -> list:
        """OrderMassStatusRequest (AF): one 150=I report (584 = the request's id) per working
        order of the requesting session (585=7 all, 1 by Symbol)."""
        self.counts["mass_status"] += 1
        req, kind, sym = msg.get(584, b"NONE"), msg.get(585, b"7"), msg.get(55)
        mine = [o for k, o in self.orders.items() if k == o.clord_id and o.working and o.owner is owner
                and (kind != b"1" or o.symbol == sym)]
        out = []
        for i, o in enumerate(mine, 1):
            mt, body = self._er(o, b"I")
            body += [(584, req), (911, str(len(mine)).encode())] + ([(912, b"Y")] if i == len(mine) else [])
            out.append((mt, body))
        return out

    def set_reference(self, symbol, price) -> list:
        """New reference price; returns ``[(owner, (msg_type, body))]``: the fills (150=F, maker)
        of the resting orders it crosses, with the session each order came in on."""
        sym = symbol.encode() if isinstance(symbol, str) else symbol
        self.refs[sym] = Decimal(str(price))
        out = []
        for o in self.orders.values():
            if o.symbol == sym and o.working:
                px = self._crosses(o)
                if px is not None:
                    out.append((o.owner, self._fill(o, px, 1)))
        return out


def parse_refs(items) -> dict:
    refs = {}
    for it in items or ():
        sym, sep, px = it.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--ref {it!r}: expected SYMBOL=PRICE")
        try:
            refs[sym] = Decimal(px)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"--ref {it!r}: {px!r} is not a decimal") from None
    return refs


# ------------------------------------------------------------------------------------------------
# the acceptor process
# ------------------------------------------------------------------------------------------------
class ExchangeApplication(Application):
    """Session-layer application: every order message goes to the MatchingVenue."""

    HANDLED = (b"D", b"F", b"G", b"q", b"H", b"AF")

    def __init__(self, venue: MatchingVenue):
        self.venue = venue

    def on_app_message(self, session, msg):
        if msg.msg_type not in self.HANDLED:
            raise UnsupportedMessageType()
        for mt, body in self.venue.handle(msg, owner=session):
            self._send(session, mt, body)

    @staticmethod
    def _send(session, mt: bytes, body: list) -> None:
        if mt == b"8" and session.bs == b"FIX.4.2":
            body = fix42_execution_report(body)
        if session.dd is not None:
            body = session.dd.order_body(mt, body)
        session.send_app(mt, body)


def fix42_execution_report(body: list) -> list:
    """The FIX 4.2 form of an ExecutionReport body: ExecTransType (20) 0 new / 3 status, a fill as
    ExecType 1 (partial) / 2 (filled) instead of F, a status reply's ExecType = its OrdStatus
    instead of I, no LastLiquidityInd (851, FIX 4.4 only)."""
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
        out.append((t, v))
    out.append((20, trans))
    return out


def session_pairs(cfg) -> list:
    """(begin_string, our sender, our target) for every ``[fix.sessions.NAME]`` of the config:
    the exchange is the counterparty, so the gateway's target is our sender."""
    out = []
    sessions = (cfg.extra.get("fix", {}) if cfg is not None else {}).get("sessions", {})
    for name, s in sessions.items():
        out.append((s.get("begin_string", "FIX.4.4"), s.get("target_comp_id", "SIMEX"),
                    s.get("sender_comp_id", "APPLIANCE")))
    return out


class ExchangeServer:
    """The mock exchange on a background thread (tests, benches) or the foreground (CLI).

    ``pairs``: [(begin_string, sender, target)] sessions to accept (the exchange's own view).
    Sessions keep their stores across ``restart()`` (a venue that went away and came back with
    its sequence numbers), so a gateway reconnecting afterwards continues its numbering."""

    def __init__(self, pairs, host: str = "127.0.0.1", port: int = 0, venue: MatchingVenue | None = None,
                 store_dir=None, validate: bool = True, heartbeat_tick: float = 0.01):
        self.venue = venue or MatchingVenue()
        self.app = ExchangeApplication(self.venue)
        self.host = host
        self.tick = heartbeat_tick
        self.sessions = []
        for bs, sender, target in pairs:
            cfg = SessionConfig(begin_string=bs, sender_comp_id=sender, target_comp_id=target,
                                initiator=False, validate=validate)
            store = FileStore(f"{store_dir}/{bs}-{sender}-{target}") if store_dir else MemoryStore()
            dd = dictionary_mod.for_version(bs) if validate else None
            self.sessions.append(Session(cfg, store, self.app, dd))
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
                if owner is not None and owner.logged_on:
                    self.app._send(owner, mt, body)
                else:
                    log.warning("fill of an order whose session is not logged on was not sent")

    def serve(self, stop) -> None:
        while not stop():
            self.loop.poll(self.tick)
            self._run_commands()

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

    def restart(self) -> None:
        """Drop every connection and listen again on the same port (the venue bounced)."""
        self.stop()
        self._open()
        self.start()


class ExchangeActor(Actor):
    """``appliance fix exchange`` as an actor: the exchange server's event loop in the actor
    loop (heartbeat, status and counters like every other actor)."""

    def __init__(self, cfg, args):
        super().__init__(cfg, "exchange", log)
        self.pairs = session_pairs(cfg) or [("FIX.4.4", getattr(args, "sender", None) or "SIMEX",
                                             getattr(args, "target", None) or "APPLIANCE")]
        self.refs = parse_refs(getattr(args, "ref", None))
        self.host = getattr(args, "host", "127.0.0.1")
        self.port = args.port
        self.store = getattr(args, "store", None)
        self.venue = self.srv = None

    def open(self) -> None:
        self.venue = MatchingVenue(references=self.refs)
        try:
            self.srv = ExchangeServer(self.pairs, self.host, self.port, self.venue,
                                      store_dir=self.store)
        except OSError as e:
            raise ActorError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.log.info("mock exchange listening on %s:%d for %s", self.srv.host, self.srv.port,
                      ", ".join(f"{t}->{s} ({b})" for b, s, t in self.pairs))
        print(f"listening {self.srv.host}:{self.srv.port}", flush=True)

    def poll(self) -> None:
        self.srv.loop.poll(self.srv.tick)
        self.srv._run_commands()

    def status(self) -> dict:
        return {"counters": dict(self.venue.counts) if self.venue else {}}

    def counters(self) -> dict:
        return dict(self.venue.counts) if self.venue else {}

    def close(self) -> None:
        if self.srv is not None:
            self.srv.loop.close()
            self.log.info("mock exchange stopped: %s", self.venue.counts)


def run_from_args(args) -> int:
    from appliance import config as config_mod
    try:
        cfg = config_mod.load(getattr(args, "config", None))
        actor = ExchangeActor(cfg, args)
    except (config_mod.ConfigError, argparse.ArgumentTypeError, ValueError) as e:
        print(f"appliance fix exchange: {e}", file=sys.stderr)
        return 2
    return actor.run()
