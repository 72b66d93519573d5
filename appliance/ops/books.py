"""Books for ``appliance top``: a consumer (``"top"``) of every ``md.<venue>`` ring.

The engine keeps its books to itself, so the view rebuilds its own from the market-data records,
the way the engine does (:mod:`appliance.engine.kernels`, ``handle_md``): a first F_SNAPSHOT
L2_UPDATE clears the book (it is being rebuilt), L2_UPDATEs change levels
(:func:`appliance.engine.book.update`), BOOK_STATUS INVALID clears it until the next snapshot.
Records are drained in batches (``ring.drain``) and applied by one compiled call per batch
(:func:`apply_batch`), so the view keeps up with a busy ring at a few refreshes a second.

A viewer can join a ring mid-stream or be lapped; it then holds only the levels that changed
since, which is not the venue's book. Each book therefore has a sync state:

    synced     a snapshot was applied since the view joined (or was last lapped), nothing lost
    partial    joined mid-stream, or records were lost to lapping: levels untouched since are
               missing; shown, marked partial, until the next snapshot
    invalid    the md gateway said BOOK_INVALID (reason shown) and no snapshot followed yet

Every BATCH_END carries the gateway's own best bid / ask after the batch: a synced book whose
best prices disagree with them is counted as a mismatch and drops to partial (a check on the
view itself, never silent).
"""
from __future__ import annotations

import os
from decimal import Decimal

import numpy as np
from numba import njit

from appliance.engine import book
from appliance.transport import records, ring, shm

CONSUMER = "top"
CAP = 4096                 # levels kept per side (as the md gateways keep)
BATCH = 4096               # records per drain
MAX_PER_POLL = 1 << 20     # records applied per poll before returning to the UI

# per-book state columns (int64)
S_SNAP = 0        # inside a snapshot (the next non-snapshot record ends it)
S_SYNCED = 1      # 1 once a snapshot was applied since the join / the last loss
S_GW = 2          # the gateway's last word: 0 unknown, BOOK_VALID, BOOK_INVALID
S_REASON = 3      # BR_* of the last BOOK_INVALID
S_UPDATES = 4     # L2 updates applied
S_GW_BID = 5      # best bid / ask of the gateway's last BATCH_END (ticks, 0 = empty)
S_GW_ASK = 6
S_MISMATCH = 7    # BATCH_ENDs whose best prices disagreed with a synced book
S_TRADE_PX = 8    # last public trade
S_TRADE_QTY = 9
S_TRADE_SIDE = 10
S_TRADES = 11
S_DROPPED = 12    # levels not stored (side full) or refused by the book
S_BATCHES = 13
S_COLS = 16

# apply_batch result slots
R_APPLIED = 0
R_UNKNOWN = 1     # records of an instrument this view does not know
R_IGNORED = 2     # record kinds without book state (BBO, ...)

_W_TYPE = records.TYPE_WORD_OFF // 8
_W_PRICE = records.L2_PRICE_OFF // 8
_W_QTY = records.L2_QTY_OFF // 8
_B_SIDE = records.L2_SIDE_OFF
_W_TPRICE = records.TRADE_PRICE_OFF // 8
_W_TQTY = records.TRADE_QTY_OFF // 8
_B_TSIDE = records.TRADE_SIDE_OFF
_W_BE_BID = records.field_offset(records.BATCH_END, "bid_price") // 8
_W_BE_ASK = records.field_offset(records.BATCH_END, "ask_price") // 8
_B_STATUS = records.BOOK_STATUS_STATUS_OFF
_B_REASON = records.field_offset(records.BOOK_STATUS, "reason")
assert records.TYPE_WORD_OFF % 8 == 0 and records.L2_PRICE_OFF % 8 == 0
assert records.L2_QTY_OFF % 8 == 0 and records.TRADE_PRICE_OFF % 8 == 0
assert records.field_offset(records.BATCH_END, "bid_price") % 8 == 0

REASON_NAMES = {records.BR_NONE: "none", records.BR_GAP: "gap", records.BR_CHECKSUM: "checksum",
                records.BR_CROSSED: "crossed", records.BR_STALE: "stale",
                records.BR_DISCONNECT: "disconnect",
                records.BR_SNAPSHOT_PENDING: "snapshot pending",
                records.BR_BAD_FRAME: "bad frame"}


@njit(cache=True, nogil=True)
def apply_batch(rows, n, book_map, px, qty, nlev, st, res):
    """Apply md records ``rows[0:n]`` (uint8[N, 64]) to the books; ``book_map[venue, instr]``
    is the book index (-1 = not shown). Counts go to ``res`` (R_*); returns ``n``."""
    for i in range(n):
        row = rows[i]
        w = row.view(np.int64)
        tw = np.uint64(w[_W_TYPE])
        rt = np.int64(tw & np.uint64(0xFF))
        venue = np.int64((tw >> np.uint64(8)) & np.uint64(0xFF))
        flags = np.int64((tw >> np.uint64(16)) & np.uint64(0xFFFF))
        instr = np.int64(tw >> np.uint64(32))
        if venue >= book_map.shape[0] or instr >= book_map.shape[1]:
            res[R_UNKNOWN] += 1
            continue
        b = book_map[venue, instr]
        if b < 0:
            res[R_UNKNOWN] += 1
            continue
        res[R_APPLIED] += 1
        if rt == records.RT_L2_UPDATE:
            if (flags & records.F_SNAPSHOT) != 0:
                if st[b, S_SNAP] == 0:
                    book.clear(px, qty, nlev, b)
                    st[b, S_SNAP] = 1
                    st[b, S_SYNCED] = 1
            else:
                st[b, S_SNAP] = 0
            side = np.int64(row[_B_SIDE])
            s = 0 if side == records.SIDE_BUY else 1 if side == records.SIDE_SELL else -1
            if s < 0:
                st[b, S_DROPPED] += 1
                continue
            r = book.update(px, qty, nlev, b, s, w[_W_PRICE], w[_W_QTY])
            if r == book.DROPPED_FULL or r == book.BAD_ARG:
                st[b, S_DROPPED] += 1
            st[b, S_UPDATES] += 1
        elif rt == records.RT_BATCH_END:
            st[b, S_SNAP] = 0
            st[b, S_BATCHES] += 1
            bid = w[_W_BE_BID]
            ask = w[_W_BE_ASK]
            st[b, S_GW_BID] = bid
            st[b, S_GW_ASK] = ask
            if st[b, S_SYNCED] == 1:
                mb = px[b, 0, nlev[b, 0] - 1] if nlev[b, 0] > 0 else 0
                ma = px[b, 1, nlev[b, 1] - 1] if nlev[b, 1] > 0 else 0
                if mb != bid or ma != ask:
                    st[b, S_MISMATCH] += 1
                    st[b, S_SYNCED] = 0
        elif rt == records.RT_BOOK_STATUS:
            status = np.int64(row[_B_STATUS])
            st[b, S_GW] = status
            if status == records.BOOK_INVALID:
                st[b, S_REASON] = np.int64(row[_B_REASON]) | (np.int64(row[_B_REASON + 1]) << 8)
                book.clear(px, qty, nlev, b)
                st[b, S_SYNCED] = 0
                st[b, S_SNAP] = 0
        elif rt == records.RT_TRADE:
            st[b, S_TRADE_PX] = w[_W_TPRICE]
            st[b, S_TRADE_QTY] = w[_W_TQTY]
            st[b, S_TRADE_SIDE] = np.int64(row[_B_TSIDE])
            st[b, S_TRADES] += 1
        else:
            res[R_IGNORED] += 1
    return n


def decimal_str(v: int, step: str) -> str:
    """``v`` grid steps as a decimal string with the step's decimals (columns line up)."""
    st = Decimal(step).normalize()
    places = max(0, -st.as_tuple().exponent)
    return f"{Decimal(v) * st:.{places}f}"


class BookWatcher:
    """The view's books: one per configured instrument of every venue with an md ring."""

    def __init__(self, cfg, shm_dir, depth: int = 5, cap: int = CAP):
        self.shm_dir = shm_dir
        self.depth = depth
        self.instruments = list(cfg.instruments)
        nv = max(records.VENUE_IDS.values()) + 1
        ni = max([i.id for i in self.instruments], default=0) + 1
        self.book_map = np.full((nv, ni), -1, np.int64)
        for b, inst in enumerate(self.instruments):
            vid = records.VENUE_IDS.get(inst.venue)
            if vid is not None:
                self.book_map[vid, inst.id] = b
        nb = max(1, len(self.instruments))
        self.px, self.qty, self.nlev = book.new_books(nb, cap)
        self.st = np.zeros((nb, S_COLS), np.int64)
        self.res = np.zeros(4, np.int64)
        self.buf = np.zeros((BATCH, records.MD_RECORD_SIZE), np.uint8)
        self.readers: dict[str, ring.RingReader] = {}
        self.lost: dict[str, int] = {}
        self.problems: dict[str, str] = {}

    def warm(self) -> None:
        """Compile (or load from the cache) the kernels before the view starts."""
        from appliance.ops import warm
        from appliance.transport import warm as transport_warm
        transport_warm.warm()
        warm.warm()

    def _books_of(self, venue: str) -> list[int]:
        return [b for b, i in enumerate(self.instruments) if i.venue == venue]

    def _forget(self, venue: str) -> None:
        for b in self._books_of(venue):
            book.clear(self.px, self.qty, self.nlev, b)
            self.st[b, :] = 0

    def _attach(self, name: str) -> ring.RingReader | None:
        try:
            r = ring.RingReader.attach(name, consumer=CONSUMER, start=ring.START_OLDEST,
                                       shm_dir=self.shm_dir)
        except (shm.ShmError, OSError) as e:
            self.problems[name] = str(e)
            return None
        self.problems.pop(name, None)
        self.readers[name] = r
        self.lost[name] = r.lost
        self._forget(name[3:])
        return r

    def poll(self) -> int:
        """Drain every md ring (attaching to new ones); returns the records applied."""
        total = 0
        try:
            names = [p.name for p in shm.list_regions(self.shm_dir) if p.name.startswith("md.")]
        except (shm.ShmError, OSError):
            names = []
        for name in names:
            r = self.readers.get(name)
            if r is not None and (r.writer_restarted() or _replaced(r)):
                self._drop(name)
                r = None
            if r is None:
                r = self._attach(name)
                if r is None:
                    continue
            got = 0
            while got < MAX_PER_POLL:
                k = int(ring.drain(r.hdr, r.data, r.cur, self.buf, BATCH))
                if k:
                    apply_batch(self.buf, k, self.book_map, self.px, self.qty, self.nlev,
                                self.st, self.res)
                got += k
                if k < BATCH:
                    break
            lost = r.lost
            if lost != self.lost[name]:
                self.lost[name] = lost
                for b in self._books_of(name[3:]):
                    self.st[b, S_SYNCED] = 0       # lapped: levels may be missing
            total += got
        for name in [n for n in self.readers if n not in names]:
            self._drop(name)
        return total

    def _drop(self, name: str) -> None:
        r = self.readers.pop(name, None)
        if r is not None:
            r.close()
        self._forget(name[3:])

    def view(self) -> list[dict]:
        """Per instrument: venue, symbol, state, top levels (decimal strings), last trade."""
        out = []
        opx = np.zeros(self.depth, np.int64)
        oq = np.zeros(self.depth, np.int64)
        for b, inst in enumerate(self.instruments):
            st = self.st[b]
            ring_name = f"md.{inst.venue}"
            sides = []
            for s in (0, 1):
                m = int(book.top(self.px, self.qty, self.nlev, b, s, opx, oq))
                sides.append([(decimal_str(int(opx[k]), inst.tick),
                               decimal_str(int(oq[k]), inst.lot)) for k in range(m)])
            if ring_name not in self.readers:
                state = "no md ring"
            elif st[S_GW] == records.BOOK_INVALID and not st[S_SYNCED]:
                state = f"invalid ({REASON_NAMES.get(int(st[S_REASON]), int(st[S_REASON]))})"
            elif st[S_SYNCED]:
                state = "synced"
            elif st[S_UPDATES] == 0 and st[S_BATCHES] == 0:
                state = "no data"
            else:
                state = "partial"
            trade = None
            if st[S_TRADES]:
                trade = {"price": decimal_str(int(st[S_TRADE_PX]), inst.tick),
                         "qty": decimal_str(int(st[S_TRADE_QTY]), inst.lot),
                         "side": {records.SIDE_BUY: "buy", records.SIDE_SELL: "sell"}.get(
                             int(st[S_TRADE_SIDE]), "?")}
            out.append({"venue": inst.venue, "symbol": inst.symbol, "state": state,
                        "bids": sides[0], "asks": sides[1],
                        "levels": (int(self.nlev[b, 0]), int(self.nlev[b, 1])),
                        "updates": int(st[S_UPDATES]), "mismatches": int(st[S_MISMATCH]),
                        "dropped": int(st[S_DROPPED]), "last_trade": trade,
                        "ring_lost": self.lost.get(ring_name, 0)})
        return out

    def close(self) -> None:
        for name in list(self.readers):
            r = self.readers.pop(name)
            r.close()



def _replaced(r: ring.RingReader) -> bool:
    """True once the ring's file was unlinked or replaced (a new run in the same directory)."""
    try:
        return r.region.path.stat().st_ino != os.fstat(r.region.fd).st_ino
    except OSError:
        return True
