"""Book sync by REST snapshot plus buffered stream updates, shared by every venue that uses it
(Binance, Bitstamp).

The model, as the venues document it: subscribe to the update stream; buffer its updates; fetch
a REST snapshot of the book (it carries the id of the last update it contains); drop buffered
updates the snapshot already contains, apply the rest, then every new one. Per book::

    SYNC_WAIT   no snapshot yet: updates are buffered (Python keeps the bytes: ACT_BUFFER);
                the book is BOOK_INVALID(BR_SNAPSHOT_PENDING)
    SYNC_FIRST  snapshot applied (BOOK_VALID); the buffered updates are replayed; waiting for the
                first update that continues the snapshot
    SYNC_LIVE   every update must continue the previous one

Two rules for "continues", by what the venue's updates carry:

    CHAIN       (Binance) each update has a first and a last id [U, u]; updates with u <= the
                snapshot's lastUpdateId are dropped; the first applied must have
                U <= lastUpdateId + 1 <= u; after that U == previous u + 1. Anything else is a
                gap: BOOK_INVALID(BR_GAP) and a new snapshot.
    MONOTONIC   (Bitstamp) each update has one timestamp; updates not newer than the last
                applied (or the snapshot) are dropped. A lost update cannot be seen: a crossed
                book, a bad frame or a venue request resyncs.

A resync (gap, crossed book, rejected level, bad frame of the book) puts the book back in
SYNC_WAIT and asks for a new snapshot (ACT_SNAPSHOT). More than ``max_buffered`` updates waiting
for one snapshot drops the buffer and asks again (EV_OVERDUE).

Compiled: :func:`on_delta` (one stream update, called from the venue's ``handle_frame``) and
:func:`on_snapshot`. Python: :class:`SnapshotSyncFeed` (snapshot requests, the buffer of frame
bytes, replaying it after a snapshot). The gateway paces refetches per symbol (back-off).
"""
from __future__ import annotations

from numba import njit

from appliance import jit
from appliance.engine import book
from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import (ACT_BUFFER, ACT_SNAPSHOT, B_BUFFERED, B_LAST_ID,
                                     B_LAST_TSC, B_REQ, B_STATUS, B_SYNC, C_BUF_BOOK, C_REPLAY,
                                     EV_GAP, EV_OVERDUE, N_BUFFERED, N_DROPPED, N_GAPS,
                                     N_IGNORED, N_SNAPSHOTS)

SYNC_WAIT = 0
SYNC_FIRST = 1
SYNC_LIVE = 2

CHAIN = 0
MONOTONIC = 1

MAX_BUFFERED = 4096          # updates buffered per book while waiting for a snapshot

# info words the venues' parse_snapshot write
I_SNAP_ID = 14
I_SNAP_ROWS = 15


@njit(**jit.HELPER)
def on_delta(st, b, first, last, n, tsc, sync_rule, hdr, data):
    """One stream update of book b (ids ``first``..``last``; rows[0:n]) under the venue's
    ``sync_rule`` ``(rule, max_buffered, venue)``: CHAIN or MONOTONIC ids, how many updates to
    buffer while the snapshot is awaited, the venue id. Returns ACT_* bits."""
    rule, max_buffered, venue = sync_rule
    st.book[b, B_LAST_TSC] = tsc
    sync = st.book[b, B_SYNC]
    if sync == SYNC_WAIT:
        act = ACT_BUFFER
        if st.book[b, B_BUFFERED] >= max_buffered:
            st.cnt[N_DROPPED] += st.book[b, B_BUFFERED]
            act |= common.event(st, EV_OVERDUE, b, st.book[b, B_BUFFERED], 0)
            st.book[b, B_BUFFERED] = 0
            st.book[b, B_REQ] = 0          # ask again
        st.book[b, B_BUFFERED] += 1
        if st.conn[C_REPLAY] == 0:
            st.cnt[N_BUFFERED] += 1
        st.conn[C_BUF_BOOK] = b
        if st.book[b, B_STATUS] == 0:
            common.invalidate(st, b, records.BR_SNAPSHOT_PENDING, tsc, 0, venue, hdr, data)
        return act
    prev = st.book[b, B_LAST_ID]
    if last <= prev:
        st.cnt[N_DROPPED] += 1             # already in the snapshot, or a duplicate
        return 0
    if rule == CHAIN:
        if (sync == SYNC_FIRST and first > prev + 1) or (sync == SYNC_LIVE and first != prev + 1):
            st.cnt[N_GAPS] += 1
            act = common.event(st, EV_GAP, b, prev + 1, first)
            return act | common.resync(st, b, records.BR_GAP, tsc, venue, common.RESYNC_SNAPSHOT,
                                       hdr, data)
    act = common.apply(st, st.rows, n, tsc, 0, venue, common.RESYNC_SNAPSHOT, hdr, data)
    if st.res[1] & common.A_FAILED:
        return act
    st.book[b, B_LAST_ID] = last
    st.book[b, B_SYNC] = SYNC_LIVE
    common.validate(st, b, tsc, last, venue, hdr, data)
    return act


@njit(cache=True, nogil=True, _nrt=False)
def on_snapshot(st, b, last_id, n, tsc, venue, hdr, data):
    """The REST snapshot of book b (rows[0:n], containing updates up to ``last_id``).
    Returns ACT_* bits; the book is in SYNC_FIRST afterwards unless the snapshot was unusable."""
    if st.book[b, B_SYNC] != SYNC_WAIT:
        st.cnt[N_IGNORED] += 1
        return 0
    st.cnt[N_SNAPSHOTS] += 1
    book.clear(st.px, st.qty, st.nb, b)
    act = common.apply(st, st.rows, n, tsc, records.F_SNAPSHOT, venue, common.RESYNC_SNAPSHOT,
                       hdr, data)
    if st.res[1] & common.A_FAILED:
        st.book[b, B_REQ] = 0              # a crossed or bad snapshot: ask for another
        return act | ACT_SNAPSHOT
    st.book[b, B_LAST_ID] = last_id
    st.book[b, B_SYNC] = SYNC_FIRST
    st.book[b, B_REQ] = 0
    st.book[b, B_BUFFERED] = 0
    st.book[b, B_LAST_TSC] = tsc
    common.validate(st, b, tsc, last_id, venue, hdr, data)
    return act


class SnapshotSyncFeed(common.BaseFeed):
    """A feed whose books sync by REST snapshot + buffered updates. Subclasses set
    ``parse_snapshot`` (compiled: ``(b, end, inst, grids, rows, info) -> rc`` writing
    info[I_SNAP_ID] and info[I_SNAP_ROWS]) and ``snapshot_path(instrument)``."""
    RESYNC = common.RESYNC_SNAPSHOT
    EXTRA_COUNTERS = ("buffered", "snapshots")
    MAX_BUFFERED = MAX_BUFFERED
    parse_snapshot = None
    WARM_SNAPSHOT = b""       # a REST snapshot of the warm-up instrument

    def _warm_sync(self) -> None:
        """Request, buffer one update, apply the snapshot: the sync path's kernels."""
        self.snapshot_requests()
        self.on_frame(self.WARM_FRAMES[0], 1)
        self.on_snapshot(self.instruments[0].symbol, self.WARM_SNAPSHOT, 1)

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        self.buffer: list[list[tuple[bytes, int]]] = [[] for _ in self.instruments]

    def snapshot_path(self, ins: common.Instrument) -> str:
        raise NotImplementedError

    def snapshot_requests(self) -> list[tuple[str, str]]:
        w = self.st.book
        out = []
        for b, ins in enumerate(self.instruments):
            if w[b, B_SYNC] == SYNC_WAIT and not w[b, B_REQ]:
                w[b, B_REQ] = 1
                out.append((ins.symbol, self.snapshot_path(ins)))
        return out

    def on_snapshot(self, symbol: str, body: bytes, recv_tsc: int) -> None:
        b = self.index.get(symbol)
        if b is None or self.st.book[b, B_SYNC] != SYNC_WAIT:
            self.counters.ignored += 1
            return
        n = self.writable(body)
        rc = self.parse_snapshot(self._buf, n, b, self.st.grids, self.st.rows, self.st.info)
        if rc != scan.OK:
            self._bad(body, rc, f"snapshot {symbol}")
            self.st.book[b, B_REQ] = 0         # ask again
            return
        act = on_snapshot(self.st, b, int(self.st.info[I_SNAP_ID]), int(self.st.info[I_SNAP_ROWS]),
                          recv_tsc, self.VENUE_ID, self.hdr, self.data)
        if act:
            self.after(act, None, recv_tsc)
        if self.st.book[b, B_SYNC] != SYNC_FIRST:
            return
        pending, self.buffer[b] = self.buffer[b], []
        self.st.conn[C_REPLAY] = 1
        try:
            for frame, tsc in pending:
                self.on_frame(frame, tsc)
        finally:
            self.st.conn[C_REPLAY] = 0

    def after(self, act: int, frame, tsc: int) -> None:
        super().after(act, frame, tsc)
        if act & ACT_SNAPSHOT:
            w = self.st.book
            for b in range(len(self.instruments)):
                if w[b, B_SYNC] == SYNC_WAIT and w[b, B_BUFFERED] == 0:
                    self.buffer[b] = []
        if act & ACT_BUFFER:
            self.buffer[int(self.st.conn[C_BUF_BOOK])].append((bytes(frame), tsc))

    def _on_log_event(self, kind: int, b: int, a: int, c: int, frame) -> None:
        if kind == EV_OVERDUE:
            self.buffer[b] = []
        super()._on_log_event(kind, b, a, c, frame)

    def on_reconnect(self) -> None:
        super().on_reconnect()
        self.buffer = [[] for _ in self.instruments]
