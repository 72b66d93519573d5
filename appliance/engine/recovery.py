"""Engine restart recovery: a durable snapshot, replay of every exec record after it, then
reconciliation with every FIX session before anything new is sent.

The engine keeps no working order across its own crash (cancel on restart, as cancel-on-
disconnect does): what survives is money and risk state, rebuilt from durable records.

Snapshot (``<state_dir>/engine.snapshot``, 0640, written atomically and fsynced)::

    ledger      positions (qty, cost basis, realised, fees, round-trip tallies, fills, volume)
                per instrument, account tallies (realised, fees, round trips, loss streak),
                balances per venue and asset (and the configured starting balances they grew
                from), book marks
    risk        the breaker's whole state: RUNNING / REDUCING / PAUSED / HALTED, its cause, trip
                time, scheduled reset, peak equity, the loss-streak base, the reject window
    strategies  per-strategy, per-leg position / cash / fees (the engine's PnL table)
    OMS         the next ClOrdID, the orders live at the time and the most recently finished
                ones (to adopt after a restart), the newest exec ids (duplicate detection)
    cursors     per exec ring: its identity (creation time of the region), the writer
                generation, and the position of the next record the state does NOT contain;
                the order ring's identity and head

Capture and write: the engine actor copies and encodes these small arrays between two compiled
steps (``Snapshotter.capture``: ~35 us back to back, 200-300 us on a loaded 2-core VM when
taken after 200 ms of compiled stepping, cold caches: ``appliance bench snapshot``) when
something changed (an exec cursor, the order ring head, the breaker, the ledger's fills) and at
most every ``[engine] snapshot_ms``; a background thread writes the bytes
(temporary file, fsync, rename, directory fsync, as ``fsutil.write_atomic``: a crash leaves the
old or the new file, never a torn one; done as bare syscalls, which release the GIL, so the
thread holds it for microseconds). Both are measured (``status()["snapshot"]``).

File format (little-endian): ``b"APPSNAP1"``, u32 header length, u32 crc32 of everything after
these 16 bytes, the header (JSON: version, names of instruments / assets / strategies, cursors,
and for each array its dtype, shape, offset and size), then the arrays' bytes.

Restart (``Recovery.restore``, in the engine's ``start`` before anything goes live):

1. load the snapshot and put its state back (instruments, assets and strategies matched by
   name; a strategy's restored position goes through its own ``on_fill`` so its inventory
   follows); balances = snapshot + (configured now - configured then);
2. adopt the orders it names and every NEW_ORDER / REPLACE the engine published on its order
   ring after it (``orphans.adopt``: terminal rows, so late reports reach ledger and strategy);
3. replay every exec record after each ring's cursor through the live ``handle_exec`` (merged
   across rings by publish TSC): from the exec ring while it still holds them, else from the
   recorder's journal (``appliance.journal``, ``appliance.journal_dir``), checked contiguous
   and, where the ring and the journal overlap, identical. Fills of orders nobody can name any
   more are booked to the ledger by instrument (``orphans.book_fill``, live path too);
4. when completeness cannot be proven (snapshot unreadable or missing while the order ring shows
   a previous run, exec records neither in the ring nor in the journal, an exec ring re-created
   since the snapshot, a position in an instrument the config no longer trades), the engine
   refuses to trade: the kill switch is set and persisted with source ``recovery`` and the
   reason (``appliance status`` shows it; ``appliance kill --reset --confirm`` resumes once an
   operator checked the positions), and the reason is logged;
5. RECONCILING: one RT_RECONCILE record per FIX session (reason RECONCILE_ENGINE_RESTART,
   ``clord_id`` = a fresh request id) and the session stays not ready until its gateway
   publishes SESSION_RECONCILED naming that id (``kernels.ST_RECON_ID``); the gateway cancels
   every working order of the session first. Unanswered requests are published again every
   ``[engine] ack_timeout_ms``, and at once when a gateway answers no request (it attached to
   the order ring after the request was published, or restarted, and reconciled by itself).
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from numba import njit

from appliance import fsutil
from appliance.engine import oms as O
from appliance.engine import orphans, positions, risk
from appliance.engine import strategies as strat
from appliance.engine.kernels import (MAX_SESSIONS, PNL_POS, ST_RECON_ID, ST_RISK_STATE,
                                      ST_SESS_READY, ST_SESS_STALE, handle_exec)
from appliance.engine.strategies import base
from appliance.transport import records, ring, shm

log = logging.getLogger("appliance.engine.recovery")

FILE_NAME = "engine.snapshot"
MAGIC = b"APPSNAP1"
VERSION = 1
RECENT_ORDERS = 256        # finished orders kept in a snapshot besides the live ones
RECENT_EXEC_IDS = 1024     # newest exec ids kept in a snapshot (reports published again)
NO_STRATEGY = 0xFFFFFFFF   # an adopted order whose strategy is not in this config


class SnapshotError(RuntimeError):
    """A snapshot file cannot be read (message says which and why)."""


def snapshot_path(state_dir) -> Path:
    return Path(state_dir) / FILE_NAME


# ------------------------------------------------------------------------------------ the format
_DESCR: dict = {}


def _descr(dt: np.dtype):
    d = _DESCR.get(dt)
    if d is None:
        d = _DESCR[dt] = np.lib.format.dtype_to_descr(dt)
    return d


def encode_body(meta: dict, arrays: dict) -> tuple[int, bytes]:
    """The header (JSON) and the arrays' bytes: ``(header length, body)`` (see :func:`frame`)."""
    specs, parts, off = [], [], 0
    for name, a in arrays.items():
        b = np.ascontiguousarray(a).tobytes()
        specs.append({"name": name, "dtype": _descr(a.dtype), "shape": list(a.shape),
                      "offset": off, "nbytes": len(b)})
        parts.append(b)
        off += len(b)
    head = json.dumps(dict(meta, version=VERSION, arrays=specs)).encode()
    return len(head), head + b"".join(parts)


def frame(hlen: int, body: bytes) -> bytes:
    """The file's bytes: magic, header length, crc32 of the body, the body."""
    return MAGIC + struct.pack("<II", hlen, zlib.crc32(body)) + body


def encode(meta: dict, arrays: dict) -> bytes:
    """The snapshot file's bytes (see the module docstring)."""
    return frame(*encode_body(meta, arrays))


def decode(raw: bytes) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a snapshot file's bytes; SnapshotError when it is not one."""
    if len(raw) < 16 or raw[:8] != MAGIC:
        raise SnapshotError("not an engine snapshot (bad magic)")
    hlen, crc = struct.unpack_from("<II", raw, 8)
    body = memoryview(raw)[16:]
    if zlib.crc32(body) != crc:
        raise SnapshotError("checksum mismatch (damaged file)")
    if hlen > len(body):
        raise SnapshotError("header runs past the end of the file")
    try:
        meta = json.loads(bytes(body[:hlen]))
    except ValueError as e:
        raise SnapshotError(f"header is not JSON: {e}") from None
    if meta.get("version") != VERSION:
        raise SnapshotError(f"version {meta.get('version')!r}, this engine reads {VERSION}")
    arrays = {}
    data = body[hlen:]
    try:
        for s in meta["arrays"]:
            dt = np.lib.format.descr_to_dtype(_tuples(s["dtype"]))
            a = np.frombuffer(data[s["offset"]:s["offset"] + s["nbytes"]], dt)
            arrays[s["name"]] = a.reshape(s["shape"]).copy()
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"array table damaged: {e}") from None
    return meta, arrays


def _tuples(descr):
    """JSON turned the dtype descriptor's tuples into lists: back to what numpy wants."""
    if isinstance(descr, list):
        return [tuple(_tuples(x) if isinstance(x, list) else x for x in f) for f in descr]
    return descr


def load(path) -> tuple[dict, dict] | None:
    """The snapshot at ``path``, None when there is none; SnapshotError when unreadable."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(f"{path}: {e.strerror or e}") from None
    try:
        return decode(raw)
    except SnapshotError as e:
        raise SnapshotError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------ compiled replay
@njit(cache=True, nogil=True, _nrt=False)
def replay_execs(recs, n, books, strats, gate, tel, io):
    """Apply the first ``n`` exec records of ``recs`` (uint8[N, 128]) through ``handle_exec``,
    in order, as the live loop would have; returns how many were applied."""
    for k in range(n):
        handle_exec(recs[k], books, strats, gate, tel, io)
    return n


@njit(cache=True, nogil=True, _nrt=False)
def restore_position(i, strats, leg, q):
    """Strategy ``i``'s restored position ``q`` (lots, + long) on ``leg``, told to it as one fill
    through its own ``on_fill`` (so whatever it derives from its fills, e.g. inventory, follows)."""
    if q > 0:
        strat.on_fill(i, strats, leg, np.int64(records.SIDE_BUY), np.int64(1), q, np.int64(0))
    elif q < 0:
        strat.on_fill(i, strats, leg, np.int64(records.SIDE_SELL), np.int64(1), -q, np.int64(0))


def _ring_id(region) -> tuple[int, int]:
    return int(region.words[shm.W_CREATED_NS]), int(region.words[shm.W_WRITER_GEN])


# --------------------------------------------------------------------------------- the snapshot
class Snapshotter:
    """Captures the engine's durable state between steps and writes it from a background thread.

    ``execs``: [(ring name, RingReader)]; ``orders``: the engine's order RingWriter."""

    def __init__(self, es, path, period_s: float, orders, execs, config_balances, log_=None):
        self.es = es
        self.path = Path(path)
        self.period_s = period_s
        self.orders = orders
        self.execs = list(execs)
        self.config_balances = np.asarray(config_balances, np.int64).copy()
        self.log = log_ or log
        cap = es.oms.orders.shape[0]
        self._ord_buf = np.zeros(min(cap, es.oms.live.size + RECENT_ORDERS), orphans.ADOPT)
        self._ids_buf = np.zeros(RECENT_EXEC_IDS, np.uint64)
        self._last_key = None
        self._next = 0.0
        self._seq = 0
        self._orders_created = _ring_id(orders.region)[0]
        self._dir_ok = False
        self._static = {
            "pid": os.getpid(), "instruments": list(es.instrument_names),
            "assets": list(es.asset_names),
            "strategies": [{"name": nm, "id": int(es.meta[i, base.M_ID]),
                            "kind": int(es.meta[i, base.M_KIND]),
                            "legs": [list(es.book_keys[int(es.meta[i, base.M_BOOK + leg])])
                                     for leg in range(int(es.meta[i, base.M_NLEGS]))]}
                           for i, nm in enumerate(es.names)]}
        self._cv = threading.Condition()
        self._pending = None
        self._busy = False
        self._stop = False
        self._thread = None
        # measurements
        self.captures = 0
        self.capture_ns_total = 0
        self.capture_ns_max = 0
        self.writes = 0
        self.write_ns_max = 0
        self.write_ns_total = 0
        self.write_ns_last = 0
        self.bytes = 0
        self.last_written_ns = 0
        self.errors = 0
        self.last_error = ""

    # -- capture (in the engine loop) ------------------------------------------------------------
    def _key(self) -> tuple:
        st = self.es.rk.state
        return (tuple(int(r.cur[ring.CUR_POS]) for _, r in self.execs),
                int(ring.head(self.orders.hdr)), int(st[risk.R_STATE]), int(st[risk.R_TRIPS]),
                int(st[risk.R_RESETS]), int(self.es.led.acct[positions.A_FILLS]))

    def maybe(self, now: float) -> bool:
        """Capture and hand to the writer when due: the period passed, something changed and the
        writer is free. Returns True when a snapshot was captured."""
        if now < self._next or self._busy:
            return False
        key = self._key()
        if key == self._last_key:
            self._next = now + self.period_s
            return False
        self._next = now + self.period_s
        snap = self.capture(key)
        with self._cv:
            self._pending = snap
            self._busy = True
            self._cv.notify()
        return True

    def capture(self, key=None) -> bytes:
        """The durable state now (between two steps, so it matches the cursors), as the file's
        bytes: the writer thread only writes them (Python work there would hold the GIL the loop
        needs, and on a busy host the thread can be preempted while holding it)."""
        t0 = time.perf_counter_ns()
        es = self.es
        om = es.oms
        key = key or self._key()
        n = int(orphans.collect_orders(om.orders, om.live, om.agg, om.retired, om.ctr,
                                       self._ord_buf, RECENT_ORDERS))
        k = int(orphans.recent_exec_ids(om.seen_fifo, om.ctr, self._ids_buf))
        self._seq += 1
        meta = dict(self._static, seq=self._seq, time_ns=time.time_ns(),
                    next_clord=int(om.ctr[O.C_NEXT_ID]),
                    order_ring={"created_ns": self._orders_created, "head": key[1]},
                    exec=[{"name": name, "created_ns": _ring_id(r.region)[0],
                           "gen": _ring_id(r.region)[1], "pos": pos}
                          for (name, r), pos in zip(self.execs, key[0])])
        raw = encode(meta, {"pos": es.led.pos, "acct": es.led.acct, "balances": es.led.balances,
                            "config_balances": self.config_balances, "risk_state": es.rk.state,
                            "marks": es.marks, "pnl": es.pnl, "orders": self._ord_buf[:n],
                            "exec_ids": self._ids_buf[:k]})
        self._last_key = key
        dt = time.perf_counter_ns() - t0
        self.captures += 1
        self.capture_ns_total += dt
        self.capture_ns_max = max(self.capture_ns_max, dt)
        return raw

    # -- writing (background thread) -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._pending is None and self._stop:
                    return
                snap, self._pending = self._pending, None
            self._write(snap)
            with self._cv:
                self._busy = self._pending is not None
                self._cv.notify_all()

    def _write(self, raw: bytes) -> None:
        t0 = time.perf_counter_ns()
        try:
            self._replace(raw)
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                self.log.error("engine snapshot not written to %s: %s (%d failures)", self.path,
                               e.strerror or e, self.errors)
            self.last_error = str(e)
            return
        dt = time.perf_counter_ns() - t0
        self.writes += 1
        self.bytes = len(raw)
        self.write_ns_last = dt
        self.write_ns_total += dt
        self.write_ns_max = max(self.write_ns_max, dt)
        self.last_written_ns = time.time_ns()

    def _replace(self, raw: bytes) -> None:
        """The snapshot, durably (file and directory fsynced); the directory is made once."""
        fsutil.write_atomic(self.path, raw, 0o640, fsync=True, make_dir=not self._dir_ok)
        self._dir_ok = True

    def write_now(self) -> None:
        """Capture and write synchronously (start-up, shutdown), after the writer is idle."""
        with self._cv:
            while self._busy and self._thread is not None and self._thread.is_alive():
                self._cv.wait(1.0)
        self._write(self.capture())

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def status(self) -> dict:
        return {"path": str(self.path), "captures": self.captures, "writes": self.writes,
                "capture_us_mean": round(self.capture_ns_total / self.captures / 1e3, 1)
                if self.captures else None,
                "capture_us_max": round(self.capture_ns_max / 1e3, 1),
                "write_ms_last": round(self.write_ns_last / 1e6, 2),
                "write_ms_max": round(self.write_ns_max / 1e6, 2),
                "bytes": self.bytes, "written_ns": self.last_written_ns,
                "errors": self.errors, "last_error": self.last_error}


# ------------------------------------------------------------------------------------- recovery
class Recovery:
    """Restart recovery of one engine (see the module docstring).

    ``es``: the EngineState (attached to its order ring); ``orders``: the order RingWriter;
    ``orders_head_at_open``: its head when the engine opened it (> 0: a previous run wrote it);
    ``execs``: [(ring name, RingReader)] at their attach position; ``journal_dir``: the
    recorder's journal; ``sessions``: FIX session indexes to reconcile."""

    def __init__(self, es, state_dir, orders, orders_head_at_open: int, execs, journal_dir,
                 sessions, retry_s: float, log_=None):
        self.es = es
        self.path = snapshot_path(state_dir)
        self.orders = orders
        self.orders_head_at_open = int(orders_head_at_open)
        self.execs = list(execs)
        self.journal_dir = journal_dir
        self.sessions = sorted({int(s) for s in sessions if 0 <= int(s) < MAX_SESSIONS})
        self.retry_s = retry_s
        self.log = log_ or log
        self.config_balances = es.led.balances.copy()
        self.state = "starting"
        self.problems: list[str] = []     # why trading is refused (empty: state proven)
        self.report: dict = {}
        self.requests: dict[int, int] = {}      # session -> request id awaited
        self.requested_at: dict[int, float] = {}
        self.reconciled_at: dict[int, float] = {}
        self.stale_seen = 0                     # ST_SESS_STALE when the requests were last published
        self.republished = 0                    # requests published again at once (stale answers)
        self.started = time.monotonic()
        self._strategy_map: dict[int, int] = {}

    # -- restore ---------------------------------------------------------------------------------
    def restore(self, now_ns: int | None = None) -> dict:
        """Load, adopt, replay (see the module docstring). Returns the report; ``problems``
        lists why the state is not proven (then the caller refuses to trade)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        rep = self.report
        try:
            snap = load(self.path)
        except SnapshotError as e:
            snap = None
            self._problem(f"snapshot unreadable ({e})")
        if snap is None and not self.problems:
            if self.orders_head_at_open > 0:
                self._problem(f"no snapshot ({self.path}) but the order ring holds "
                              f"{self.orders_head_at_open} records of a previous run: its "
                              f"positions are unknown")
            else:
                rep["snapshot"] = None
                self.log.info("no engine snapshot (%s) and no previous run: starting flat",
                              self.path)
        meta = arrays = None
        if snap is not None:
            meta, arrays = snap
            self._apply(meta, arrays, now_ns)
        self._scan_orders(meta, now_ns)
        self._replay(meta)
        if self.problems:
            self.state = "refused"
            for p in self.problems:
                self.log.error("recovery: %s", p)
        else:
            self.state = "reconciling"
        return rep

    def _problem(self, text: str) -> None:
        self.problems.append(text)

    def _apply(self, meta: dict, a: dict, now_ns: int) -> None:
        es = self.es
        rep = self.report
        rep["snapshot"] = {"seq": meta.get("seq"), "time_ns": meta.get("time_ns"),
                           "age_s": round((now_ns - int(meta.get("time_ns", now_ns))) / 1e9, 3)}
        for key, dt in (("pos", positions.POSITION), ("orders", orphans.ADOPT)):
            if a[key].dtype != dt:
                self._problem(f"snapshot array {key} has another layout ({a[key].dtype}): "
                              f"written by another version")
                return
        # instruments
        col = {nm: ii for ii, nm in enumerate(es.instrument_names)}
        pos, marks = a["pos"], a["marks"]
        for k, nm in enumerate(meta["instruments"]):
            ii = col.get(nm)
            if ii is None:
                if int(pos[k]["qty"]) != 0:
                    self._problem(f"the snapshot holds a position of {int(pos[k]['qty'])} lots in "
                                  f"{nm}, which this config no longer trades")
                continue
            es.led.pos[ii] = pos[k]
            if k < len(marks):
                es.marks[ii] = marks[k]
        n = min(len(es.led.acct), len(a["acct"]))
        es.led.acct[:n] = a["acct"][:n]
        # balances: the snapshot's, moved by what the operator changed in the config since
        acol = {nm: k for k, nm in enumerate(es.asset_names)}
        bal, cbal = a["balances"], a["config_balances"]
        for k, nm in enumerate(meta["assets"]):
            j = acol.get(nm)
            if j is None:
                if bal[:, k].any():
                    self.log.warning("recovery: asset %s has a balance in the snapshot but no "
                                     "column in this config: dropped", nm)
                continue
            es.led.balances[:, j] = bal[:, k] + (self.config_balances[:, j] - cbal[:, k])
        # the breaker, whole
        rs = a["risk_state"]
        n = min(len(es.rk.state), len(rs))
        es.rk.state[:n] = rs[:n]
        es.stats[ST_RISK_STATE] = -1                  # publish it on the first occasion
        # strategies: by name, kind and legs
        by_name = {nm: i for i, nm in enumerate(es.names)}
        pnl = a["pnl"]
        restored = []
        for k, s in enumerate(meta["strategies"]):
            i = by_name.get(s["name"])
            legs = [list(es.book_keys[int(es.meta[i, base.M_BOOK + leg])])
                    for leg in range(int(es.meta[i, base.M_NLEGS]))] if i is not None else None
            if i is None or int(es.meta[i, base.M_KIND]) != s["kind"] or legs != s["legs"]:
                if k < len(pnl) and pnl[k, :, PNL_POS].any():
                    self.log.warning("recovery: strategy %s (position %s) is not in this config "
                                     "with the same kind and legs: its PnL row is dropped (the "
                                     "ledger keeps the positions)", s["name"],
                                     pnl[k, :, PNL_POS].tolist())
                continue
            self._strategy_map[int(s["id"])] = int(es.meta[i, base.M_ID])
            es.pnl[i] = pnl[k]
            for leg in range(len(legs)):
                # the strategy's own inventory follows its restored position
                restore_position(i, es.strats, leg, int(es.pnl[i, leg, PNL_POS]))
            restored.append(s["name"])
        rep["strategies"] = restored
        # OMS: ids, exec-id dedup, the orders it can still name
        es.oms.ctr[O.C_NEXT_ID] = max(int(es.oms.ctr[O.C_NEXT_ID]), int(meta["next_clord"]))
        ids = a["exec_ids"]
        orphans.restore_exec_ids(es.oms, ids, len(ids))
        adopted = 0
        for o in a["orders"]:
            nm = meta["instruments"][int(o["ii"])] if 0 <= int(o["ii"]) < len(meta["instruments"]) else None
            ii = col.get(nm, -1)
            if ii < 0:
                continue
            r = orphans.adopt(es.oms, es.led, o["clord_id"], ii, int(o["side"]), int(o["price"]),
                              int(o["qty"]), int(o["cum_qty"]),
                              self._strategy_map.get(int(o["strategy"]), NO_STRATEGY), now_ns)
            adopted += r >= 0
        rep["adopted_from_snapshot"] = adopted
        self.log.info("recovery: snapshot %d of %s restored (age %.1f s): positions %s, risk %s, "
                      "%d strategies, %d orders adopted", meta.get("seq", 0), self.path,
                      rep["snapshot"]["age_s"],
                      {nm: int(es.led.pos[ii]["qty"]) for ii, nm in enumerate(es.instrument_names)},
                      risk.state_name(es.rk), len(restored), adopted)

    def _scan_orders(self, meta, now_ns: int) -> None:
        """Adopt every NEW_ORDER / REPLACE on the order ring after the snapshot; keep the next
        ClOrdID above every id the ring holds."""
        es = self.es
        w = self.orders
        head = int(ring.head(w.hdr))
        cap = w.data.shape[0]
        lo = max(0, head - cap + 1)
        start = lo
        same = meta is not None and meta["order_ring"]["created_ns"] == _ring_id(w.region)[0]
        if meta is not None:
            if same:
                start = int(meta["order_ring"]["head"])
                if start < lo:
                    self.log.warning("recovery: %d order records after the snapshot were "
                                     "overwritten in the order ring: fills of those orders go "
                                     "to the ledger by instrument only", lo - start)
                    start = lo
            else:
                self.log.warning("recovery: the order ring was re-created since the snapshot: "
                                 "fills of orders sent after it go to the ledger by instrument "
                                 "only")
        adopted, top = 0, 0
        rows = w.data
        for seq in range(lo, head):
            rec = rows[seq % cap]
            if int(records.record_seqs(rec)) != seq:
                continue
            rt = int(rec[records.RTYPE_OFF])
            cid = int(rec[records.ORDER_CLORD_OFF:][:8].view(np.uint64)[0])
            top = max(top, cid)
            if seq < start or meta is None or rt not in (records.RT_NEW_ORDER, records.RT_REPLACE):
                continue
            r = rec.view(records.RECORD_DTYPES[rt])[0]
            v, ins = int(r["venue"]), int(r["instrument"])
            ii = int(es.book_map[v, ins]) if v < es.book_map.shape[0] and ins < es.book_map.shape[1] else -1
            if ii < 0:
                continue
            row = orphans.adopt(es.oms, es.led, np.uint64(cid), ii, int(r["side"]),
                                int(r["price"]), int(r["qty"]), 0,
                                self._strategy_map.get(int(r["strategy"]), NO_STRATEGY), now_ns)
            adopted += row >= 0
        if top:
            es.oms.ctr[O.C_NEXT_ID] = max(int(es.oms.ctr[O.C_NEXT_ID]), top + 1)
        self.report["adopted_from_order_ring"] = adopted

    # -- replay ----------------------------------------------------------------------------------
    def _replay(self, meta) -> None:
        es = self.es
        cursors = {c["name"]: c for c in (meta or {}).get("exec", [])}
        parts, per_ring = [], {}
        for name, r in self.execs:
            recs, info = self._collect(name, r, cursors.get(name), meta is not None)
            per_ring[name] = info
            if len(recs):
                parts.append(recs)
        self.report["replayed"] = per_ring
        if not parts:
            return
        allr = np.concatenate(parts)
        tsc = allr[:, records.PUBLISH_TSC_OFF:records.PUBLISH_TSC_OFF + 8].copy().view(np.uint64)[:, 0]
        allr = np.ascontiguousarray(allr[np.argsort(tsc, kind="stable")])
        fills0 = int(es.led.acct[positions.A_FILLS])
        replay_execs(allr, allr.shape[0], es.books, es.strats, es.gate, es.tel, es.attached_io())
        self.report["replayed_fills"] = int(es.led.acct[positions.A_FILLS]) - fills0
        self.log.info("recovery: replayed %d exec records (%d fills) after the snapshot: %s",
                      allr.shape[0], self.report["replayed_fills"],
                      {k: {kk: v[kk] for kk in ("from", "to", "ring", "journal")} for k, v in per_ring.items()})

    def _collect(self, name, r, cur, have_snapshot: bool):
        """The exec records of ring ``name`` after the snapshot's cursor (ring first, journal for
        what it no longer holds); leaves the reader at the ring's head."""
        created, _gen = _ring_id(r.region)
        rs = r.data.shape[1]
        cap = r.data.shape[0]
        head = int(ring.head(r.hdr))
        info = {"from": None, "to": head, "ring": 0, "journal": 0}
        none = np.zeros((0, rs), np.uint8)
        if not have_snapshot:
            # nothing of this ring is in any state: a fresh start (reports of orders nobody
            # sent are not ours to book), or a refusal already named
            r.cur[ring.CUR_POS] = head
            return none, info
        old = []
        if cur is not None and int(cur["created_ns"]) != created:
            # the ring was re-created (shared memory wiped, new geometry): what the old one
            # published after the cursor can only come from the journal, and nothing proves
            # the journal saw its end
            old = self._old_generation(name, int(cur["pos"]))
            info["journal"] = len(old)
            self._problem(f"exec ring {name} was re-created since the snapshot: of the old "
                          f"ring's records after position {int(cur['pos'])}, {len(old)} were "
                          f"found in the journal and nothing proves there were no more")
            cur = None
        if cur is None:
            if not old:
                self.log.warning("recovery: exec ring %s is not in the snapshot: replaying it "
                                 "from its first record", name)
            start = 0
        else:
            start = int(cur["pos"])
            if start > head:
                self._problem(f"exec ring {name}: the snapshot's position {start} is past the "
                              f"ring's head {head}")
                r.cur[ring.CUR_POS] = head
                return none, info
        info["from"] = start
        # the ring's part: drain from the start (a lapped start resumes at the oldest record)
        r.cur[ring.CUR_POS] = start
        lost0 = int(r.cur[ring.CUR_LOST])
        buf = np.zeros((cap + 64, rs), np.uint8)
        got = []
        while True:
            k = int(ring.drain(r.hdr, r.data, r.cur, buf, buf.shape[0]))
            if k == 0:
                break
            got.append(buf[:k].copy())
        r.cur[ring.CUR_LOST] = lost0          # the lap was ours to resolve, not live loss
        from_ring = np.concatenate(got) if got else none
        first = (int(records.record_seqs(from_ring[0])) if len(from_ring)
                 else int(r.cur[ring.CUR_POS]))
        info["to"] = int(r.cur[ring.CUR_POS])
        info["ring"] = len(from_ring)
        pre = np.concatenate(old) if old else none
        if first <= start:
            return np.concatenate([pre, from_ring]), info
        # records start..first-1 are gone from the ring: the recorder's journal
        from_j, why = self._from_journal(name, start, first,
                                         from_ring[0] if len(from_ring) else None)
        info["journal"] += len(from_j)
        if why:
            self._problem(f"exec ring {name}: records {start}..{first - 1} ({first - start}) are "
                          f"no longer in the ring (capacity {cap}) and {why}")
        else:
            self.log.warning("recovery: exec ring %s lapped the snapshot's position: %d records "
                             "%d..%d read from the journal in %s", name, first - start, start,
                             first - 1, self.journal_dir)
        return np.concatenate([pre, from_j, from_ring]), info

    def _old_generation(self, name, pos: int) -> list:
        """Records of a re-created ring's previous generation after ``pos``, from the journal:
        the frames from the one holding ``pos`` up to the first RESET (the new generation)."""
        from appliance.journal import FRAME_DATA, FRAME_RESET, Journal, JournalError
        out = []
        try:
            j = Journal(self.journal_dir)
            if name not in j.rings():
                return out
            started = False
            for jf, fi in j.frames(name):
                if fi.kind == FRAME_RESET and started:
                    break
                if fi.kind != FRAME_DATA:
                    continue
                if not started:
                    if not fi.first_seq <= pos < fi.first_seq + fi.count:
                        continue
                    started = True
                rows = jf.read_frame(fi)
                seqs = records.record_seqs(rows)
                out.append(rows[seqs >= pos])
        except (JournalError, OSError) as e:
            self.log.error("recovery: journal %s unreadable: %s", self.journal_dir, e)
        return out

    def _from_journal(self, name, a: int, b: int, overlap):
        """Records with sequences a..b-1 of ring ``name`` from the journal, and why they are
        not all there ("" when they are: contiguous, and equal to the ring where they overlap)."""
        from appliance.journal import Journal, JournalError
        rs = records.EXEC_RECORD_SIZE
        try:
            j = Journal(self.journal_dir)
            if name not in j.rings():
                return np.zeros((0, rs), np.uint8), f"the journal ({self.journal_dir}) has no " \
                                                    f"records of ring {name}"
            by_seq = {}
            check = None
            for rows in j.batches(a, ring=name):
                seqs = records.record_seqs(rows)
                if int(seqs[0]) > b and check is not None:
                    break                 # past what is wanted (the journal is in ring order)
                for k in range(len(rows)):
                    s = int(seqs[k])
                    if a <= s < b:
                        by_seq[s] = rows[k]
                    elif s == b:
                        check = rows[k]
        except (JournalError, OSError) as e:
            return np.zeros((0, rs), np.uint8), f"the journal ({self.journal_dir}) cannot be " \
                                                f"read: {e}"
        have = [s for s in range(a, b) if s in by_seq]
        out = np.stack([by_seq[s] for s in have]) if have else np.zeros((0, rs), np.uint8)
        if len(have) != b - a:
            return out, (f"the journal ({self.journal_dir}) holds only {len(have)} of them")
        if overlap is not None and check is not None and not np.array_equal(check, overlap):
            return np.zeros((0, rs), np.uint8), ("the journal's record at the ring's oldest "
                                                 "sequence differs from the ring's (another "
                                                 "generation of the ring)")
        return out, ""

    # -- reconciliation --------------------------------------------------------------------------
    def request_reconcile(self, now: float) -> None:
        """One RT_RECONCILE (engine restart) per session; each session is not ready until its
        gateway answers that request."""
        es = self.es
        es.stats[ST_SESS_READY:ST_SESS_READY + MAX_SESSIONS] = 0
        es.stats[ST_RECON_ID:ST_RECON_ID + MAX_SESSIONS] = 0
        self.stale_seen = int(es.stats[ST_SESS_STALE])
        for s in self.sessions:
            rid = int(es.oms.ctr[O.C_NEXT_ID])
            es.oms.ctr[O.C_NEXT_ID] = rid + 1
            self.requests[s] = rid
            es.stats[ST_RECON_ID + s] = rid
            self._publish(s, rid, now)
        if self.sessions:
            self.log.info("RECONCILING: asked FIX session(s) %s to cancel every working order "
                          "and confirm (requests %s); nothing is sent there before they answer",
                          self.sessions, [self.requests[s] for s in self.sessions])

    def _publish(self, s: int, rid: int, now: float) -> None:
        rec = np.zeros(1, records.RECONCILE)
        rec[0]["rtype"] = records.RT_RECONCILE
        rec[0]["clord_id"] = rid
        rec[0]["session"] = s
        rec[0]["reason"] = records.RECONCILE_ENGINE_RESTART
        ring.publish(self.orders.hdr, self.orders.data, rec.view(np.uint8).reshape(-1))
        ring.notify(self.orders.hdr)
        self.requested_at[s] = now

    def periodic(self, now: float) -> None:
        """Sessions that answered; requests published again when unanswered for ``retry_s``, or
        at once when a gateway published a SESSION_RECONCILED that answers no request
        (``ST_SESS_STALE`` grew): that gateway attached to the order ring after the request (it
        reads from the newest record on) or restarted, so it never saw it. Publishing a
        request again is harmless: a gateway already working on it, or done with it, answers
        it once."""
        es = self.es
        stale = int(es.stats[ST_SESS_STALE])
        if stale != self.stale_seen:
            self.stale_seen = stale
            again = [s for s, rid in self.requests.items()
                     if not (int(es.stats[ST_RECON_ID + s]) == 0 and es.stats[ST_SESS_READY + s])]
            for s in again:
                self._publish(s, self.requests[s], now)
            if again:
                self.republished += len(again)
                self.log.info("a FIX gateway reconciled without the engine's request (it came up "
                              "after it): request(s) for session(s) %s published again", again)
        for s, rid in list(self.requests.items()):
            if int(es.stats[ST_RECON_ID + s]) == 0 and es.stats[ST_SESS_READY + s]:
                del self.requests[s]
                self.reconciled_at[s] = now
                self.log.info("FIX session %d reconciled (request %d) after %.2f s: trading "
                              "there", s, rid, now - self.started)
            elif now - self.requested_at.get(s, now) >= self.retry_s:
                self.log.warning("FIX session %d has not answered reconcile request %d for "
                                 "%.1f s: publishing it again", s, rid, now - self.started)
                self._publish(s, rid, now)
        if self.state == "reconciling" and not self.requests:
            self.state = "done"

    def status(self) -> dict:
        return {"state": self.state, "problems": list(self.problems),
                "waiting_for_sessions": sorted(self.requests),
                "requests_republished": self.republished,
                "reconciled_after_s": {str(s): round(t - self.started, 3)
                                       for s, t in self.reconciled_at.items()},
                **self.report}


def follow_exec_writer(r) -> bool:
    """An exec ring's writer (a FIX gateway) restarted: the region was reopened with its
    sequence, so the cursor stays where it is (every record is read once: fills are money).
    Returns True when the cursor had to move (the ring went backwards)."""
    r.region.gen_at_open = int(r.region.words[shm.W_WRITER_GEN])
    head = int(ring.head(r.hdr))
    if int(r.cur[ring.CUR_POS]) > head:
        r.cur[ring.CUR_POS] = head
        return True
    return False


def warm(es, io) -> None:
    """Compile the recovery kernels with the live types (``EngineState`` attached to ``io``)."""
    recs = np.zeros((1, records.EXEC_RECORD_SIZE), np.uint8)
    replay_execs(recs, 0, es.books, es.strats, es.gate, es.tel, io)
    buf = np.zeros(4, orphans.ADOPT)
    om = es.oms
    orphans.collect_orders(om.orders, om.live, om.agg, om.retired, om.ctr, buf, 2)
    ids = np.zeros(4, np.uint64)
    orphans.recent_exec_ids(om.seen_fifo, om.ctr, ids)
    orphans.restore_exec_ids(es.oms, ids, 0)
    orphans.adopt(es.oms, es.led, np.uint64(0), 0, records.SIDE_BUY, 1, 1, 0, NO_STRATEGY, 0)
    f = np.zeros(records.EXEC_RECORD_SIZE, np.uint8)
    orphans.book_fill(es.oms, es.led, es.book_map, f)
    restore_position(0, es.strats, 0, 0)
