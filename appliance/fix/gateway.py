"""FIX order gateway actor: ``appliance fix gateway --session NAME``.

Data path (one process per venue session)::

    [order ring] --gw_step (numba: poll, validate, encode, track open orders)--> send buffer
        --Python: one non-blocking send per batch (TCP_NODELAY)--> venue
    venue --Python: busy-polled non-blocking recv_into--> receive buffer
        --gw_receive (numba: frame, checksum, parse ER/OCR, publish, track)--> [exec ring]

The session layer (``appliance.fix.session.Session``) owns logon, heartbeats, test requests,
sequence-number checks, resend and persistence. The compiled path takes over only what is
routine: it encodes orders with sequence numbers the session allocated (the store's
``next_sender`` is persisted before the batch leaves the process) and parses in-sequence
ExecutionReports / OrderCancelRejects (advancing the store's ``next_target``). Everything else -
admin messages, a sequence gap, a resend in progress, anything before logon - goes to the session
as bytes (``Session.on_bytes``), and application messages it then hands back
(``on_app_message``) are decoded by the same compiled decoder. Orders are never resent: a
ResendRequest covering them is answered with SequenceReset-GapFill (stale orders must not reach a
venue); the engine learns the truth from reconciliation instead.

Session state on the exec ring (records.SESSION, ``state``):

- SESSION_UP once logged on; SESSION_DOWN when the connection drops: every order sent on this
  session is now in an unknown state;
- after a (re)logon with orders still working, one OrderStatusRequest (35=H) per working order;
  the ExecutionReports (150=I; FIX 4.2: 20=3) come back as ACK records with exec_type I, and when
  every one has answered SESSION_RECONCILED is published and new orders flow again. With nothing
  working, RECONCILED follows UP at once. Status requests are repeated every
  ``reconcile_timeout_s`` until answered (a venue Reject of one counts as its answer). In FIX 4.4
  (``mass_status``) an OrderMassStatusRequest (35=AF, all orders) goes out first: a working order
  it reports that is not in the open-order table (nobody here knows it) is cancelled at once
  (gateway-assigned ClOrdID); a venue that refuses AF is asked order by order from then on;
- an RT_RECONCILE record for this session starts the same sequence on the live session
  (SESSION_UP, status requests and mass status, SESSION_RECONCILED), and the SESSION records
  of that sequence carry the request's ClOrdID in ``reconcile_id``. Its ``reason``:
  RECONCILE_ENGINE_RESTART (the engine restarted and lost its working orders): once every
  status is in, every working order of the session is cancelled (one OrderMassCancelRequest in
  FIX 4.4, whose OrderMassCancelReport is awaited, else one OrderCancelRequest per order; the
  unknown ones the mass status reported are tracked until their cancel is confirmed), every
  report (fills in flight included) goes on the exec ring, and SESSION_RECONCILED is published
  only once nothing of the session is working. Not confirmed within ``reconcile_timeout_s``: a
  REJECT (RJ_GW_UNCONFIRMED, is_cancel_reject) per order still working, an error line, status
  requests and cancels again, the session stays not ready. The request is kept in the
  open-order file until answered (a gateway restarted meanwhile, or a session that was down,
  finishes it after the next logon); the same request published again after it was answered is
  answered again without a new cycle. RECONCILE_CONFIRM (or 0): statuses only, orders stay.

Restarts. The open-order table (ClOrdID, instrument, side, qty) lives in a mapped file in the
store directory (``open_orders``, see ``OpenOrderFile``), written in place by the compiled
steps, so after a kill -9 the restarted gateway knows every order it had sent and reconciles
them as above before anything new goes out. The file also keeps the order ring's identity and
the position after the last batch handed to the kernel: a restart resumes the ring there, so
records the engine published while the gateway was down are answered (refused, or skipped when
their ClOrdID shows they were sent before the crash), never silently passed over. Records lost to
ring lapping while down cannot be answered; their number is logged as an error.

Orders that cannot be sent become REJECT records on the exec ring with one of the RJ_* reasons
below (never silently dropped), and each batch of refusals is logged (at most once a second, with
the count, the last ClOrdID and the reason): session not ready (down or reconciling), kill switch
set, too many open orders, ClOrdID 0, or an encoder refusal (RJ_ENCODE_BASE - E_* code, e.g.
unknown instrument). A session Reject (35=3) or BusinessMessageReject (35=j) of one of our
messages becomes a REJECT record too (RJ_SESSION_REJECT / RJ_BUSINESS_REJECT, the venue's Text in
``text``; the MsgSeqNum it names is mapped back to the order by a table of the last SENT_CAP
messages sent). Orders on the ring for another session index are skipped (another gateway serves
them).

Kill switch (tier 3 without the engine): while the control block's kill flag is set, the
compiled step lets no NEW_ORDER or REPLACE out (RJ_KILLED); cancels pass. On a new kill epoch the
gateway cancels every working order it knows: one OrderMassCancelRequest (FIX 4.4, unless
``mass_cancel_on_kill = false``) or one OrderCancelRequest per order (FIX 4.2 has no mass
cancel), with gateway-assigned ClOrdIDs (GW_ID_BIT set; the engine finds the order by
OrigClOrdID); orders still working after ``reconcile_timeout_s`` are cancelled one by one. It
acknowledges in the control block: in its GW_KILL line (records.GW_KILL, same index as its actor
line) ``seen_epoch`` at once and ``sent_epoch`` when its cancels went out; when no order of its
own is working any more, its actor line's ``kill_ack_epoch`` (``control.actor_ack_kill``) and
``done_time_ns``; ``working`` is what it still knows. A session that is down sends its cancels
after the next logon.

FIX 4.2 dialect: NewOrderSingle and OrderCancelReplaceRequest carry HandlInst (21=1); a
MASS_CANCEL record goes out as one OrderCancelRequest per matching working order; fills arrive as
ExecType 1/2 with ExecTransType 0 and status replies as ExecTransType 3 (codec docstring).

Telemetry (the actor's region, ``HOPS``): order_to_wire (order record published on the ring ->
its batch's ``send`` returned), wire_to_ack (send returned -> the first answer's bytes received),
tick_to_trade (the order's origin TSC, the market event behind it -> send returned), one sample
per order, recorded by the compiled steps.

ACKs (plain TCP, ``ack_reads``): the venue's messages are ACKed as soon as they are read
(``Gateway.ack_reads``; in the one-process loop once it is idle after ``gw_rx``), not carried on
the next order's segment, where the venue's stack would process the ACK (free the acked
messages, rearm its retransmit timer) before it queues the order's bytes. In the one-process
bench the order's send() went from 5.1-5.4 us to 4.2-4.5 us (mean) and send -> the venue's
recv() returned from 5.7-5.9 us to 3.8-4.5 us.

Logon: ``credentials_file`` gives Username/Password; ``logon_signature`` signs the Logon
(``admin.logon_hook``: HMAC-SHA256 or Ed25519 over SendingTime, MsgType, MsgSeqNum, CompIDs and
the password, in RawData) with the key in ``signing_key_file``. Every such file must be 0600;
secrets are never logged (``wire.redact``). ``[fix.sessions.NAME.tls]`` turns on FIX over TLS
(``appliance.fix.tls``: QuickFIX setting names, verification on by default).

Configuration: ``[fix.sessions.NAME]`` in the appliance TOML (``cfg.extra["fix"]``)::

    host = "127.0.0.1"              # venue FIX endpoint (required)
    port = 9878                     # (required)
    sender_comp_id = "APPLIANCE"    # (required)
    target_comp_id = "SIMEX"        # (required)
    begin_string = "FIX.4.4"        # FIX.4.2 | FIX.4.4
    heartbeat_s = 30
    store_dir = ""                  # "" = <appliance.state_dir>/fix/NAME (seqnums, message log)
    credentials_file = ""           # TOML with username/password (553/554), mode 0600 or stricter
    order_ring = "orders"           # ring the engine publishes orders on
    exec_ring = "exec.NAME"         # ring this gateway publishes exec records on (it owns it)
    session_index = 0               # orders whose record.session equals this go out here
    venue = "sim"                   # records.VENUE_IDS name stamped on exec records
    instruments = [{ symbol = "BTCUSDT", tick_size = "0.01", lot_size = "0.00001" }]
                                    # instrument id = position; sizes as decimal strings
    reconnect_min_ms = 100          # reconnect back-off (doubles up to max)
    reconnect_max_ms = 5000
    reconcile_timeout_s = 5.0
    max_batch = 64                  # orders encoded per send
    open_orders = 4096              # capacity of the open-order table (power of two; it holds
                                    # 3/4 of that: 3072 working orders). 4096 rows of 6 int64
                                    # are 192 KiB, small enough to stay in L2, so the probes of
                                    # an insert or lookup hit cached lines; a table many times
                                    # larger would miss cache and TLB on most probes
    reset_on_logon = false          # ask the venue to reset sequence numbers at each logon
    validate = false                # validate inbound messages against the data dictionary
    logon_signature = ""            # "" | "hmac-sha256" | "ed25519" (RawData 95/96)
    signing_key_file = ""           # its key (0600): HMAC key in base64, Ed25519 PEM or base64 seed
    mass_cancel_on_kill = true      # FIX 4.4: one OrderMassCancelRequest on a kill
    mass_status = true              # FIX 4.4: OrderMassStatusRequest when reconciling
    ack_reads = true                # plain TCP: ACK what the venue sent once it is read (off
                                    # the order path), rather than on the next order's segment
                                    # (module docstring: ACKs)
    [fix.sessions.NAME.tls]         # FIX over TLS (appliance.fix.tls), e.g.
    CertificationAuthoritiesFile = "/etc/appliance/venue-ca.pem"
    SSLServerName = "fix.venue.example"
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import mmap
import os
import socket
import sys
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from appliance import jit
from appliance.actor import Actor, ActorError
from appliance.jit.bound import Bound
from appliance.fix import codec as C
from appliance.transport import clock, control, hist, ring, shm, wait
from appliance.transport import records as R
from appliance.transport import prefetch
from appliance.transport.intrinsics import (EAGAIN, EINTR, move_bytes, rdtsc, sys_errno, sys_recv,
                                            sys_send)

log = logging.getLogger(__name__)

try:
    import ssl as _ssl
    _SSLWant = (_ssl.SSLWantReadError, _ssl.SSLWantWriteError)
except ImportError:                                 # pragma: no cover - Python without OpenSSL
    _SSLWant = ()
_WOULD_BLOCK = (BlockingIOError, InterruptedError) + _SSLWant

# ---- our own reject reasons (REJECT.reason; venue codes are < 1000) ----------------------------
RJ_NOT_READY = R.RJ_GW_NOT_READY          # session down or reconciling: the order was not sent
RJ_TOO_MANY_OPEN = R.RJ_GW_TOO_MANY_OPEN  # open-order table full
RJ_BAD_CLORD = R.RJ_GW_BAD_CLORD          # ClOrdID 0 (reserved)
RJ_KILLED = R.RJ_GW_KILLED                # kill switch set: no new order or replace passes
RJ_SESSION_REJECT = R.RJ_GW_SESSION_REJECT    # the venue's session Reject (35=3) of the message
RJ_BUSINESS_REJECT = R.RJ_GW_BUSINESS_REJECT  # the venue's BusinessMessageReject (35=j)
RJ_ENCODE_BASE = R.RJ_GW_ENCODE_BASE      # RJ_ENCODE_BASE - codec.E_* (1011 out of buffer ... 1019 bad price)
RJ_NAMES = {RJ_NOT_READY: "session not ready", RJ_TOO_MANY_OPEN: "too many open orders",
            RJ_BAD_CLORD: "ClOrdID 0 is reserved", RJ_KILLED: "kill switch set",
            RJ_SESSION_REJECT: "session Reject from the venue",
            RJ_BUSINESS_REJECT: "BusinessMessageReject from the venue"}
RJ_NAMES.update({RJ_ENCODE_BASE - e: f"not encodable: {t}" for e, t in C.E_NAMES.items()})

# ---- gateway state words (int64) -----------------------------------------------------------------
G_NEXT_SEQ = 0        # next outgoing MsgSeqNum (loaded from / saved to the store per batch)
G_SEND_LEN = 1        # bytes encoded into the send buffer by the last gw_step
G_READY = 2           # 1 = orders may flow (logged on and reconciled)
G_SESSION_IDX = 3
G_VENUE = 4
G_SENT = 5            # orders encoded, total
G_REFUSED = 6         # orders turned into RJ_* rejects, total
G_OPEN = 7            # open orders in the table
G_STATUS_PENDING = 8  # status requests not yet answered
G_EXECS = 9           # exec records published, total
G_FOREIGN = 10        # order records for other sessions, skipped
G_IDLE_POLLS = 11     # gw_step calls that found no record (stale hint, lap resync)
G_LAST_REFUSED = 12   # ClOrdID of the last refused order
G_LAST_REASON = 13    # its RJ_* reason
G_MASS_PENDING = 14   # FIX 4.2: a MASS_CANCEL record is waiting to be expanded (1 + scope)
G_MASS_INSTR = 15     # its instrument
G_KILLED = 16         # orders refused because the kill switch is set, total
G_RECONCILE_REQ = 17  # an RT_RECONCILE record for this session arrived (the engine restarted)
G_UNKNOWN_N = 18      # rows filled in the unknown-working-orders table (status reports of
                      # orders this gateway does not know: a mass status reply)
G_RECONCILE_ID = 19   # the RT_RECONCILE record's clord_id (echoed in the SESSION records)
G_RECONCILE_WHY = 20  # its reason (records.RECONCILE_*)
G_SIZE = 32
UNKNOWN_CAP = 256
_WORKING = (ord("0"), ord("1"), ord("A"), ord("E"))   # 39 values of an order still working

# open-order table columns (int64); key = ClOrdID bits, 0 = empty slot; OT_SENT = TSC when the
# order's bytes went to the kernel, cleared by its first answer (wire_to_ack)
OT_KEY, OT_INSTR, OT_SIDE, OT_PENDING, OT_QTY, OT_SENT = range(6)
OT_COLS = 6

# telemetry (appliance.transport.telemetry hop names of a FIX gateway), rows of ``hists``
HOPS = ("order_to_wire", "wire_to_ack", "tick_to_trade")
HOP_O2W, HOP_W2A, HOP_T2T = range(3)
BT_PUBLISH, BT_ORIGIN, BT_CLORD = range(3)       # per order of the batch being sent

# sent-message map (by MsgSeqNum & (SENT_CAP - 1)): what a venue's session Reject refers to
SENT_CAP = 4096
SM_SEQ, SM_RT, SM_CLORD, SM_ORIG, SM_INSTR = range(5)
SM_COLS = 5

# gateway-assigned ClOrdIDs (cancels it sends itself on a kill or a FIX 4.2 mass cancel): the top
# bit set, so they never meet the engine's ids (milliseconds << 20, below 2**61)
GW_ID_BIT = 1 << 63

_TERMINAL = (ord("2"), ord("3"), ord("4"), ord("8"), ord("C"), ord("5"))   # 39 values: not working
_CXL_UNKNOWN_ORDER = 1     # CxlRejReason (102) 1: the venue does not know the order
_RECONCILE_REASON = R.RECONCILE.fields["reason"][1]


# ------------------------------------------------------------------------------------------------
# open-order table: linear probing, deletion by backward shift (no tombstones), allocation-free
# ------------------------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _home(key, mask):
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask


@njit(cache=True, nogil=True, forceinline=True)
def ot_find(ot, key):
    mask = ot.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = ot[i, OT_KEY]
        if k == key:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask


@njit(cache=True, nogil=True, forceinline=True)
def ot_insert(ot, gst, key, instrument, side, qty):
    """Insert or update; -1 when the table is at its load limit (3/4). A new row's key is
    written last, so a process killed mid-insert (the table lives in a mapped file) leaves no
    half-written row behind."""
    mask = ot.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = ot[i, OT_KEY]
        if k == key:
            break
        if k == 0:
            if gst[G_OPEN] >= (ot.shape[0] * 3) // 4:
                return -1
            gst[G_OPEN] += 1
            ot[i, OT_INSTR] = instrument
            ot[i, OT_SIDE] = side
            ot[i, OT_QTY] = qty
            ot[i, OT_PENDING] = 0
            ot[i, OT_SENT] = 0
            ot[i, OT_KEY] = key
            return i
        i = (i + 1) & mask
    ot[i, OT_INSTR] = instrument
    ot[i, OT_SIDE] = side
    ot[i, OT_QTY] = qty
    return i


@njit(cache=True, nogil=True, forceinline=True)
def ot_delete(ot, gst, key):
    i = ot_find(ot, key)
    if i < 0:
        return False
    if ot[i, OT_PENDING] != 0:
        gst[G_STATUS_PENDING] -= 1
    mask = ot.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = ot[j, OT_KEY]
        if k == 0:
            break
        h = _home(k, mask)
        if (i <= j and (i < h <= j)) or (i > j and (h > i or h <= j)):
            continue
        for c in range(OT_COLS):
            ot[i, c] = ot[j, c]
        i = j
    for c in range(OT_COLS):
        ot[i, c] = 0
    gst[G_OPEN] -= 1
    return True


# ------------------------------------------------------------------------------------------------
# compiled steps
# ------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _refuse(ehdr, edata, rec, erow, gst, reason):
    for k in range(R.EXEC_RECORD_SIZE):
        erow[k] = 0
    erow[R.RTYPE_OFF] = R.RT_REJECT
    erow[R.VENUE_OFF] = np.uint8(gst[G_VENUE])
    for k in range(R.INSTRUMENT_OFF, R.ORIGIN_TSC_OFF + 8):    # instrument, origin_tsc carried over
        erow[k] = rec[k]
    C.st_u64(erow, C._X_CLORD, C.ld_u64(rec, C._O_CLORD))
    rt = rec[R.RTYPE_OFF]
    if rt == R.RT_CANCEL:
        C.st_u64(erow, C._X_ORIG, C.ld_u64(rec, C._C_ORIG))
    elif rt == R.RT_REPLACE:
        C.st_u64(erow, C._X_ORIG, C.ld_u64(rec, C._R_ORIG))
    for k in range(8):                 # strategy, session (two adjacent u32s)
        erow[R.EXEC_STRATEGY_OFF + k] = rec[R.ORDER_STRATEGY_OFF + k]
    C.st_u16(erow, C._J_REASON, reason)
    erow[C._J_ISCXL] = 1 if (rt == R.RT_CANCEL or rt == R.RT_REPLACE) else 0
    erow[C._J_ORDSTATUS] = R.EXEC_REJECTED
    ring.publish(ehdr, edata, erow)
    gst[G_REFUSED] += 1
    gst[G_EXECS] += 1
    gst[G_LAST_REFUSED] = np.int64(C.ld_u64(rec, C._O_CLORD))
    gst[G_LAST_REASON] = reason


@njit(cache=True, nogil=True, forceinline=True)
def _note_sent(sent, seq, rt, clord, orig, instrument):
    j = seq & (sent.shape[0] - 1)
    sent[j, SM_SEQ] = seq
    sent[j, SM_RT] = rt
    sent[j, SM_CLORD] = clord
    sent[j, SM_ORIG] = orig
    sent[j, SM_INSTR] = instrument


Fix = namedtuple("Fix", ["ohdr", "odata", "ocur", "ehdr", "edata", "scratch", "sbuf", "gst",
                         "consts", "instr", "syms", "ot", "cal", "cwords", "sent", "batch",
                         "hists", "hidx", "seq"])
Fix.__doc__ = """The gateway's arrays as its kernels take them (gw_step, gw_receive; the
one-process loop of appliance.group): the order ring (header, data, our cursor), the exec ring,
scratch rows, the send buffer, the gateway state ``gst``, the session constants, the instrument
tables, the open-order table, the clock calibration, the control block words, the sent-message
map, the batch of the last send, the latency histograms and their slots, and ``seq``: the
store's mapped next-sender digits (``FileStore.sender_view``; a scratch array where the store
has none)."""


DRY_CLORD = 1   # the ClOrdID of a dry run's order (in the dry bundle's own open-order table)


def dry_bundle(fx: Fix) -> tuple[Fix, np.ndarray]:
    """A private copy of ``fx`` for dry runs of the order path, and the order record a dry run
    encodes: a NewOrderSingle of the session's first instrument (1 lot at 1 tick, limit, GTC).

    The one-process loop runs :func:`gw_step` on it now and then while idle
    (``appliance.group``), through the very call site that sends live orders: numba inlines the
    gateway's kernels into that loop, so only that copy of the machine code is the one a live
    order runs, and only running it keeps its instructions and branch history warm (a prefetch
    warms data, not code). Everything a dry run writes is its own: the order and exec rings, the
    scratch rows, the send buffer, the gateway words, the open-order table, the sent-message map,
    the batch rows, the histograms and the sequence digits. It shares only what gw_step reads:
    the session constants, the instrument tables, the clock calibration, the control block (a
    kill refuses the dry order onto the dry exec ring, as it would a live one) and the histogram
    slots. Nothing of it reaches a socket: the caller does not send what it encodes."""
    oh, od = ring.local_ring(R.ORDER_RECORD_SIZE, 16)
    eh, ed = ring.local_ring(R.EXEC_RECORD_SIZE, 16)
    gst = np.zeros_like(fx.gst)
    gst[G_READY] = 1
    gst[G_NEXT_SEQ] = 1
    gst[G_SESSION_IDX] = fx.gst[G_SESSION_IDX]
    gst[G_VENUE] = fx.gst[G_VENUE]
    dry = Fix(oh, od, ring.local_cursor(oh), eh, ed, np.zeros_like(fx.scratch),
              np.zeros_like(fx.sbuf), gst, fx.consts, fx.instr, fx.syms, np.zeros_like(fx.ot), fx.cal,
              fx.cwords, np.zeros_like(fx.sent), np.zeros_like(fx.batch), np.zeros_like(fx.hists),
              fx.hidx, np.zeros_like(fx.seq))
    rec = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
    o = rec.view(R.NEW_ORDER)
    o["rtype"] = R.RT_NEW_ORDER
    o["session"] = int(fx.gst[G_SESSION_IDX])
    o["venue"] = int(fx.gst[G_VENUE])
    o["instrument"] = 0
    o["clord_id"] = DRY_CLORD
    o["qty"] = 1
    o["price"] = 1
    o["side"] = R.SIDE_BUY
    o["ord_type"] = R.ORD_LIMIT
    o["tif"] = R.TIF_GTC
    return dry, rec


@njit(cache=True, nogil=True)
def gw_step(fx, max_n):
    """Drain up to ``max_n`` order records of ``fx`` (:data:`Fix`): encode ours into ``sbuf``
    (length in gst[G_SEND_LEN]) until the ring is empty or the send buffer's batch is full;
    refuse the ones that cannot go out. Returns the number of messages encoded. (The caller polls cheaply and
    idles with the wait strategy; this runs only when records are waiting.)

    ``cwords`` is the control block (uint64 words): while its kill flag is set no NEW_ORDER or
    REPLACE passes (RJ_KILLED); cancels do. ``sent`` maps each MsgSeqNum used to the order it
    carried (a venue's session Reject names only the MsgSeqNum). While not ready, an order whose
    ClOrdID is already in the open-order table is one this gateway sent before it restarted (its
    ring position is saved only after a send): it is skipped, reconciliation reports it. With
    FIX 4.2 (no OrderMassCancelRequest) a MASS_CANCEL record ends the batch and is left in
    gst[G_MASS_PENDING] / gst[G_MASS_INSTR] for the caller to send as one cancel per order.
    ``batch`` rows get each encoded order's publish TSC, origin TSC and ClOrdID (``gw_sent``
    turns them into latencies once the batch is sent)."""
    ohdr, odata, ocur, ehdr, edata = fx.ohdr, fx.odata, fx.ocur, fx.ehdr, fx.edata
    scratch, sbuf, gst, consts, instr, syms = fx.scratch, fx.sbuf, fx.gst, fx.consts, fx.instr, fx.syms
    ot, cal, cwords, sent, batch = fx.ot, fx.cal, fx.cwords, fx.sent, fx.batch
    rec = scratch[0]
    erow = scratch[1]
    tcache = scratch[2]
    nb = np.int64(consts[0])
    begin = consts[2:2 + nb]
    comp = consts[2 + nb:2 + nb + np.int64(consts[1])]
    room = C.MAX_MSG + begin.shape[0] + comp.shape[0]
    no_mass = C.is_fix42(begin)
    pos = 0
    n = 0
    utc = np.int64(-1)
    it = 0
    while it < max_n:
        if gst[G_MASS_PENDING] != 0 or gst[G_RECONCILE_REQ] != 0:
            break
        it += 1
        if ring.poll(ohdr, odata, ocur, rec) == 0:
            if ring.poll(ohdr, odata, ocur, rec) == 0:     # the first may only have resynced a lap
                if it == 1:
                    gst[G_IDLE_POLLS] += 1
                break
        rt = rec[R.RTYPE_OFF]
        if rt < R.RT_NEW_ORDER or rt > R.RT_RECONCILE:
            continue
        if np.int64(C.ld_u32(rec, R.ORDER_SESSION_OFF)) != gst[G_SESSION_IDX]:
            gst[G_FOREIGN] += 1
            continue
        if rt == R.RT_RECONCILE:
            gst[G_RECONCILE_REQ] = 1
            gst[G_RECONCILE_ID] = np.int64(C.ld_u64(rec, C._O_CLORD))
            gst[G_RECONCILE_WHY] = np.int64(rec[_RECONCILE_REASON]) | (np.int64(rec[_RECONCILE_REASON + 1]) << 8)
            break
        clord = np.int64(C.ld_u64(rec, C._O_CLORD))
        if (rt == R.RT_NEW_ORDER or rt == R.RT_REPLACE) and control.kill_requested(cwords):
            gst[G_KILLED] += 1
            _refuse(ehdr, edata, rec, erow, gst, RJ_KILLED)
            continue
        if gst[G_READY] == 0:
            if (rt == R.RT_NEW_ORDER or rt == R.RT_REPLACE) and clord != 0 and ot_find(ot, clord) >= 0:
                continue
            _refuse(ehdr, edata, rec, erow, gst, RJ_NOT_READY)
            continue
        if clord == 0:
            _refuse(ehdr, edata, rec, erow, gst, RJ_BAD_CLORD)
            continue
        if rt == R.RT_MASS_CANCEL and no_mass:
            gst[G_MASS_PENDING] = 1 + np.int64(rec[C._M_SCOPE])
            gst[G_MASS_INSTR] = np.int64(C.ld_u32(rec, C._O_INSTR))
            break
        if utc < 0:
            utc = clock.tsc_to_utc_ns(cal, clock.now(cal))
        k = C.encode_order(rec, sbuf, pos, begin, comp, gst[G_NEXT_SEQ], utc, tcache, instr, syms)
        if k < 0:
            _refuse(ehdr, edata, rec, erow, gst, RJ_ENCODE_BASE - k)
            continue
        inst = np.int64(C.ld_u32(rec, C._O_INSTR))
        orig = 0
        if rt == R.RT_NEW_ORDER or rt == R.RT_REPLACE:
            if rt == R.RT_NEW_ORDER:
                side = rec[C._N_SIDE]
                qty = C.ld_i64(rec, C._N_QTY)
            else:
                side = rec[C._R_SIDE]
                qty = C.ld_i64(rec, C._R_QTY)
                orig = np.int64(C.ld_u64(rec, C._R_ORIG))
            if ot_insert(ot, gst, clord, inst, np.int64(side), qty) < 0:
                _refuse(ehdr, edata, rec, erow, gst, RJ_TOO_MANY_OPEN)
                continue
        elif rt == R.RT_CANCEL:
            orig = np.int64(C.ld_u64(rec, C._C_ORIG))
        _note_sent(sent, gst[G_NEXT_SEQ], np.int64(rt), clord, orig, inst)
        batch[n, BT_PUBLISH] = C.ld_i64(rec, R.PUBLISH_TSC_OFF)
        batch[n, BT_ORIGIN] = C.ld_i64(rec, R.ORIGIN_TSC_OFF)
        batch[n, BT_CLORD] = clord if (rt == R.RT_NEW_ORDER or rt == R.RT_REPLACE) else 0
        gst[G_NEXT_SEQ] += 1
        gst[G_SENT] += 1
        pos += k
        n += 1
        if sbuf.shape[0] - pos < room:
            break
    gst[G_SEND_LEN] = pos
    return n


@njit(**jit.HELPER)
def warm_path(fx, next_clord, n):
    """Prefetch what gw_step, the send and gw_sent will touch for the next ``n`` orders, whose
    ClOrdIDs follow ``next_clord`` (the engine's OMS counter): their open-order table rows
    (home slots), the sent-message rows of the next sender numbers, the send buffer, the batch
    rows, the record scratch and time cache, the gateway words and the instrument tables. Hints
    only: nothing waits on them, nothing changes. The one-process loop calls it when a frame
    arrives, so the lines come in while the frame is parsed and the engine decides (the FIX
    gateway's tables are cold by then: the Python work between frames evicts them from L2)."""
    ot = fx.ot
    mask = ot.shape[0] - 1
    smask = fx.sent.shape[0] - 1
    seq = fx.gst[G_NEXT_SEQ]
    for k in range(n):
        prefetch.row(ot, _home(next_clord + k, mask))
        prefetch.row(fx.sent, (seq + k) & smask)
        prefetch.row(fx.batch, k)
    room = C.MAX_MSG + np.int64(fx.consts[0]) + np.int64(fx.consts[1])
    prefetch.lines(fx.sbuf, 0, n * room // 2)         # an order takes about half of ``room``
    prefetch.lines(fx.scratch, 0, fx.scratch.shape[0] * fx.scratch.shape[1])
    prefetch.lines(fx.gst, 0, fx.gst.shape[0] * 8)
    prefetch.lines(fx.instr, 0, fx.instr.shape[0] * fx.instr.strides[0])
    prefetch.lines(fx.syms, 0, fx.syms.size)
    prefetch.lines(fx.consts, 0, fx.consts.shape[0])


@njit(cache=True, nogil=True)
def gw_sent(batch, n, send_tsc, cal, ot, hists, hidx):
    """The batch of ``n`` orders went to the kernel at ``send_tsc``: order_to_wire (ring publish ->
    send returned) and tick_to_trade (origin market event -> send returned) per order, and the
    send TSC on each new order's / replace's row for wire_to_ack."""
    for j in range(n):
        hist.record(hists[hidx[HOP_O2W]], clock.tsc_to_ns(cal, send_tsc - batch[j, BT_PUBLISH]))
        o = batch[j, BT_ORIGIN]
        if 0 < o < send_tsc:
            hist.record(hists[hidx[HOP_T2T]], clock.tsc_to_ns(cal, send_tsc - o))
        if batch[j, BT_CLORD] != 0:
            i = ot_find(ot, batch[j, BT_CLORD])
            if i >= 0:
                ot[i, OT_SENT] = send_tsc


@njit(cache=True, nogil=True)
def gw_track(rows, n, ehdr, edata, ot, gst, unk, cal, hists, hidx):
    """Publish ``n`` exec records and keep the open-order table in step with them. A status
    report (exec_type I) of a working order that is not in the table (an order nobody here knows,
    e.g. from a mass status reply) is noted in ``unk`` (ClOrdID, instrument, side, leaves) for
    the caller to cancel. The first answer to an order sent records wire_to_ack (send returned ->
    the answer's bytes received)."""
    for r in range(n):
        row = rows[r]
        ring.publish(ehdr, edata, row)
        gst[G_EXECS] += 1
        rt = row[R.RTYPE_OFF]
        clord = np.int64(C.ld_u64(row, C._X_CLORD))
        orig = np.int64(C.ld_u64(row, C._X_ORIG))
        j = ot_find(ot, clord)
        if j >= 0 and ot[j, OT_SENT] != 0:
            rx = C.ld_i64(row, R.ORIGIN_TSC_OFF)
            if rx > ot[j, OT_SENT]:
                hist.record(hists[hidx[HOP_W2A]], clock.tsc_to_ns(cal, rx - ot[j, OT_SENT]))
            ot[j, OT_SENT] = 0
        if rt == R.RT_ACK:
            et = row[C._A_EXECTYPE]
            os_ = row[C._A_ORDSTATUS]
            i = ot_find(ot, clord)
            if et == R.EXEC_ORDER_STATUS and i >= 0 and ot[i, OT_PENDING] != 0:
                ot[i, OT_PENDING] = 0
                gst[G_STATUS_PENDING] -= 1
            if et == R.EXEC_ORDER_STATUS and i < 0 and clord != 0:
                for w in _WORKING:
                    if os_ == w:
                        k = gst[G_UNKNOWN_N]
                        if k < unk.shape[0]:
                            unk[k, 0] = clord
                            unk[k, 1] = np.int64(C.ld_u32(row, C._O_INSTR))
                            unk[k, 2] = np.int64(row[C._A_SIDE])
                            unk[k, 3] = C.ld_i64(row, C._A_LEAVES)
                            gst[G_UNKNOWN_N] = k + 1
                        break
            if et == R.EXEC_CANCELED or et == R.EXEC_REPLACED:
                if orig != 0:
                    ot_delete(ot, gst, orig)
            for t in _TERMINAL:
                if os_ == t:
                    ot_delete(ot, gst, clord)
                    break
        elif rt == R.RT_FILL:
            if row[C._F_ORDSTATUS] == ord("2"):
                ot_delete(ot, gst, clord)
        elif rt == R.RT_REJECT:
            # an order reject closes the order; a cancel/replace reject closes the replace's new
            # id (never used) and, if the venue says the original is done or unknown, the
            # original too
            ot_delete(ot, gst, clord)
            if row[C._J_ISCXL] != 0 and orig != 0:
                os_ = row[C._J_ORDSTATUS]
                why = np.int64(row[C._J_REASON]) | (np.int64(row[C._J_REASON + 1]) << 8)
                if why == _CXL_UNKNOWN_ORDER:
                    ot_delete(ot, gst, orig)
                else:
                    for t in _TERMINAL:
                        if os_ == t and t != ord("8"):
                            ot_delete(ot, gst, orig)
                            break
    ring.notify(ehdr)                  # the batch: wake an engine asleep on the exec ring


@njit(cache=True, nogil=True)
def gw_receive(fx, buf, start, end, st, out, rx_tsc, unk):
    """parse_messages + gw_track in one call (``fx``: :data:`Fix`); returns the parser's P_* code
    (state in ``st``)."""
    code = C.parse_messages(buf, start, end, st, fx.instr, fx.syms, out, rx_tsc)
    gw_track(out, st[C.ST_NOUT], fx.ehdr, fx.edata, fx.ot, fx.gst, unk, fx.cal, fx.hists, fx.hidx)
    return code


RECV_CAP = 1 << 18      # the gateway's receive buffer
READ_MAX = 1 << 16      # bytes one recv() may add to it

Rx = namedtuple("Rx", ["buf", "pos", "pst", "out", "unk", "tseq"])
Rx.__doc__ = """The gateway's receive side as compiled code takes it (:func:`gw_rx`, the one-process
loop of appliance.group): the receive buffer, its words ``pos`` (RX_*), the parser state, the
parser's output rows, the unknown-working-orders table, and ``tseq``: the store's mapped
next-target digits (``FileStore.target_view``; a scratch array where the store has none)."""
RX_START = 0    # first byte of the receive buffer not parsed yet
RX_END = 1      # end of the bytes read
RX_STATUS = 2   # the socket ended (-1) or failed (errno): Python disconnects
RX_SESSION = 3  # 1: the parser stopped at a message for the session layer (ST_MSG_OFF/LEN)
RX_TSC = 4      # TSC when the last recv() returned bytes
RX_READS = 5    # recv() calls that returned bytes, total
RX_N = 8

RX_NONE = 0     # gw_rx: nothing to read
RX_DONE = 1     # bytes read and handled; nothing for Python
RX_PYTHON = 2   # Python must go on: RX_STATUS, RX_SESSION, or unknown working orders to cancel


@njit(**jit.HELPER)
def put_seq(view, n):
    """``n`` as 20 zero-padded decimal digits at view[0:20] (a field of the seqnums file)."""
    C.put_padded(view, 20, np.uint64(n), 20)


SO_N, SO_LEN, SO_SENT, SO_TSC = range(4)   # gw_send's out words


@njit(cache=True, nogil=True)
def gw_send(fx, fd, max_n, out):
    """Orders out in one call, for the gateway's own step while :meth:`Gateway.fast_fd` allows
    it: ``gw_step`` (up to ``max_n`` orders encoded), the next sender number into the store's
    mapped seqnums file (``fx.seq``) before the batch leaves, ``send()`` on ``fd``, ``gw_sent``.
    ``out``: int64[4] (SO_*): orders encoded, the batch's length, what send() returned (bytes,
    or -errno), the TSC when send() was called. Returns the orders encoded."""
    refused = fx.gst[G_REFUSED]
    n = gw_step(fx, max_n)
    if fx.gst[G_REFUSED] != refused:
        ring.notify(fx.ehdr)             # its REJECTs: wake an engine asleep on the exec ring
    out[SO_N] = n
    out[SO_LEN] = 0
    out[SO_SENT] = 0
    if n > 0:
        ln = fx.gst[G_SEND_LEN]
        put_seq(fx.seq, fx.gst[G_NEXT_SEQ])
        t = np.int64(rdtsc())
        k = sys_send(fd, fx.sbuf, 0, ln)
        out[SO_SENT] = k if k >= 0 else -sys_errno()
        gw_sent(fx.batch, n, t, fx.cal, fx.ot, fx.hists, fx.hidx)
        out[SO_LEN] = ln
        out[SO_TSC] = t
    return n


@njit(cache=True, nogil=True)
def gw_idle_send(params, state, fx, bells, fd, max_n, out):
    """The gateway's idle wait (``ring.idle_on``: a back-off sleep ends at the order ring's
    doorbell), then, when ``fd`` >= 0 (:meth:`Gateway.fast_fd`, taken before the wait) and order
    records arrived, ``gw_send`` at once: the orders a sleeping gateway is woken for leave
    without a return to Python first. Returns -1 when no record arrived, else what gw_send
    returned (0: the records were refused, foreign or left for Python: see ``fx.gst``)."""
    ring.idle_on(params, state, fx.ohdr, fx.ocur, bells)
    if fd < 0 or ring.behind(fx.ohdr, fx.ocur) <= 0:
        return -1
    return gw_send(fx, fd, max_n, out)


@njit(**jit.HELPER)
def gw_rx(fx, rx, fd):
    """Read the FIX socket ``fd`` once (non-blocking) and take what arrived as the gateway's
    Python step does (:meth:`Gateway._received`) while its session is on the fast path: the
    in-sequence execution reports go through :func:`gw_receive` (exec records out, open-order
    table, wire_to_ack), and the next expected MsgSeqNum is written into the store's mapped
    seqnums file (``rx.tseq``) as ``set_next_target`` would. Anything else stops it for Python:
    a message the session layer takes (admin, out of sequence, not an execution report: RX_SESSION,
    the buffer left as ``_received`` leaves it), the end of the stream or an error (RX_STATUS),
    status reports of orders nobody here knows (``G_UNKNOWN_N``). The caller keeps
    ``rx.pst[ST_EXPECT_SEQ]`` equal to the store's next target between calls. Returns RX_*."""
    buf = rx.buf
    pos = rx.pos
    st = rx.pst
    cap = buf.shape[0]
    rend = pos[RX_END]
    k = sys_recv(fd, buf, rend, min(READ_MAX, cap - rend))
    if k < 0:
        e = sys_errno()
        if e == EAGAIN or e == EINTR:
            return RX_NONE
        pos[RX_STATUS] = e
        return RX_PYTHON
    if k == 0:
        pos[RX_STATUS] = -1
        return RX_PYTHON
    t = np.int64(rdtsc())
    pos[RX_TSC] = t
    pos[RX_READS] += 1
    rend += k
    rstart = pos[RX_START]
    rc = RX_DONE
    while rstart < rend:
        expect = st[C.ST_EXPECT_SEQ]
        code = gw_receive(fx, buf, rstart, rend, st, rx.out, t, rx.unk)
        if st[C.ST_EXPECT_SEQ] != expect:
            put_seq(rx.tseq, st[C.ST_EXPECT_SEQ])
        rstart = st[C.ST_POS]
        if code == C.P_SESSION_MSG:
            pos[RX_SESSION] = 1
            rc = RX_PYTHON
            break
        if code != C.P_OUT_FULL:
            break
    if rc == RX_DONE:                       # as _received leaves the buffer
        if rstart == rend:
            rstart = 0
            rend = 0
        elif cap - rend < READ_MAX:
            keep = rend - rstart
            move_bytes(buf, 0, rstart, keep)
            rstart = 0
            rend = keep
    pos[RX_START] = rstart
    pos[RX_END] = rend
    if fx.gst[G_UNKNOWN_N] != 0:
        rc = RX_PYTHON
    return rc


@njit(cache=True, nogil=True)
def gw_rx_once(fx, rx, fd):
    """:func:`gw_rx` as one Python-callable kernel (tests; warm-up)."""
    return gw_rx(fx, rx, fd)


@njit(cache=True, nogil=True)
def gw_working(ot, ids, info):
    """Copy the open orders (ClOrdID, instrument, side, qty) out; returns how many."""
    n = 0
    for i in range(ot.shape[0]):
        if ot[i, OT_KEY] != 0:
            ids[n] = ot[i, OT_KEY]
            info[n, 0] = ot[i, OT_INSTR]
            info[n, 1] = ot[i, OT_SIDE]
            info[n, 2] = ot[i, OT_QTY]
            n += 1
    return n


@njit(cache=True, nogil=True)
def gw_mark_pending(ot, gst, key):
    i = ot_find(ot, key)
    if i >= 0 and ot[i, OT_PENDING] == 0:
        ot[i, OT_PENDING] = 1
        gst[G_STATUS_PENDING] += 1


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GatewayConfig:
    name: str
    host: str
    port: int
    sender_comp_id: str
    target_comp_id: str
    begin_string: str = "FIX.4.4"
    heartbeat_s: int = 30
    store_dir: str = ""
    credentials_file: str = ""
    order_ring: str = "orders"
    exec_ring: str = ""
    session_index: int = 0
    venue: str = "sim"
    instruments: tuple = ()
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 5000
    reconcile_timeout_s: float = 5.0
    max_batch: int = 64
    open_orders: int = 4096
    reset_on_logon: bool = False
    validate: bool = False
    logon_signature: str = ""
    signing_key_file: str = ""
    mass_cancel_on_kill: bool = True
    mass_status: bool = True
    ack_reads: bool = True
    tls: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_table(cls, name: str, t: dict, state_dir: str = "/var/lib/appliance/state") -> "GatewayConfig":
        from appliance.config import ConfigError
        where = f"fix.sessions.{name}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: expected a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {"name": name}
        for k, v in t.items():
            if k not in fields or k == "name":
                raise ConfigError(f"{where}.{k}: unknown key (known: {', '.join(sorted(set(fields) - {'name'}))})")
            want = fields[k].type
            if want == "int" and (not isinstance(v, int) or isinstance(v, bool)):
                raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
            if want == "str" and not isinstance(v, str):
                raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
            if want == "bool" and not isinstance(v, bool):
                raise ConfigError(f"{where}.{k}: expected true/false, got {v!r}")
            if want == "float":
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise ConfigError(f"{where}.{k}: expected a number, got {v!r}")
                v = float(v)
            if want == "dict":
                from appliance.fix import tls as tls_mod
                if not isinstance(v, dict):
                    raise ConfigError(f"{where}.{k}: expected a table")
                try:
                    tls_mod.TlsSettings.from_table(v)
                except ValueError as e:
                    raise ConfigError(f"{where}.{k}: {e}") from None
            if k == "instruments":
                v = cls._instruments(where, v)
            kw[k] = v
        for req in ("host", "port", "sender_comp_id", "target_comp_id"):
            if req not in kw:
                raise ConfigError(f"{where}.{req}: required")
        kw.setdefault("exec_ring", f"exec.{name}")
        kw.setdefault("store_dir", str(Path(state_dir) / "fix" / name))
        g = cls(**kw)
        g.validate_values(where)
        return g

    @staticmethod
    def _instruments(where: str, v) -> tuple:
        from appliance.config import ConfigError
        if not isinstance(v, list):
            raise ConfigError(f"{where}.instruments: expected an array of tables")
        out = []
        for i, it in enumerate(v):
            if not isinstance(it, dict) or set(it) != {"symbol", "tick_size", "lot_size"}:
                raise ConfigError(f"{where}.instruments[{i}]: expected {{symbol, tick_size, lot_size}}, got {it!r}")
            out.append((str(it["symbol"]), str(it["tick_size"]), str(it["lot_size"])))
        try:
            C.instrument_tables(out)
        except ValueError as e:
            raise ConfigError(f"{where}.instruments: {e}") from None
        return tuple(out)

    def validate_values(self, where: str) -> None:
        from appliance.config import ConfigError
        if self.begin_string not in ("FIX.4.2", "FIX.4.4"):
            raise ConfigError(f"{where}.begin_string: {self.begin_string!r} is not FIX.4.2 or FIX.4.4")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}.port: {self.port} is not a TCP port")
        if self.venue not in R.VENUE_IDS:
            raise ConfigError(f"{where}.venue: {self.venue!r} is not one of {', '.join(R.VENUE_IDS)}")
        if not self.instruments:
            raise ConfigError(f"{where}.instruments: at least one instrument is required")
        n = self.open_orders
        if n < 16 or n & (n - 1):
            raise ConfigError(f"{where}.open_orders: must be a power of two >= 16")
        if self.max_batch < 1 or self.heartbeat_s < 1 or self.reconnect_min_ms < 1 \
                or self.reconnect_max_ms < self.reconnect_min_ms or self.reconcile_timeout_s <= 0:
            raise ConfigError(f"{where}: max_batch, heartbeat_s, reconnect_min_ms >= 1, "
                              f"reconnect_max_ms >= reconnect_min_ms, reconcile_timeout_s > 0")
        for k in ("sender_comp_id", "target_comp_id"):
            v = getattr(self, k)
            if not v or len(v) > C.COMP_ID_MAX or "\x01" in v or "=" in v:
                raise ConfigError(f"{where}.{k}: 1..{C.COMP_ID_MAX} characters without SOH or '='")


def load_session_config(cfg, name: str) -> GatewayConfig:
    """[fix.sessions.NAME] with its instruments from the [[instruments]] registry: those of the
    session's venue, in id order (the order records' ``instrument`` indexes them)."""
    from appliance.config import ConfigError
    sessions = _sessions(cfg)
    if name not in sessions:
        raise ConfigError(f"fix.sessions: no session named {name!r} (have: {', '.join(sessions) or 'none'})")
    t = sessions[name]
    if not isinstance(t, dict):
        raise ConfigError(f"fix.sessions.{name}: expected a table")
    if "instruments" in t:
        raise ConfigError(f"fix.sessions.{name}.instruments: the session trades the "
                          f"[[instruments]] entries of its venue (set venue = \"...\")")
    venue = t.get("venue", GatewayConfig.venue)
    table = dict(t, instruments=[{"symbol": i.symbol, "tick_size": i.tick, "lot_size": i.lot}
                                 for i in cfg.instruments_of(venue)])
    return GatewayConfig.from_table(name, table, cfg.appliance.state_dir)


def _sessions(cfg) -> dict:
    from appliance.config import ConfigError
    fix = cfg.extra.get("fix", {})
    if not isinstance(fix, dict):
        raise ConfigError("fix: expected a table with [fix.sessions.NAME] tables")
    for k in fix:
        if k != "sessions":
            raise ConfigError(f"fix.{k}: unknown key (known: sessions)")
    sessions = fix.get("sessions", {})
    if not isinstance(sessions, dict):
        raise ConfigError("fix.sessions: expected tables [fix.sessions.NAME]")
    return sessions


def validate_config(cfg) -> None:
    """The FIX part of ``config.load``: every [fix.sessions.NAME] table, with its instruments;
    session indexes and exec rings unique."""
    from appliance.config import ConfigError
    seen_idx, seen_ring = {}, {}
    for name in _sessions(cfg):
        g = load_session_config(cfg, name)
        for d, k, what in ((seen_idx, g.session_index, "session_index"),
                           (seen_ring, g.exec_ring, "exec_ring")):
            if k in d:
                raise ConfigError(f"fix.sessions.{name}.{what}: {k!r} is also session {d[k]}'s")
            d[k] = name


def _i64(u) -> int:
    """uint64 bits as the int64 the tables hold."""
    u = int(u)
    return u - (1 << 64) if u >= 1 << 63 else u


# ------------------------------------------------------------------------------------------------
# the open-order table on disk
# ------------------------------------------------------------------------------------------------
OO_MAGIC = 0x4F4F5432            # "2TOO": open-order file, layout 2 (OT_COLS columns)
OO_HDR = 8                        # header words before the table
H_MAGIC, H_CAP, H_RING_CREATED, H_RING_POS, H_NEXT_GWID, H_ENGINE_RESTART, H_ENGINE_DONE = range(7)


class OpenOrderFile:
    """The open-order table and the order-ring position in a mapped file
    (``<store_dir>/open_orders``, 0600): the compiled steps write the table in place, so a
    process killed at any instruction restarts with every order it had sent (the table is
    rebuilt on open, which also drops a row duplicated by a delete that was cut short).

    Header words: magic, capacity, the order ring's creation time and the position after the
    last order handled (saved once the batch holding it went to the kernel), the next
    gateway-assigned ClOrdID counter, the engine-restart reconciliation request not yet
    answered (its id, 0 = none: a restarted gateway finishes it) and the last one answered (the
    engine publishing it again is answered again, not reconciled again). ``path=None`` keeps
    everything in memory."""

    def __init__(self, path, capacity: int, gst):
        self.path = path
        self.mm = None
        size = (OO_HDR + capacity * OT_COLS) * 8
        rows = np.zeros((0, OT_COLS), np.int64)
        old_hdr = np.zeros(OO_HDR, np.int64)
        if path is None:
            arr = np.zeros(size // 8, np.int64)
        else:
            from appliance.fix.store import open_private
            fd = open_private(path, os.O_RDWR)
            try:
                have = os.fstat(fd).st_size
                if have >= OO_HDR * 8:
                    old = np.frombuffer(os.pread(fd, have, 0), np.int64)
                    if old[H_MAGIC] == OO_MAGIC and old[H_CAP] > 0 and have == (OO_HDR + old[H_CAP] * OT_COLS) * 8:
                        old_hdr = old[:OO_HDR].copy()
                        t = old[OO_HDR:].reshape(-1, OT_COLS)
                        rows = t[t[:, OT_KEY] != 0].copy()
                    else:
                        log.warning("%s: not an open-order file of this layout; starting empty", path)
                need = 16
                while need * 3 // 4 < len(rows):
                    need *= 2
                if need > capacity:          # a smaller configured table never drops an order
                    log.warning("%s holds %d open orders: the table grows from %d to %d rows",
                                path, len(rows), capacity, need)
                    capacity = need
                    size = (OO_HDR + capacity * OT_COLS) * 8
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
                self.mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            arr = np.frombuffer(self.mm, np.int64)
        b = arr.view(np.uint8)
        b[::4096] = b[::4096]           # every page faulted in now, not on an order's insert
        self.hdr = arr[:OO_HDR]
        self.ot = arr[OO_HDR:].reshape(capacity, OT_COLS)
        self.hdr[H_CAP] = capacity
        self.hdr[H_RING_CREATED] = old_hdr[H_RING_CREATED]
        self.hdr[H_RING_POS] = old_hdr[H_RING_POS]
        self.hdr[H_NEXT_GWID] = max(int(old_hdr[H_NEXT_GWID]), 1)
        self.hdr[H_ENGINE_RESTART] = old_hdr[H_ENGINE_RESTART]
        self.hdr[H_ENGINE_DONE] = old_hdr[H_ENGINE_DONE]
        gst[G_OPEN] = 0
        gst[G_STATUS_PENDING] = 0
        seen = set()
        for r in rows:
            k = int(r[OT_KEY])
            if k in seen:
                continue
            seen.add(k)
            if ot_insert(self.ot, gst, k, int(r[OT_INSTR]), int(r[OT_SIDE]), int(r[OT_QTY])) < 0:
                log.error("%s: open-order table of %d rows cannot hold the %d orders on file", path,
                          capacity, len(rows))
                break
        self.hdr[H_MAGIC] = OO_MAGIC
        self.restored = int(gst[G_OPEN])

    def next_gateway_id(self) -> int:
        n = int(self.hdr[H_NEXT_GWID])
        self.hdr[H_NEXT_GWID] = n + 1
        return GW_ID_BIT | n

    def close(self) -> None:
        if self.mm is not None:
            self.hdr = self.ot = None
            try:
                self.mm.flush()
                self.mm.close()
            except BufferError:          # a view is still alive somewhere: the kernel keeps the data
                pass
            self.mm = None


# ------------------------------------------------------------------------------------------------
# the actor
# ------------------------------------------------------------------------------------------------
class GatewayApplication:
    """Session-layer callbacks of the gateway (duck-typed ``session.Application``)."""

    def __init__(self, gw: "Gateway"):
        self.gw = gw

    def on_logon(self, session):
        self.gw._logon_pending = True

    def on_logout(self, session):
        pass

    def on_app_message(self, session, msg):
        self.gw._slow_app_message(msg)

    def logon_fields(self, session):
        return self.gw.logon_hook(session) if self.gw.logon_hook is not None else []

    def on_admin_message(self, session, msg):
        if msg.msg_type == b"3":
            self.gw._venue_rejected(msg, RJ_SESSION_REJECT)

    def verify_logon(self, session, msg):
        pass

    def should_resend(self, session, msg):
        return msg.msg_type not in (b"D", b"F", b"G", b"q", b"H")


class Gateway:
    RECV_CAP = RECV_CAP
    READ_MAX = READ_MAX

    # the receive buffer's bounds live in ``rpos`` (int64 words), so compiled code (gw_rx) and
    # this class read and move the same ones
    @property
    def rstart(self) -> int:
        return int(self.rpos[RX_START])

    @rstart.setter
    def rstart(self, v: int) -> None:
        self.rpos[RX_START] = v

    @property
    def rend(self) -> int:
        return int(self.rpos[RX_END])

    @rend.setter
    def rend(self, v: int) -> None:
        self.rpos[RX_END] = v

    def __init__(self, gcfg: GatewayConfig, order_reader, exec_writer, store, *, wait_params=None,
                 clock_fn=time.time, cal=None, message_log=None, heartbeat=None, control_words=None,
                 actor_index: int = -1, persist: bool = True, hists=None, hist_slots=None):
        from appliance.fix import admin
        from appliance.fix import dictionary as dictionary_mod
        from appliance.fix import tls as tls_mod
        from appliance.fix.session import Session, SessionConfig
        self.cfg = gcfg
        self.orders = order_reader
        self.execs = exec_writer
        self.clock = clock_fn
        self.cal = cal if cal is not None else clock.calibration()
        self.logon_hook = admin.logon_hook(gcfg.credentials_file, gcfg.logon_signature, gcfg.signing_key_file)
        self.tls = tls_mod.TlsSettings.from_table(gcfg.tls).client_context() if gcfg.tls else None
        self.instr, self.syms = C.instrument_tables(gcfg.instruments)
        begin, comp = C.session_constants(gcfg.begin_string, gcfg.sender_comp_id, gcfg.target_comp_id)
        self.consts = np.concatenate([np.array([len(begin), len(comp)], np.uint8), begin, comp])
        self.begin, self.comp = begin, comp
        self.scratch = np.zeros((3, R.ORDER_RECORD_SIZE), np.uint8)   # order in, reject out, time cache
        room = C.MAX_MSG + len(begin) + len(comp)
        self.sbuf = np.zeros(room * (gcfg.max_batch + 1), np.uint8)
        self.gst = np.zeros(G_SIZE, np.int64)
        self.gst[G_SESSION_IDX] = gcfg.session_index
        self.gst[G_VENUE] = R.VENUE_IDS[gcfg.venue]
        sdir = getattr(store, "dir", None)
        self.oo = OpenOrderFile(Path(sdir) / "open_orders" if (persist and sdir is not None) else None,
                                gcfg.open_orders, self.gst)
        self.ot = self.oo.ot
        self.sent = np.zeros((SENT_CAP, SM_COLS), np.int64)
        self.unk = np.zeros((UNKNOWN_CAP, 4), np.int64)
        self.batch = np.zeros((gcfg.max_batch + 1, 3), np.int64)
        # telemetry rows (the actor's mapped region, or private ones): order_to_wire,
        # wire_to_ack, tick_to_trade
        self.hists = hists if hists is not None else np.zeros((len(HOPS), hist.ROW), np.int64)
        self.hidx = np.array(hist_slots if hist_slots is not None else range(len(HOPS)), np.int64)
        self.mass_status = gcfg.mass_status and gcfg.begin_string >= "FIX.4.4"
        self.cwords = control_words if control_words is not None else \
            np.zeros(R.CONTROL_BLOCK.itemsize // 8, np.uint64)
        self.actor_index = actor_index
        self.kill_epoch = 0               # last kill epoch acted on
        self.kill_sent = False            # its cancels are out on the current connection
        self.kill_sent_at = 0.0
        self.kill_done = 0
        self._refused_logged = 0
        self._killed_logged = 0
        self._refuse_log_next = 0.0
        self._lost_logged = 0
        self.wparams = wait_params if wait_params is not None else wait.make("spin_yield")
        self.wstate = wait.new_state()
        # the order ring's doorbell: a back-off wait sleeps on it (transport/ring.py)
        self.bells = ring.bell_rows([self.orders.hdr])
        self.send_out = np.zeros(4, np.int64)     # gw_send's out words (SO_*)
        self._gw_send = Bound(gw_send)            # the same objects every batch
        self.rbuf = np.zeros(self.RECV_CAP, np.uint8)
        self.rview = memoryview(self.rbuf)
        self.rpos = np.zeros(RX_N, np.int64)      # rstart, rend (properties) and gw_rx's words
        self.pst = C.new_parser_state(1, R.VENUE_IDS[gcfg.venue], gcfg.session_index)
        self.out = np.zeros((256, R.EXEC_RECORD_SIZE), np.uint8)
        self.row1 = np.zeros((1, R.EXEC_RECORD_SIZE), np.uint8)
        self.store = store
        # the sender and target numbers as compiled code writes them (appliance.group), None:
        # not possible
        self.seq_view = store.sender_view() if hasattr(store, "sender_view") else None
        self.target_view = store.target_view() if hasattr(store, "target_view") else None
        self.fx = Fix(self.orders.hdr, self.orders.data, self.orders.cur, self.execs.hdr,
                      self.execs.data, self.scratch, self.sbuf, self.gst, self.consts, self.instr,
                      self.syms, self.ot, self.cal, self.cwords, self.sent, self.batch, self.hists,
                      self.hidx, self.seq_view if self.seq_view is not None
                      else np.zeros(20, np.uint8))
        self.rx = Rx(self.rbuf, self.rpos, self.pst, self.out, self.unk,
                     self.target_view if self.target_view is not None else np.zeros(20, np.uint8))
        scfg = SessionConfig(begin_string=gcfg.begin_string, sender_comp_id=gcfg.sender_comp_id,
                             target_comp_id=gcfg.target_comp_id, initiator=True,
                             heartbeat_interval=gcfg.heartbeat_s, reset_on_logon=gcfg.reset_on_logon,
                             validate=gcfg.validate)
        dd = dictionary_mod.for_version(gcfg.begin_string) if gcfg.validate else None
        self.session = Session(scfg, store, GatewayApplication(self), dd, message_log, now=clock_fn())
        self.sock: socket.socket | None = None
        self.outbuf = bytearray()
        self.backoff = gcfg.reconnect_min_ms / 1000
        self.next_connect = 0.0
        self.next_timer = 0.0
        self.state = R.SESSION_DOWN
        self._logon_pending = False
        self.reconciling = False
        self.reconcile_deadline = 0.0
        self.last_send_tsc = 0
        self.heartbeat = heartbeat          # control-block heartbeat, called about every 50 ms
        self.next_beat = 0.0
        self.counters = {"connects": 0, "disconnects": 0, "slow_path_msgs": 0, "business_rejects": 0,
                         "session_rejects": 0, "bad_slow_msgs": 0, "reconciles": 0, "status_requests": 0,
                         "kill_cancels": 0, "mass_status_requests": 0, "unknown_cancels": 0,
                         "engine_restarts": 0, "restart_cancels": 0, "unconfirmed": 0}
        # reconciliation asked for by the engine (RT_RECONCILE): an engine restart (its id, kept
        # in the open-order file until answered) or a confirmation only
        self.engine_req = int(self.oo.hdr[H_ENGINE_RESTART])
        self.confirm_req = 0
        self.engine_repeat = 0           # an engine request answered before, published again
        self.cancel_phase = False        # engine restart: the session's orders are being cancelled
        self.cancel_deadline = 0.0
        self.cancel_rounds = 0
        self.mass_cancel_id = 0          # its OrderMassCancelRequest, until the venue's report
        self.started_at = clock_fn()
        self._logged_counts = {}
        self._resume_ring()
        if self.oo.restored:
            log.info("%s: %d working orders restored from %s; they are reconciled after logon",
                     gcfg.name, self.oo.restored, self.oo.path)
        if self.engine_req:
            log.warning("%s: the engine's restart reconciliation (request %d) was not finished: "
                        "every working order of the session is cancelled after logon", gcfg.name,
                        self.engine_req)

    # ---- order ring position ------------------------------------------------------------
    def _resume_ring(self) -> None:
        """Continue the order ring where the last run left it (orders published while this
        gateway was down are then refused with a reject, not skipped), if it is the same ring
        and those records are still in it."""
        region = getattr(self.orders, "region", None)
        if region is None:
            return
        created = int(region.words[shm.W_CREATED_NS])
        head = int(self.orders.hdr[shm.W_HEAD])
        cap = int(self.orders.hdr[shm.W_CAPACITY])
        pos = int(self.oo.hdr[H_RING_POS])
        if int(self.oo.hdr[H_RING_CREATED]) == created and 0 < pos <= head:
            if head - pos >= cap:
                log.error("%s: %d order records published while the gateway was down; the ring holds "
                          "%d: the oldest %d were lost without a reject", self.cfg.name, head - pos,
                          cap, head - pos - cap + 1)
                pos = head - cap + 1
            if pos < head:
                log.warning("%s: %d order records were published while the gateway was down; each is "
                            "answered now (refused unless already sent)", self.cfg.name, head - pos)
            self.orders.cur[ring.CUR_POS] = pos
        self.oo.hdr[H_RING_CREATED] = created
        self.oo.hdr[H_RING_POS] = int(self.orders.cur[ring.CUR_POS])

    def _save_ring_pos(self) -> None:
        self.oo.hdr[H_RING_POS] = int(self.orders.cur[ring.CUR_POS])

    # ---- refusals, rejects from the venue -------------------------------------------------
    def _log_refusals(self, now: float, force: bool = False) -> None:
        g = self.gst
        n = int(g[G_REFUSED]) - self._refused_logged
        if n <= 0 or (now < self._refuse_log_next and not force):
            return
        self._refused_logged = int(g[G_REFUSED])
        self._refuse_log_next = now + 1.0
        reason = int(g[G_LAST_REASON])
        log.warning("%s: %d order record(s) refused and answered with a REJECT (last: ClOrdID %d, "
                    "reason %d %s; session %s)", self.cfg.name, n, int(np.uint64(g[G_LAST_REFUSED])),
                    reason, RJ_NAMES.get(reason, "?"), "ready" if g[G_READY] else "not ready")
        lost = self.orders.lost if hasattr(self.orders, "lost") else 0
        if lost != self._lost_logged:
            log.error("%s: %d order records lost to ring lapping (no reject possible)", self.cfg.name,
                      lost - self._lost_logged)
            self._lost_logged = lost

    def _venue_rejected(self, msg, reason: int) -> None:
        """A session Reject (35=3) or BusinessMessageReject (35=j) of one of our messages: a REJECT
        record for the engine (the order never reached the book), plus a log line."""
        ref = msg.get_int(45)
        text = (msg.get(58) or b"").decode("latin-1")
        key = "session_rejects" if reason == RJ_SESSION_REJECT else "business_rejects"
        self.counters[key] += 1
        j = -1 if ref is None else ref & (SENT_CAP - 1)
        if j < 0 or int(self.sent[j, SM_SEQ]) != ref or self.sent[j, SM_RT] == 0:
            log.warning("%s: %s of our message %s (%s): %s (no order of ours at that MsgSeqNum)",
                        self.cfg.name, "session Reject" if reason == RJ_SESSION_REJECT else
                        "BusinessMessageReject", ref, (msg.get(372) or b"?").decode("latin-1"), text)
            return
        rt, clord, orig, inst = (int(self.sent[j, SM_RT]), int(self.sent[j, SM_CLORD]),
                                 int(self.sent[j, SM_ORIG]), int(self.sent[j, SM_INSTR]))
        self.sent[j, SM_RT] = 0
        log.warning("%s: venue %s our %s ClOrdID %d (MsgSeqNum %d): %s", self.cfg.name,
                    "rejected (35=3)" if reason == RJ_SESSION_REJECT else "business-rejected (35=j)",
                    R.RTYPE_NAMES.get(rt, chr(rt) if 32 < rt < 127 else rt), int(np.uint64(clord)), ref, text)
        if rt == ord("A"):                   # OrderMassStatusRequest
            log.warning("%s: the venue refused OrderMassStatusRequest; reconciling the orders this "
                        "gateway knows one by one from now on", self.cfg.name)
            self.mass_status = False
            return
        if rt == ord("H"):                   # a status request: stop waiting for its answer
            i = ot_find(self.ot, clord)
            if i >= 0 and self.ot[i, OT_PENDING]:
                self.ot[i, OT_PENDING] = 0
                self.gst[G_STATUS_PENDING] -= 1
            return
        if rt == R.RT_MASS_CANCEL or (rt == R.RT_CANCEL and clord & GW_ID_BIT
                                      and (self.kill_epoch or self.cancel_phase)):
            if rt == R.RT_MASS_CANCEL:
                log.warning("%s: mass cancel refused by the venue; cancelling order by order", self.cfg.name)
                self.mass_cancel_id = 0
                self._cancel_each(self.clock(), 7, 0)
            return
        row = self.row1[0]
        row[:] = 0
        rec = row.view(R.REJECT)
        rec[0]["rtype"] = R.RT_REJECT
        rec[0]["venue"] = self.gst[G_VENUE]
        rec[0]["instrument"] = inst
        rec[0]["origin_tsc"] = clock.now(self.cal)
        rec[0]["clord_id"] = np.uint64(clord & 0xFFFFFFFFFFFFFFFF)
        rec[0]["orig_clord_id"] = np.uint64(orig & 0xFFFFFFFFFFFFFFFF)
        rec[0]["session"] = self.cfg.session_index
        rec[0]["reason"] = reason
        rec[0]["is_cancel_reject"] = 1 if rt in (R.RT_CANCEL, R.RT_REPLACE) else 0
        rec[0]["ord_status"] = R.EXEC_REJECTED if rt == R.RT_NEW_ORDER else 0
        rec[0]["text"] = text.encode("latin-1")[:48]
        gw_track(self.row1, 1, self.execs.hdr, self.execs.data, self.ot, self.gst, self.unk, self.cal,
                 self.hists, self.hidx)

    # ---- kill switch ----------------------------------------------------------------------
    def _gwk(self, field: str, value: int) -> None:
        if self.actor_index < 0:
            return
        off = (R.CONTROL_BLOCK.fields["gw_kill"][1] + self.actor_index * R.GW_KILL.itemsize
               + R.GW_KILL.fields[field][1])
        control.store_release_py(self.cwords, off, int(value))

    def _check_kill(self, now: float) -> None:
        """Act on a kill request: block new orders (the compiled step does), cancel every
        working order this gateway knows (mass cancel where the dialect has it), and acknowledge
        in the control block: seen, cancels sent, none left working."""
        w = self.cwords
        if w[control.KILL_OFF // 8] == 0:
            return
        ep = int(w[control.KILL_EPOCH_OFF // 8])
        if ep != self.kill_epoch:
            self.kill_epoch = ep
            self.kill_sent = False
            self.kill_done = 0
            log.warning("%s: kill switch set (epoch %d): no new order passes; cancelling %d working "
                        "order(s)", self.cfg.name, ep, int(self.gst[G_OPEN]))
            self._gwk("seen_epoch", ep)
        if self.kill_done == ep:
            return
        open_n = int(self.gst[G_OPEN])
        if open_n == 0 and not self.reconciling:
            self.kill_sent = True
            self._gwk("working", 0)
            self._gwk("sent_epoch", ep)
            self._gwk("done_time_ns", time.time_ns())
            if self.actor_index >= 0:
                control.actor_ack_kill(self.cwords, self.actor_index, ep)
            self.kill_done = ep
            log.warning("%s: kill epoch %d: no working order left on this session", self.cfg.name, ep)
            return
        if not self.session.logged_on:
            return
        if not self.kill_sent:
            if self.cfg.begin_string >= "FIX.4.4" and self.cfg.mass_cancel_on_kill:
                self._send_mass_cancel(now)
            else:
                self._cancel_each(now, 7, 0)
            self.kill_sent = True
            self.kill_sent_at = now
            self._gwk("working", open_n)
            self._gwk("sent_epoch", ep)
        elif now - self.kill_sent_at >= self.cfg.reconcile_timeout_s:
            log.warning("%s: kill epoch %d: %d order(s) still working after %.1fs; cancelling each",
                        self.cfg.name, ep, open_n, self.cfg.reconcile_timeout_s)
            self._cancel_each(now, 7, 0)
            self.kill_sent_at = now
            self._gwk("working", open_n)

    def _encode_admin_order(self, rec_row, now: float) -> bytes:
        """Encode one order record the gateway makes itself (cancels) with the next MsgSeqNum."""
        seq = self.session.next_seq()
        utc = int(clock.tsc_to_utc_ns(self.cal, clock.now(self.cal)))
        out = np.zeros(C.MAX_MSG + len(self.begin) + len(self.comp), np.uint8)
        k = C.encode_order(rec_row, out, 0, self.begin, self.comp, seq, utc, self.scratch[2], self.instr, self.syms)
        if k < 0:
            raise C.CodecError(f"gateway cancel: {C.E_NAMES.get(k, k)}")
        rt = int(rec_row[R.RTYPE_OFF])
        _note_sent(self.sent, seq, rt, _i64(C.ld_u64(rec_row, C._O_CLORD)),
                   _i64(C.ld_u64(rec_row, C._C_ORIG)) if rt == R.RT_CANCEL else 0,
                   int(C.ld_u32(rec_row, C._O_INSTR)))
        self.session.note_sent(now)
        return out[:k].tobytes()

    def _send_mass_cancel(self, now: float) -> int:
        """OrderMassCancelRequest (all orders of the session) with a gateway-assigned ClOrdID;
        returns that id."""
        row = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
        rec = row.view(R.MASS_CANCEL)
        rec[0]["rtype"] = R.RT_MASS_CANCEL
        mid = self.oo.next_gateway_id()
        rec[0]["clord_id"] = np.uint64(mid)
        rec[0]["session"] = self.cfg.session_index
        rec[0]["scope"] = 7
        self.counters["kill_cancels"] += 1
        log.warning("%s: OrderMassCancelRequest (all orders) sent", self.cfg.name)
        self._send(self._encode_admin_order(row, now))
        return mid

    def _cancel_each(self, now: float, scope: int, instrument: int) -> None:
        """One OrderCancelRequest per working order (all, or those of ``instrument`` for scope 1),
        with gateway-assigned ClOrdIDs."""
        cap = self.ot.shape[0]
        ids = np.zeros(cap, np.int64)
        info = np.zeros((cap, 3), np.int64)
        n = gw_working(self.ot, ids, info)
        row = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
        rec = row.view(R.CANCEL)
        chunks = []
        for clord, (inst, side, qty) in zip(ids[:n], info[:n]):
            if scope == 1 and inst != instrument:
                continue
            row[:] = 0
            rec[0]["rtype"] = R.RT_CANCEL
            rec[0]["instrument"] = inst
            rec[0]["clord_id"] = np.uint64(self.oo.next_gateway_id())
            rec[0]["orig_clord_id"] = np.uint64(int(clord) & 0xFFFFFFFFFFFFFFFF)
            rec[0]["session"] = self.cfg.session_index
            rec[0]["qty"] = max(int(qty), 1)
            rec[0]["side"] = side
            try:
                chunks.append(self._encode_admin_order(row, now))
            except C.CodecError as e:
                log.error("%s: cannot cancel ClOrdID %d: %s", self.cfg.name, int(np.uint64(clord)), e)
        self.store.sync()
        self.counters["kill_cancels"] += len(chunks)
        log.warning("%s: %d OrderCancelRequest(s) sent, one per working order", self.cfg.name, len(chunks))
        if chunks:
            self._send(b"".join(chunks))

    # ---- exec-ring notices --------------------------------------------------------------
    def _publish_session(self, state: int, reconcile_id: int = 0) -> None:
        rec = np.zeros(1, R.SESSION)
        rec[0]["rtype"] = R.RT_SESSION
        rec[0]["venue"] = self.gst[G_VENUE]
        rec[0]["session"] = self.cfg.session_index
        rec[0]["state"] = state
        rec[0]["reconcile_id"] = reconcile_id
        rec[0]["origin_tsc"] = clock.now(self.cal)
        ring.publish(self.execs.hdr, self.execs.data, rec.view(np.uint8).reshape(-1))
        ring.notify(self.execs.hdr)
        self.state = state
        log.info("%s: session %s%s", self.cfg.name, {R.SESSION_UP: "UP", R.SESSION_DOWN: "DOWN",
                                                     R.SESSION_RECONCILED: "RECONCILED"}[state],
                 f" (engine request {reconcile_id})" if reconcile_id else "")

    # ---- connection ---------------------------------------------------------------------
    def _connect(self, now: float) -> None:
        self.next_connect = now + self.backoff
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect((self.cfg.host, self.cfg.port))
        except OSError as e:
            s.close()
            log.info("%s: connect to %s:%d failed: %s (retry in %.2fs)", self.cfg.name, self.cfg.host,
                     self.cfg.port, e, self.backoff)
            self.backoff = min(self.backoff * 2, self.cfg.reconnect_max_ms / 1000)
            return
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            import ssl
            sni = self.cfg.tls.get("SSLServerName") or self.cfg.host
            try:
                s.settimeout(5.0)
                s = self.tls.wrap_socket(s, server_hostname=sni)
            except (OSError, ssl.SSLError) as e:
                s.close()
                log.warning("%s: TLS handshake with %s:%d failed: %s (retry in %.2fs)", self.cfg.name,
                            self.cfg.host, self.cfg.port, e, self.backoff)
                self.backoff = min(self.backoff * 2, self.cfg.reconnect_max_ms / 1000)
                return
            log.info("%s: TLS %s, %s", self.cfg.name, s.version(), s.cipher()[0])
        s.setblocking(False)
        self.sock = s
        self.counters["connects"] += 1
        self.rstart = self.rend = 0
        self.outbuf.clear()
        log.info("%s: connected to %s:%d", self.cfg.name, self.cfg.host, self.cfg.port)
        self._send(self.session.connected(now))

    def _disconnect(self, now: float, why: str) -> None:
        if self.sock is None:
            return
        log.warning("%s: disconnected: %s", self.cfg.name, why)
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None
        self.counters["disconnects"] += 1
        self.session.disconnected(now)
        self.gst[G_READY] = 0
        self.kill_sent = False
        self.reconciling = False
        self.cancel_phase = False
        self.mass_cancel_id = 0
        self._logon_pending = False
        self._publish_session(R.SESSION_DOWN)
        self.next_connect = now + self.backoff

    def _send(self, data) -> None:
        if self.sock is None or len(data) == 0:
            return
        if self.outbuf:
            self.outbuf += data
            self._flush()
            return
        try:
            n = self.sock.send(data)
        except _WOULD_BLOCK:
            n = 0
        except OSError as e:
            self._disconnect(self.clock(), f"send failed: {e}")
            return
        if n < len(data):
            self.outbuf += bytes(data[n:])

    def _flush(self) -> None:
        while self.outbuf and self.sock is not None:
            try:
                n = self.sock.send(self.outbuf)
            except _WOULD_BLOCK:
                break
            except OSError as e:
                self._disconnect(self.clock(), f"send failed: {e}")
                return
            del self.outbuf[:n]
        if len(self.outbuf) > (16 << 20):
            self._disconnect(self.clock(), f"venue not reading: {len(self.outbuf)} bytes queued")

    # ---- receive ------------------------------------------------------------------------
    def _fast_ok(self) -> bool:
        s = self.session
        return (s.logged_on and not s.queue and s.resend_range is None and not s.closing
                and not s.framer.buf)

    def _to_session(self, data: bytes, now: float) -> None:
        self.counters["slow_path_msgs"] += 1
        self._send(self.session.on_bytes(data, now))

    def _received(self, now: float, rx_tsc: int) -> None:
        buf = self.rbuf
        while self.rstart < self.rend:
            if not self._fast_ok():
                data = buf[self.rstart:self.rend].tobytes()
                self.rstart = self.rend
                self._to_session(data, now)
                break
            st = self.pst
            st[C.ST_EXPECT_SEQ] = self.store.next_target
            code = gw_receive(self.fx, buf, self.rstart, self.rend, st, self.out, rx_tsc,
                              self.unk)
            if st[C.ST_EXPECT_SEQ] != self.store.next_target:
                self.store.set_next_target(int(st[C.ST_EXPECT_SEQ]))
                self.session.last_received = now
                self.session.test_request = 0
            self.rstart = int(st[C.ST_POS])
            if code == C.P_SESSION_MSG:
                off, ln = int(st[C.ST_MSG_OFF]), int(st[C.ST_MSG_LEN])
                self._to_session(buf[off:off + ln].tobytes(), now)
                continue
            if code == C.P_OUT_FULL:
                continue
            break
        if self.rstart == self.rend:
            self.rstart = self.rend = 0
        elif self.RECV_CAP - self.rend < self.READ_MAX:
            keep = self.rend - self.rstart
            buf[:keep] = buf[self.rstart:self.rend]
            self.rstart, self.rend = 0, keep
        self._log_counters()

    def _slow_app_message(self, msg) -> None:
        mt = msg.msg_type
        if mt in (b"8", b"9"):
            raw = np.frombuffer(msg.raw, np.uint8)
            if C.decode_app_message(raw, 0, len(raw), self.pst, self.instr, self.syms, self.row1[0],
                                    clock.now(self.cal)):
                gw_track(self.row1, 1, self.execs.hdr, self.execs.data, self.ot, self.gst, self.unk, self.cal,
                 self.hists, self.hidx)
            else:
                self.counters["bad_slow_msgs"] += 1
                log.warning("%s: undecodable %s: %s", self.cfg.name, mt.decode(), msg.raw[:200])
        elif mt == b"j":
            self._venue_rejected(msg, RJ_BUSINESS_REJECT)
        elif mt == b"r":
            log.info("%s: OrderMassCancelReport: %s cancelled (response %s)", self.cfg.name,
                     msg.get(533), msg.get(531))
            if self.mass_cancel_id and msg.get_int(11) == self.mass_cancel_id:
                self.mass_cancel_id = 0          # the venue confirmed the mass cancel
        else:
            from appliance.fix.session import UnsupportedMessageType
            raise UnsupportedMessageType()

    def _log_counters(self) -> None:
        st = self.pst
        for name, idx in (("garbage bytes", C.ST_GARBAGE_BYTES), ("bad checksums", C.ST_BAD_CHECKSUM),
                          ("undecodable reports", C.ST_BAD_MSG), ("unknown symbols", C.ST_UNKNOWN_SYMBOL)):
            v = int(st[idx])
            if v != self._logged_counts.get(name, 0):
                self._logged_counts[name] = v
                log.warning("%s: inbound %s: %d so far", self.cfg.name, name, v)

    # ---- reconciliation -----------------------------------------------------------------
    def _send_mass_status(self, now: float) -> None:
        """OrderMassStatusRequest (35=AF, all orders): the venue reports every working order,
        those nobody here knows included (they are cancelled as their reports arrive)."""
        req = self.oo.next_gateway_id()
        seq = self.session.send_app(b"AF", [(584, b"%d" % req), (585, b"7")])
        _note_sent(self.sent, seq, ord("A"), _i64(req), 0, 0)
        self.counters["mass_status_requests"] += 1
        self._send(self.session.take_output())

    def _cancel_unknown(self, now: float) -> None:
        """Cancel the working orders the venue reported that this gateway does not know."""
        n = int(self.gst[G_UNKNOWN_N])
        self.gst[G_UNKNOWN_N] = 0
        if not self.session.logged_on:
            return
        row = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
        rec = row.view(R.CANCEL)
        chunks = []
        for clord, inst, side, leaves in self.unk[:n]:
            if int(clord) & GW_ID_BIT or not 0 <= inst < len(self.cfg.instruments) or side not in (1, 2):
                log.error("%s: the venue reports working order %d that nobody knows, on an instrument "
                          "or side this session cannot name; cancel it by hand", self.cfg.name,
                          int(np.uint64(int(clord) & 0xFFFFFFFFFFFFFFFF)))
                continue
            row[:] = 0
            rec[0]["rtype"] = R.RT_CANCEL
            rec[0]["instrument"] = inst
            rec[0]["clord_id"] = np.uint64(self.oo.next_gateway_id())
            rec[0]["orig_clord_id"] = np.uint64(int(clord) & 0xFFFFFFFFFFFFFFFF)
            rec[0]["session"] = self.cfg.session_index
            rec[0]["qty"] = max(int(leaves), 1)
            rec[0]["side"] = side
            chunks.append(self._encode_admin_order(row, now))
            # working until the venue confirms the cancel: tracked like our own orders
            ot_insert(self.ot, self.gst, int(clord), int(inst), int(side), max(int(leaves), 1))
        if chunks:
            self.counters["unknown_cancels"] += len(chunks)
            log.warning("%s: %d working order(s) at the venue that nobody here knows: cancelled",
                        self.cfg.name, len(chunks))
            self.store.sync()
            self._send(b"".join(chunks))

    def _take_reconcile_request(self) -> None:
        """The RT_RECONCILE record gw_step stopped at: an engine restart is remembered (and
        persisted) until answered; any other reason asks for a confirmation only."""
        g = self.gst
        g[G_RECONCILE_REQ] = 0
        rid, why = int(g[G_RECONCILE_ID]), int(g[G_RECONCILE_WHY])
        if why == R.RECONCILE_ENGINE_RESTART:
            if rid != 0 and rid == int(self.oo.hdr[H_ENGINE_DONE]):
                self.engine_repeat = rid          # already answered: answer again, no new cycle
                return
            if rid != self.engine_req:
                self.counters["engine_restarts"] += 1
                log.warning("%s: the engine restarted (reconcile request %d): every working order "
                            "of the session is cancelled before it may trade again", self.cfg.name, rid)
            self.engine_req = rid
            self.oo.hdr[H_ENGINE_RESTART] = rid
        else:
            self.confirm_req = rid
            log.info("%s: reconciliation requested by the engine (request %d)", self.cfg.name, rid)

    def _reconcile_requested(self, now: float) -> None:
        """RT_RECONCILE for this session: start reconciling unless a reconciliation is already
        under way (it ends with the cancels the engine asked for, if it asked for them)."""
        self._take_reconcile_request()
        if self.engine_repeat:
            rid, self.engine_repeat = self.engine_repeat, 0
            if self.gst[G_READY] and not self.reconciling:
                self._publish_session(R.SESSION_RECONCILED, rid)
            return
        if self.session.logged_on and not self.reconciling:
            self.gst[G_READY] = 0
            self._start_reconcile(now)

    def _reconcile_id(self) -> int:
        return self.engine_req or self.confirm_req

    def _start_reconcile(self, now: float) -> None:
        self.gst[G_READY] = 0
        self.reconciling = True
        self.cancel_phase = False
        self._publish_session(R.SESSION_UP, self._reconcile_id())
        self.counters["reconciles"] += 1
        if self.mass_status:
            self._send_mass_status(now)
        cap = self.ot.shape[0]
        ids = np.zeros(cap, np.int64)
        info = np.zeros((cap, 3), np.int64)
        n = gw_working(self.ot, ids, info)
        if n == 0:
            self._statuses_done(now)
            return
        self._send_status_requests(now, ids[:n], info[:n], mark=True)

    def _send_status_requests(self, now: float, ids, info, mark: bool) -> None:
        utc = int(clock.tsc_to_utc_ns(self.cal, clock.now(self.cal)))
        out = np.zeros(C.MAX_MSG + len(self.begin) + len(self.comp), np.uint8)
        chunks = []
        for clord, (inst, side, _qty) in zip(ids, info):
            if mark:
                gw_mark_pending(self.ot, self.gst, clord)
            seq = self.session.next_seq()
            k = C.encode_status_request(out, 0, self.begin, self.comp, seq, utc, self.scratch[2],
                                        self.instr, self.syms,
                                        (np.uint64(clord), int(inst), int(side)))
            if k < 0:
                raise C.CodecError(f"status request for {int(np.uint64(clord))}: {C.E_NAMES.get(k, k)}")
            raw = out[:k].tobytes()
            self.session.record_sent(seq, raw, now)
            _note_sent(self.sent, seq, ord("H"), np.int64(clord), 0, int(inst))
            chunks.append(raw)
        self.store.sync()
        self.counters["status_requests"] += len(chunks)
        self.reconcile_deadline = now + self.cfg.reconcile_timeout_s
        log.info("%s: reconciling %d working orders (OrderStatusRequest sent)", self.cfg.name, len(chunks))
        self._send(b"".join(chunks))

    def _check_reconcile(self, now: float) -> None:
        if self.cancel_phase:
            self._check_cancel_phase(now)
        elif self.gst[G_STATUS_PENDING] <= 0:
            self.gst[G_STATUS_PENDING] = 0
            self._statuses_done(now)
        elif now >= self.reconcile_deadline:
            cap = self.ot.shape[0]
            ids = np.zeros(cap, np.int64)
            info = np.zeros((cap, 3), np.int64)
            n = gw_working(self.ot, ids, info)
            pend = [i for i in range(n) if self.ot[ot_find(self.ot, ids[i]), OT_PENDING]]
            log.warning("%s: %d status requests unanswered after %.1fs; asking again", self.cfg.name,
                        len(pend), self.cfg.reconcile_timeout_s)
            self._send_status_requests(now, ids[pend], info[pend], mark=False)

    def _statuses_done(self, now: float) -> None:
        """Every working order's status is confirmed. After an engine restart the engine lost
        them: cancel every order of the session (one OrderMassCancelRequest where the dialect
        has it, else one cancel per order) and answer only once nothing is working."""
        if not self.engine_req:
            self._reconciled()
            return
        self.cancel_phase = True
        self.cancel_rounds = 1
        self.cancel_deadline = now + self.cfg.reconcile_timeout_s
        if self.cfg.begin_string >= "FIX.4.4" and self.cfg.mass_cancel_on_kill:
            self.mass_cancel_id = self._send_mass_cancel(now)
            self.counters["restart_cancels"] += 1
        elif self.gst[G_OPEN] > 0:
            self.counters["restart_cancels"] += int(self.gst[G_OPEN])
            self._cancel_each(now, 7, 0)
        log.warning("%s: engine restart: cancelling the session's %d working order(s)", self.cfg.name,
                    int(self.gst[G_OPEN]))
        self._check_cancel_phase(now)

    def _check_cancel_phase(self, now: float) -> None:
        open_n = int(self.gst[G_OPEN])
        if open_n == 0 and self.mass_cancel_id == 0:
            log.warning("%s: engine restart reconciled: nothing of the session is working", self.cfg.name)
            self._reconciled()
            return
        if now < self.cancel_deadline:
            return
        # not confirmed in time: ask again, order by order (and what the venue knows of them)
        self.cancel_rounds += 1
        self.cancel_deadline = now + self.cfg.reconcile_timeout_s
        self.mass_cancel_id = 0
        cap = self.ot.shape[0]
        ids = np.zeros(cap, np.int64)
        info = np.zeros((cap, 3), np.int64)
        n = gw_working(self.ot, ids, info)
        log.error("%s: engine restart: %d order(s) not confirmed cancelled after %.1fs (round %d); "
                  "cancelling each again; the engine is told and the session stays not ready",
                  self.cfg.name, n, self.cfg.reconcile_timeout_s, self.cancel_rounds)
        for clord, (inst, side, _q) in zip(ids[:n], info[:n]):
            self._unconfirmed(int(clord), int(inst))
        if n:
            self._send_status_requests(now, ids[:n], info[:n], mark=False)
            self._cancel_each(now, 7, 0)

    def _unconfirmed(self, clord: int, inst: int) -> None:
        """REJECT (RJ_GW_UNCONFIRMED) for an order the venue has not confirmed cancelled."""
        self.counters["unconfirmed"] += 1
        row = self.row1[0]
        row[:] = 0
        rec = row.view(R.REJECT)
        rec[0]["rtype"] = R.RT_REJECT
        rec[0]["venue"] = self.gst[G_VENUE]
        rec[0]["instrument"] = inst
        rec[0]["origin_tsc"] = clock.now(self.cal)
        rec[0]["clord_id"] = np.uint64(clord & 0xFFFFFFFFFFFFFFFF)
        rec[0]["orig_clord_id"] = np.uint64(clord & 0xFFFFFFFFFFFFFFFF)
        rec[0]["session"] = self.cfg.session_index
        rec[0]["reason"] = R.RJ_GW_UNCONFIRMED
        rec[0]["is_cancel_reject"] = 1
        rec[0]["text"] = b"engine restart: cancel not confirmed by the venue"
        ring.publish(self.execs.hdr, self.execs.data, row)
        ring.notify(self.execs.hdr)
        self.gst[G_EXECS] += 1

    def _reconciled(self) -> None:
        rid = self._reconcile_id()
        self.reconciling = False
        self.cancel_phase = False
        self.gst[G_READY] = 1
        if self.engine_req:
            # the answer persisted before it is announced: a reader of the record finds the
            # request done, and a gateway that dies in between answers its repeat from here
            self.oo.hdr[H_ENGINE_DONE] = self.engine_req
            self.engine_req = 0
            self.oo.hdr[H_ENGINE_RESTART] = 0
        self._publish_session(R.SESSION_RECONCILED, rid)
        self.confirm_req = 0

    # ---- the loop -----------------------------------------------------------------------
    def _orders_waiting(self) -> bool:
        """Cheap hint from Python (a plain load of the ring's head word, no compiled call): has
        the producer published past our cursor? A stale read only delays to the next loop."""
        return self.orders.hdr[shm.W_HEAD] != self.orders.cur[ring.CUR_POS]

    def _after_send(self, now: float) -> None:
        """Bookkeeping after ``gw_send`` (from :meth:`step`, or as the idle wait ends): the
        store's and the session's view of what went out (:meth:`after_kernel`), the order-ring
        position, what gw_step left for Python (FIX 4.2 mass cancel, an engine's reconcile
        request), refusals to log."""
        out = self.send_out
        if out[SO_N]:
            self.last_send_tsc = int(out[SO_TSC])
            ln, k = int(out[SO_LEN]), int(out[SO_SENT])
            self.after_kernel(now, ln if k != ln else 0, k)
        self._orders_done(now)

    def _orders_slow(self, now: float) -> None:
        """Orders out from Python: a TLS session or bytes queued in ``outbuf``; refused at once
        while the session is not ready (logging on, reconciling)."""
        if self.gst[G_READY]:
            self.gst[G_NEXT_SEQ] = self.store.next_sender
            n_sent = self._step_orders()
            if n_sent:
                self.store.set_next_sender(int(self.gst[G_NEXT_SEQ]))
                self.session.last_sent = now
                self.last_send_tsc = int(clock.now(self.cal))   # telemetry: send() called
                self._send(self.sbuf[:self.gst[G_SEND_LEN]])
                gw_sent(self.batch, n_sent, self.last_send_tsc, self.cal, self.ot, self.hists,
                        self.hidx)
        else:
            self._step_orders()                 # logging on or reconciling: refused at once
            self.gst[G_MASS_PENDING] = 0
        self._orders_done(now)

    def _orders_done(self, now: float) -> None:
        if self.gst[G_MASS_PENDING]:
            self._expand_mass_cancel(now)
        if self.gst[G_RECONCILE_REQ]:
            self._reconcile_requested(now)
        self._save_ring_pos()
        if self.gst[G_REFUSED] != self._refused_logged:
            self._log_refusals(now)

    def _step_orders(self) -> int:
        refused = self.gst[G_REFUSED]
        n = gw_step(self.fx, self.cfg.max_batch)
        if self.gst[G_REFUSED] != refused:
            ring.notify(self.execs.hdr)     # the REJECTs: wake an engine asleep on the exec ring
        return n

    def _expand_mass_cancel(self, now: float) -> None:
        """FIX 4.2: the MASS_CANCEL record gw_step stopped at, as one cancel per order."""
        scope = int(self.gst[G_MASS_PENDING]) - 1
        inst = int(self.gst[G_MASS_INSTR])
        self.gst[G_MASS_PENDING] = 0
        if self.session.logged_on:
            self._cancel_each(now, scope, inst)

    def step(self) -> None:
        """One loop iteration: orders out, bytes in, timers; idles with the wait strategy when
        there was nothing to do. Never blocks for long."""
        now = self.clock()
        if self.heartbeat is not None and now >= self.next_beat:
            self.next_beat = now + 0.05
            self.heartbeat()
        self._check_kill(now)
        busy = self._orders_waiting()
        if self.sock is None:
            self.gst[G_READY] = 0
            if busy:
                self._step_orders()                 # refuses what arrives meanwhile
                self.gst[G_MASS_PENDING] = 0        # nothing to cancel on a dead session
                if self.gst[G_RECONCILE_REQ]:       # the next logon reconciles (and cancels,
                    self._take_reconcile_request()  # after an engine restart)
                    self.engine_repeat = 0
                self._save_ring_pos()
                self._log_refusals(now)
            else:
                wait.idle(self.wparams, self.wstate)
            now = self.clock()
            if now >= self.next_connect:
                self._connect(now)
            return
        if busy:
            fd = self.fast_fd()
            if fd >= 0:
                # encode, the sender number, send(), telemetry: one compiled call
                self.gst[G_NEXT_SEQ] = self.store.next_sender
                self._gw_send(self.fx, fd, self.cfg.max_batch, self.send_out)
                self._after_send(now)
            else:
                self._orders_slow(now)
        if self.sock is None:
            return
        if self.outbuf:
            self._flush()
        try:
            k = self.sock.recv_into(self.rview[self.rend:], min(self.READ_MAX, self.RECV_CAP - self.rend))
        except _WOULD_BLOCK:
            k = -1
        except OSError as e:
            self._disconnect(now, f"recv failed: {e}")
            return
        if k == 0:
            self._disconnect(now, "venue closed the connection")
            return
        if k > 0:
            rx = int(clock.now(self.cal))
            self.rend += k
            self._received(now, rx)
            busy = True
            self.ack_reads()
            if self.gst[G_UNKNOWN_N]:
                self._cancel_unknown(now)
        if busy:
            wait.reset(self.wstate)
        elif self.wparams[wait.P_KIND] == wait.BACKOFF and \
                self.wstate[wait.S_IDLE] >= self.wparams[wait.P_SPINS]:
            # the back-off's sleep, on the order ring's doorbell: the orders it wakes for go
            # out from compiled code as it wakes, before Python runs again
            fd = self.fast_fd()
            if fd >= 0:
                self.gst[G_NEXT_SEQ] = self.store.next_sender
            if gw_idle_send(self.wparams, self.wstate, self.fx, self.bells, fd,
                            self.cfg.max_batch, self.send_out) >= 0:
                self._after_send(self.clock())
        else:
            wait.idle(self.wparams, self.wstate)
        if self._logon_pending:
            self._logon_pending = False
            self._start_reconcile(now)
        if self.reconciling:
            self._check_reconcile(now)
        if now >= self.next_timer:
            self.next_timer = now + 0.05
            self._send(self.session.on_timer(now))
            self._log_refusals(now)
        if self.session.logged_on:
            self.backoff = self.cfg.reconnect_min_ms / 1000
        if self.sock is not None and self.session.closing:
            self._flush()
            self._disconnect(now, "session closed the connection")

    def ack_reads(self) -> None:
        """ACK what was read now (module docstring: ACKs): TCP_QUICKACK 1 sends the pending ACK,
        0 returns the socket to delayed ACKs. Plain TCP with ``ack_reads`` only."""
        if self.sock is None or self.tls is not None or not self.cfg.ack_reads:
            return
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        except OSError:
            pass                # the next recv()/send() reports a dead socket

    # ---- the one-process layout (appliance.group) --------------------------------------
    def fast_fd(self) -> int:
        """The socket compiled code may send order batches on by itself (gw_step, the sender
        number through ``seq_view``, ``send()``, gw_sent), or -1: then order records are left
        to :meth:`step`. Only a plain-TCP session that is logged on and reconciled, with nothing
        queued in ``outbuf`` and no admin work pending (FIX 4.2 mass cancel, engine reconcile
        request), on a store whose sender number compiled code can write."""
        if (self.sock is None or self.tls is not None or self.seq_view is None
                or not self.gst[G_READY] or self.outbuf or not self.session.logged_on
                or self.session.closing or self.gst[G_MASS_PENDING] or self.gst[G_RECONCILE_REQ]):
            return -1
        return self.sock.fileno()

    def fast_rx(self) -> bool:
        """May compiled code read the socket and take in-sequence execution reports by itself
        (:func:`gw_rx`)? Only while :meth:`fast_fd` allows sending, on a store whose target
        number compiled code can write, with the session layer holding nothing (no queued or
        partial message, no resend in progress)."""
        return self.target_view is not None and self._fast_ok()

    def before_kernel(self) -> None:
        """The sender number compiled code continues from (Python may have sent admin messages),
        and the target number it expects (the session layer may have taken messages)."""
        self.gst[G_NEXT_SEQ] = self.store.next_sender
        self.pst[C.ST_EXPECT_SEQ] = self.store.next_target

    def note_rx_seq(self, now: float) -> None:
        """The target number compiled code reached (:func:`gw_rx` wrote it into the store's
        mapping): the store's and the session's view of it. First thing after a kernel call,
        before anything here can write the seqnums file from the store's numbers."""
        n = int(self.pst[C.ST_EXPECT_SEQ])
        if n != self.store.next_target:
            self.store.note_next_target(n)
            self.session.last_received = now
            self.session.test_request = 0

    def after_kernel_rx(self, now: float) -> None:
        """Bookkeeping after compiled code read the socket (:func:`gw_rx`): :meth:`note_rx_seq`;
        then what it left to Python: the end of the stream or a socket error, a message for the
        session layer (and the bytes after it), unknown working orders to cancel. After
        :meth:`after_kernel` (a batch sent in part is queued before anything else is sent)."""
        st = self.pst
        self.note_rx_seq(now)
        p = self.rpos
        if self.sock is None:                   # after_kernel dropped the session (send failed)
            p[RX_STATUS] = p[RX_SESSION] = 0
            self.rstart = self.rend = 0
            return
        status = int(p[RX_STATUS])
        if status:
            p[RX_STATUS] = 0
            self._disconnect(now, "venue closed the connection" if status < 0
                             else f"recv failed: {os.strerror(status)}")
            return
        if p[RX_SESSION]:
            p[RX_SESSION] = 0
            off, ln = int(st[C.ST_MSG_OFF]), int(st[C.ST_MSG_LEN])
            self._to_session(self.rbuf[off:off + ln].tobytes(), now)
            if self.sock is None:
                self.rstart = self.rend = 0
                return
            self._received(now, int(p[RX_TSC]))         # the bytes after it
        if self.gst[G_UNKNOWN_N]:
            self._cancel_unknown(now)
        self._log_counters()

    def after_kernel(self, now: float, send_len: int = 0, sent: int = 0) -> None:
        """Bookkeeping after compiled code sent batches: the store's and the session's view of
        what went out, the order-ring position; ``send_len`` > 0: the last batch did not go out
        whole (``sent`` bytes did, or ``-errno``): the rest is queued, or the session dropped."""
        n = int(self.gst[G_NEXT_SEQ])
        if n != self.store.next_sender:
            self.store.note_next_sender(n)
            self.session.last_sent = now
        self._save_ring_pos()
        if send_len > 0:
            if sent >= 0 or -sent in (errno.EAGAIN, errno.EINTR):
                self.outbuf += bytes(self.sbuf[max(sent, 0):send_len])
            else:
                self._disconnect(now, f"send failed: {os.strerror(-sent)}")

    def run(self, stop) -> None:
        self._publish_session(R.SESSION_DOWN)
        while not stop():
            self.step()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self._send(self.session.logout("gateway stopping"))
                self._flush()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.exception("%s: logout on close failed", self.cfg.name)
            self._disconnect(self.clock(), "gateway stopped")
        self._log_refusals(self.clock(), force=True)
        self._save_ring_pos()
        self.ot = None
        self.oo.close()


def warm(gcfg: "GatewayConfig") -> None:
    """Compile and run every kernel of the gateway once on scratch data (local rings, a scratch
    open-order table): a NewOrderSingle encoded, an ExecutionReport parsed and tracked, a status
    request, the table's insert/find/delete."""
    cal = clock.calibration()
    instr, syms = C.instrument_tables(gcfg.instruments)
    begin, comp = C.session_constants(gcfg.begin_string, gcfg.sender_comp_id, gcfg.target_comp_id)
    consts = np.concatenate([np.array([len(begin), len(comp)], np.uint8), begin, comp])
    ohdr, odata = ring.local_ring(R.ORDER_RECORD_SIZE, 16)
    ehdr, edata = ring.local_ring(R.EXEC_RECORD_SIZE, 16)
    ocur = ring.local_cursor(ohdr)
    scratch = np.zeros((3, R.ORDER_RECORD_SIZE), np.uint8)
    sbuf = np.zeros((C.MAX_MSG + len(begin) + len(comp)) * 2, np.uint8)
    gst = np.zeros(G_SIZE, np.int64)
    gst[G_READY] = 1
    gst[G_NEXT_SEQ] = 1
    ot = np.zeros((16, OT_COLS), np.int64)
    cwords = np.zeros(R.CONTROL_BLOCK.itemsize // 8, np.uint64)
    sent = np.zeros((16, SM_COLS), np.int64)
    unk = np.zeros((4, 4), np.int64)
    batch = np.zeros((4, 3), np.int64)
    hists = np.zeros((len(HOPS), hist.ROW), np.int64)
    hidx = np.arange(len(HOPS), dtype=np.int64)
    o = np.zeros(1, R.NEW_ORDER)
    o[0]["rtype"], o[0]["clord_id"], o[0]["price"], o[0]["qty"] = R.RT_NEW_ORDER, 7, 1, 1
    o[0]["side"], o[0]["ord_type"], o[0]["tif"] = R.SIDE_BUY, R.ORD_LIMIT, R.TIF_GTC
    ring.publish(ohdr, odata, o.view(np.uint8).reshape(-1))
    fx = Fix(ohdr, odata, ocur, ehdr, edata, scratch, sbuf, gst, consts, instr, syms, ot, cal,
             cwords, sent, batch, hists, hidx, np.zeros(20, np.uint8))
    n = gw_step(fx, 4)
    gw_sent(batch, n, clock.now(cal), cal, ot, hists, hidx)
    gw_send(fx, -1, 4, np.zeros(4, np.int64))      # the ring is empty now: nothing is sent
    gw_idle_send(wait.make("spin"), wait.new_state(), fx, ring.bell_rows([ohdr]), -1, 4,
                 np.zeros(4, np.int64))
    sym = bytes(syms[0, :instr[0, C.SYM_LEN]]).decode()
    body = (f"35=8\x0134=1\x0149=X\x0152=20240101-00:00:00.000\x0156=Y\x0111=7\x0117=E\x01"
            f"150=I\x0139=0\x0155={sym}\x0154=1\x01151=0\x0114=0\x01").encode()
    head = f"8={gcfg.begin_string}\x019={len(body)}\x01".encode() + body
    msg = head + b"10=%03d\x01" % (sum(head) % 256)
    buf = np.frombuffer(msg, np.uint8).copy()
    st = C.new_parser_state(1)
    out = np.zeros((4, R.EXEC_RECORD_SIZE), np.uint8)
    gw_receive(fx, buf, 0, len(buf), st, out, 0, unk)
    C.decode_app_message(buf, 0, len(buf), st, instr, syms, out[0], 0)
    C.encode_status_request(sbuf, 0, begin, comp, 2, 0, scratch[2], instr, syms,
                            (np.uint64(7), 0, 1))
    ids = np.zeros(16, np.int64)
    info = np.zeros((16, 3), np.int64)
    gw_working(ot, ids, info)
    gw_mark_pending(ot, gst, 7)
    ot_delete(ot, gst, 7)
    # the Python side of the gateway's own orders (cancels on a kill, mass cancel; a venue's
    # unknown working orders): encoded and noted from Python
    row = np.zeros(R.ORDER_RECORD_SIZE, np.uint8)
    rec = row.view(R.CANCEL)
    rec[0]["rtype"], rec[0]["clord_id"], rec[0]["orig_clord_id"] = R.RT_CANCEL, 8, 7
    rec[0]["qty"], rec[0]["side"] = 1, R.SIDE_BUY
    C.encode_order(row, sbuf, 0, begin, comp, 3, 0, scratch[2], instr, syms)
    _note_sent(sent, 3, int(row[R.RTYPE_OFF]), _i64(C.ld_u64(row, C._O_CLORD)),
               _i64(C.ld_u64(row, C._C_ORIG)), int(C.ld_u32(row, C._O_INSTR)))
    _note_sent(sent, 4, R.RT_MASS_CANCEL, _i64(8), 0, 0)


class FixGatewayActor(Actor):
    """The FIX order gateway actor (``appliance fix gateway --session NAME``): creates the exec
    ring, waits for the engine's order ring, then runs ``Gateway.step`` in the actor loop."""

    kind = control.ACTOR_FIX

    def __init__(self, cfg, session: str, wait_rings_s: float = 60.0):
        self.g = load_session_config(cfg, session)
        super().__init__(cfg, f"fix.{self.g.name}", log)
        self.wait_rings_s = wait_rings_s
        self.execs = self.orders = self.store = self.mlog = self.gw = None

    def warm(self) -> None:
        warm(self.g)

    def open(self) -> None:
        from appliance.fix import admin
        from appliance.fix import tls as tls_mod
        from appliance.fix.store import FileStore, MessageLog, StoreError
        g = self.g
        try:                # secrets and TLS files first: a bad one is refused before any waiting
            admin.logon_hook(g.credentials_file, g.logon_signature, g.signing_key_file)
            if g.tls:
                tls_mod.TlsSettings.from_table(g.tls).client_context()
        except (OSError, ValueError) as e:
            raise ActorError(f"{g.name}: {e}") from None
        # our output first, then wait for the engine's order ring (the engine waits for ours)
        self.execs = ring.RingWriter.create(g.exec_ring, R.EXEC_RECORD_SIZE,
                                            self.cfg.rings.exec_capacity, self.shm_dir)
        self.orders = self.wait_for(
            f"the engine's order ring {g.order_ring!r}",
            lambda: ring.RingReader.attach(g.order_ring, consumer=self.name[:16], start="latest",
                                           shm_dir=self.shm_dir), self.wait_rings_s)
        try:
            self.store = FileStore(g.store_dir)
            self.mlog = MessageLog(Path(g.store_dir) / "messages.log")
        except StoreError as e:
            raise ActorError(str(e)) from None
        except OSError as e:
            raise ActorError(f"session store {g.store_dir}: {e.strerror or e}") from None

    def start(self) -> None:
        g = self.g
        try:
            self.gw = Gateway(g, self.orders, self.execs, self.store,
                              wait_params=wait.from_config(self.cfg.wait, self.core),
                              message_log=self.mlog, control_words=self._words, actor_index=self._idx,
                              hists=self.tm.hists if self.tm is not None else None,
                              hist_slots=[self.tm.hist(h) for h in HOPS] if self.tm is not None else None)
        except (OSError, ValueError) as e:      # credential / key files, TLS settings, store
            raise ActorError(str(e)) from None
        self.gw._publish_session(R.SESSION_DOWN)
        self.log.info("%s: gateway %s -> %s:%d (%s), orders from ring %s, execs to ring %s",
                      g.name, g.sender_comp_id, g.host, g.port, g.target_comp_id, g.order_ring,
                      g.exec_ring)

    def loop(self) -> None:
        # Gateway.step is a few microseconds when idle: heartbeat / status about every 50 ms
        gw = self.gw
        next_tick = 0.0
        while not self.stopping:
            gw.step()
            now = gw.clock()
            if now >= next_tick:
                next_tick = now + 0.05
                self.tick()

    def status(self) -> dict:
        if self.gw is None:
            return {}
        gw = self.gw
        return {"session": self.g.name, "state": int(gw.state), "sent": int(gw.gst[G_SENT]),
                "refused": int(gw.gst[G_REFUSED]), "execs": int(gw.gst[G_EXECS]),
                "counters": dict(gw.counters)}

    def counters(self) -> dict:
        if self.gw is None:
            return {}
        gw = self.gw
        out = {"sent": int(gw.gst[G_SENT]), "refused": int(gw.gst[G_REFUSED]),
               "execs": int(gw.gst[G_EXECS])}
        out.update(gw.counters)
        return out

    def close(self) -> None:
        gw = self.gw
        if gw is not None:
            gw.close()
            self.log.info("%s: gateway stopped: sent %d, refused %d, execs %d, %s; wait %s",
                          self.g.name, gw.gst[G_SENT], gw.gst[G_REFUSED], gw.gst[G_EXECS],
                          gw.counters, wait.counters(gw.wstate))
        for x in (self.store, self.mlog, self.orders, self.execs):
            if x is not None:
                x.close()


def run_from_args(args) -> int:
    from appliance import config as config_mod
    try:
        cfg = config_mod.load(getattr(args, "config", None))
        actor = FixGatewayActor(cfg, args.session, float(getattr(args, "wait_rings", 60.0)))
    except config_mod.ConfigError as e:
        print(f"appliance fix gateway: {e}", file=sys.stderr)
        return 2
    return actor.run()
