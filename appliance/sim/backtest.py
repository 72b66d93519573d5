"""``appliance backtest PATH --venue NAME``: the production engine against the exchange simulator.

Input (PATH):

- a venue recording (``X.ws.N.0`` with its sibling ``X.0`` / ``X.http.N.0``, or ``X.jsonl.zst``):
  turned into md records by the venue's own production feed code (:mod:`appliance.venues.replay`:
  parse, book sync, snapshots), every record stamped with its recorded receive time (ns);
- a journal written by the recorder (a directory of ``*.zst-journal`` files or one file): the
  ``md.<venue>`` ring's records as they were published; event time is their origin TSC converted
  with ``--tsc-hz`` (default: this host's measured TSC rate rounded to 1 MHz, so a journal
  recorded here replays identically in every process; give the recording host's rate otherwise).

The loop (:func:`run_events`, one compiled call per chunk of events, no Python per event) merges
five event sources in time order (ties in this order):

1. the exchange simulator applies the next md record at its recorded time (queue positions,
   trades and the book moving through our resting orders fill them);
2. orders whose entry latency elapsed reach the simulator (matching, acks, rejects, fills);
3. responses whose response latency elapsed reach the engine: ``kernels.handle_exec``
   (OMS, ledger, strategy ``on_fill``, breaker);
4. the md record reaches the engine after the feed latency: ``kernels.check_kill`` and
   ``kernels.handle_md`` (books, strategies, the risk gate, the OMS, order records);
5. the strategy timer, as the engine's ``step`` runs it (``check_stuck``, ``on_timer``,
   ``reconcile`` of strategies left dirty, e.g. waiting for an ack): ``timer_ms`` of event time
   after its last run, once something reached the engine since then (a timer with nothing new
   to see is skipped, so idle stretches cost nothing; a request stuck past ``ack_timeout_ms``
   in such a stretch is noticed at the next event).

Order records the engine writes to its (in-process) order ring go to the simulator with an entry
latency; the engine runs on an event-time clock (``clock.event_calibration``: ``clock.now`` is the
time of the event being processed), so throttles, ack timeouts, cooldowns and the breaker's reset
all run on event time. The kill switch and the max-loss halt act on a private control block.

Determinism: the same input, config and seed give the same stream of order and exec records. The
report's ``sha256`` covers, for every order the engine sent and every exec record it received, the
event time (int64) and the 128-byte record with its ring-owned words (``ver``, ``publish_tsc``)
zeroed. Clock reads never enter that stream.

Report keys: events (md records), events_per_s (md records / s of the compiled loop), l2, trades,
orders (new + replace + cancel records sent), new, replaces, cancels, acks, rejects (by reason:
venue reject texts and risk-gate denials), fills, maker_fills, taker_fills, volume (lots), fees,
round_trips, win_rate, realized_pnl, unrealized_pnl, total_pnl, max_drawdown, sharpe (mean / stdev
of the net PnL of closed round trips), positions, risk_state, sim counters, sha256. Money is in
the quote currency of the traded instruments (``quote``); with instruments quoted in different
currencies the money totals are null and ``pnl_by_quote`` holds them per currency.

Without ``--config`` the packaged ``appliance/sim/backtest.toml`` is used: the risk gate of the
packaged default (with throttles for each recorded venue), the sim's market-making strategy for
each shipped recording and the simulator settings. With ``--config`` every section comes from that
file; its ``[[strategies]]`` must trade the venue. Instrument grids and assets come from the file's
``[[instruments]]`` entries of the venue when it has them, else from the md records (a recording
names its instruments and grids; a journal needs ``[[instruments]]`` entries). The file is parsed
with ``config.parse``: the live validators (which want every strategy's instrument registered
and the FIX sessions configured) do not apply, the engine state built here checks the rest.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.engine import kernels as K
from appliance.engine import positions
from appliance.engine.state import LP_ACK_TIMEOUT_NS, LP_TIMER_TSC
from appliance.sim import matching as M
from appliance.sim.backtest_kernels import (AX_BOOK, AX_N, AX_POS, AX_REAL, AX_T, AX_UNREAL,
                                              BT_KILLS, BT_MAXDD, BT_MK_N, BT_N, BT_PLOT,
                                              BT_RT_SEEN, BT_RT_WINS, BT_TAPE_N, BT_KX, BTF_N,
                                              BT_TIMER_ARM, BT_TIMERS,
                                              BTF_RT_SUM, BTF_RT_SUMSQ, MK_CAP, RC_DONE,
                                              RC_NAMES, RC_SIM_FULL, RC_TAPE_FULL, TAPE_CAP,
                                              TAPE_MARGIN, Run, pnl_parts, run_events)
from appliance.transport import clock, records, ring

PACKAGED_CONFIG = Path(__file__).with_name("backtest.toml")


class BacktestError(RuntimeError):
    """Bad input or an impossible setup; the message is one line for the user."""


# =============================================================================================
# input
# =============================================================================================
@dataclass
class MdInput:
    venue: str
    path: str
    kind: str                     # "recording" | "journal"
    records: np.ndarray           # uint8[N, 64]
    times: np.ndarray             # int64[N], event time ns, non-decreasing
    symbols: list                 # instrument id -> venue symbol
    grids: dict = field(default_factory=dict)    # symbol -> (tick_e8, lot_e8, tick str, lot str)
    counters: dict = field(default_factory=dict)
    valid_books: int = 0          # books that became valid at least once


def _grid_e8(dec: int, step: int, what: str, sym: str) -> int:
    if dec > 8:
        raise BacktestError(f"{sym}: {what} grid has {dec} decimals; the engine's ledger works in "
                            f"1e-8 units")
    return step * 10 ** (8 - dec)


def _time_column(recs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(recs[:, records.ORIGIN_TSC_OFF:records.ORIGIN_TSC_OFF + 8]).view(np.int64)[:, 0]


def _count_valid(recs: np.ndarray) -> int:
    st = recs[:, records.RTYPE_OFF] == records.RT_BOOK_STATUS
    if not st.any():
        return 0
    rows = recs[st]
    valid = rows[:, records.BOOK_STATUS_STATUS_OFF] == records.BOOK_VALID
    o = records.INSTRUMENT_OFF
    instr = np.ascontiguousarray(rows[:, o:o + 4]).view(np.uint32)[:, 0]
    return int(len(np.unique(instr[valid])))


def load_recording(path: str, venue: str, symbols: list | None = None) -> MdInput:
    from appliance.venues import common, recording, registry, replay

    try:
        registry.module(venue)
    except registry.UnknownVenue as e:
        raise BacktestError(str(e)) from None
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise BacktestError(f"{path}: empty file")
    chunks = []
    st = {}

    def drain(feed):
        if "cur" not in st:
            st["cur"] = ring.local_cursor(feed.writer.hdr, ring.START_OLDEST)
            st["buf"] = np.zeros((1 << 14, records.MD_RECORD_SIZE), np.uint8)
        while True:
            n = ring.drain(feed.writer.hdr, feed.writer.data, st["cur"], st["buf"], st["buf"].shape[0])
            if n:
                chunks.append(st["buf"][:n].copy())
            if n < st["buf"].shape[0]:
                break
        if st["cur"][ring.CUR_LOST]:
            raise BacktestError(f"{path}: one frame produced more md records than the replay "
                                f"ring holds")

    def hook(feed, ts, frame):
        drain(feed)
        return frame

    try:
        feed = replay.run(path, venue, ring_capacity=1 << 18, symbols=symbols, on_frame_hook=hook)
    except (recording.RecordingError, common.InstrumentError, OSError, ValueError) as e:
        raise BacktestError(f"{path} (read as a {venue} recording): {e}") from None
    drain(feed)
    recs = np.concatenate(chunks) if chunks else np.zeros((0, records.MD_RECORD_SIZE), np.uint8)
    grids = {}
    for ins in feed.instruments:
        grids[ins.symbol] = (_grid_e8(ins.price_dec, ins.price_step, "price", ins.symbol),
                             _grid_e8(ins.qty_dec, ins.qty_step, "quantity", ins.symbol),
                             ins.tick, ins.lot)
    times = np.maximum.accumulate(_time_column(recs)) if len(recs) else np.zeros(0, np.int64)
    return MdInput(venue, str(path), "recording", recs, np.ascontiguousarray(times),
                   [ins.symbol for ins in feed.instruments], grids, feed.counters.as_dict(),
                   _count_valid(recs))


def default_tsc_hz() -> int:
    cal = clock.calibration()
    return int(round(int(cal[clock.C_HZ]) / 1e6)) * 1_000_000


def load_journal(path: str, venue: str, symbols: list | None, tsc_hz: int | None) -> MdInput:
    from appliance import journal as J

    try:
        jr = J.Journal(path, strict=True)
        ring_name = f"md.{venue}"
        if ring_name not in jr.rings():
            raise BacktestError(f"{path}: the journal has no {ring_name} ring (has: "
                                f"{', '.join(jr.rings()) or 'none'})")
        parts = list(jr.batches(ring=ring_name))
        gaps = jr.gaps(ring_name)
    except J.JournalError as e:
        raise BacktestError(f"{path}: {e}") from None
    recs = np.concatenate(parts) if parts else np.zeros((0, records.MD_RECORD_SIZE), np.uint8)
    if recs.shape[1] != records.MD_RECORD_SIZE:
        raise BacktestError(f"{path}: ring {ring_name} holds {recs.shape[1]}-byte records, "
                            f"not md records")
    if symbols is None:
        raise BacktestError(f"{path}: a journal does not name its instruments: give a --config "
                            f"with the [[instruments]] entries of {venue} it recorded (in id order)")
    hz = tsc_hz or default_tsc_hz()
    # TSC -> ns relative to the first record: exact integer arithmetic, reproducible for a hz
    if len(recs):
        t0 = int(_time_column(recs)[0])
        rel = (_time_column(recs) - t0).astype(np.int64)
        times = (rel // hz) * 1_000_000_000 + (rel % hz) * 1_000_000_000 // hz
        times = np.maximum.accumulate(times)
    else:
        times = np.zeros(0, np.int64)
    return MdInput(venue, str(path), "journal", np.ascontiguousarray(recs),
                   np.ascontiguousarray(times.astype(np.int64)), list(symbols), {},
                   {"gaps": len(gaps), "lost": sum(g.count for g in gaps)}, _count_valid(recs))


def is_journal(path: str) -> bool:
    p = Path(path)
    if p.is_dir():
        return True
    from appliance.journal.format import FILE_SUFFIX
    return p.name.endswith(FILE_SUFFIX)


def load_input(path: str, venue: str, symbols: list | None = None,
               tsc_hz: int | None = None) -> MdInput:
    """The md records of a recording or a journal (see the module docstring)."""
    from appliance.venues import registry
    if venue not in registry.VENUES:
        raise BacktestError(f"unknown venue {venue!r}; one of: {', '.join(registry.VENUES)}")
    p = Path(path)
    if not p.exists():
        raise BacktestError(f"{path}: no such file or directory")
    if p.is_file() and p.stat().st_size == 0:
        raise BacktestError(f"{path}: empty file")
    if is_journal(path):
        md = load_journal(path, venue, symbols, tsc_hz)
    else:
        md = load_recording(path, venue, symbols)
    if len(md.records) == 0:
        raise BacktestError(f"{path}: no market data for {venue} in this input")
    if md.valid_books == 0:
        raise BacktestError(f"{path}: no book ever became valid (no snapshot the {venue} feed "
                            f"could sync from): nothing to trade against")
    return md


# =============================================================================================
# configuration
# =============================================================================================
@dataclass
class Setup:
    cfg: object
    strategies: list
    engine: dict
    risk: dict
    sim: M.Settings
    source: str


def load_setup(config_path: str | None, venue: str) -> Setup:
    from appliance import config as config_mod
    import tomllib
    path = config_path or str(PACKAGED_CONFIG)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise BacktestError(f"cannot read config {path}: {e.strerror}") from None
    try:
        cfg = config_mod.parse(tomllib.loads(raw.decode()), path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BacktestError(f"{path}: not valid TOML: {e}") from None
    except config_mod.ConfigError as e:
        raise BacktestError(f"{path}: {e}") from None
    tables = cfg.extra.get("strategies", [])
    if not isinstance(tables, list):
        raise BacktestError(f"{path}: strategies: expected an array of tables ([[strategies]])")
    mine = []
    for t in tables:
        if not isinstance(t, dict):
            raise BacktestError(f"{path}: strategies: expected tables")
        legs = [t.get("venue")] if "venue" in t else list(t.get("venues") or [])
        if venue in legs:
            if any(v != venue for v in legs):
                raise BacktestError(f"{path}: strategy {t.get('name', t.get('kind'))!r} trades "
                                    f"{', '.join(map(str, legs))}: a backtest replays one venue")
            mine.append(t)
    if not mine:
        raise BacktestError(f"{path}: no [[strategies]] entry trades {venue}: the backtest would "
                            f"have nothing to do")
    sim_t = cfg.extra.get("sim", {})
    if not isinstance(sim_t, dict):
        raise BacktestError(f"{path}: sim: expected a table")
    try:
        st = M.settings(sim_t.get("exchange"))
    except M.SimConfigError as e:
        raise BacktestError(f"{path}: {e}") from None
    engine_t = dict(cfg.extra.get("engine", {}) or {})
    if "instruments" in engine_t:
        raise BacktestError(f"{path}: engine.instruments: an instrument's grid and assets are its "
                            f"[[instruments]] entry (tick, lot, base, quote)")
    risk_t = cfg.extra.get("risk", {}) or {}
    if not risk_t:
        raise BacktestError(f"{path}: no [risk] table: the risk gate would deny every order")
    return Setup(cfg, mine, engine_t, risk_t, st, path)


# =============================================================================================
# the backtest
# =============================================================================================
class Backtest:
    """One backtest: md input + setup -> engine state, simulator, the loop, the report."""

    def __init__(self, md: MdInput, setup: Setup, plot: bool = False):
        from appliance.engine.state import EngineState
        from appliance.engine.kernels import EngineError
        from appliance.engine.strategies.base import StrategyConfigError
        from appliance.config import ConfigError

        self.md = md
        self.setup = setup
        venue = md.venue
        settings = dict(setup.engine)
        grids = {}
        registry = setup.cfg.instruments_of(venue) if setup.cfg is not None else []
        for ins in registry:
            if ins.tick_e8 <= 0 or ins.lot_e8 <= 0:
                continue              # finer than 1e-8: the ledger cannot count it (refused below if traded)
            grids[ins.key] = {"tick_e8": ins.tick_e8, "lot_e8": ins.lot_e8,
                              "base": ins.base, "quote": ins.quote}
        traded = set()
        for t in setup.strategies:
            syms = [t.get("symbol")] if "symbol" in t else list(t.get("symbols") or [])
            for s in syms:
                if s not in md.symbols:
                    raise BacktestError(f"strategy {t.get('name', t.get('kind'))!r}: symbol {s!r} "
                                        f"is not in the input's {venue} instruments "
                                        f"({', '.join(md.symbols)})")
                traded.add(s)
        for s in sorted(traded):
            key = f"{venue}:{s}"
            if key not in grids and s in md.grids:
                tick_e8, lot_e8, _, _ = md.grids[s]
                grids[key] = {"tick_e8": tick_e8, "lot_e8": lot_e8}
            elif key not in grids:
                raise BacktestError(f"{md.path}: a journal does not carry instrument grids: give "
                                    f"{key} an [[instruments]] entry (venue, symbol, tick, lot) "
                                    f"in the config (the md grid of the recorded instrument)")
        settings["instruments"] = grids
        self.grids = grids
        self.cal = clock.event_calibration(int(md.times[0]))
        try:
            clord_base = int(settings.get("clord_base") or 1_000_000)
            self.es = EngineState({venue: list(md.symbols)}, setup.strategies, settings, self.cal,
                                  clord_base=clord_base, risk_table=setup.risk)
        except (EngineError, StrategyConfigError, ConfigError, ValueError, OverflowError) as e:
            raise BacktestError(f"{setup.source}: {e}") from None
        es = self.es
        specs = []
        for b, (v, sym) in enumerate(es.book_keys):
            g = grids.get(f"{v}:{sym}", {"tick_e8": 1, "lot_e8": 1})
            specs.append({"venue": v, "instrument": md.symbols.index(sym),
                          "tick_e8": g.get("tick_e8", 1), "lot_e8": g.get("lot_e8", 1)})
        try:
            self.sim = M.make_sim(specs, setup.sim)
        except M.SimConfigError as e:
            raise BacktestError(f"{setup.source}: {e}") from None
        self.words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
        self.ord_hdr, self.ord_data = ring.local_ring(records.ORDER_RECORD_SIZE, 1 << 14)
        self.ord_cur = ring.local_cursor(self.ord_hdr)
        self.io = es.attach(self.ord_hdr, self.ord_data, self.words)
        self.timer_tsc = np.int64(es.loop_settings[LP_TIMER_TSC])
        self.ack_timeout_ns = np.int64(es.loop_settings[LP_ACK_TIMEOUT_NS])
        self.obuf = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
        self.ebuf = np.zeros(records.EXEC_RECORD_SIZE, np.uint8)
        self.deliver = np.zeros(len(md.records), np.int64)
        self.bt = np.zeros(BT_N, np.int64)
        self.bt[BT_PLOT] = 1 if plot else 0
        self.bt[BT_TIMER_ARM] = -1
        self.es.stats[K.ST_LAST_TIMER] = int(md.times[0])
        self.btf = np.zeros(BTF_N, np.float64)
        self.tape = np.zeros((TAPE_CAP + TAPE_MARGIN, records.EXEC_RECORD_SIZE), np.uint8)
        self.aux = np.zeros((TAPE_CAP + TAPE_MARGIN, AX_N), np.int64)
        self.mk = np.zeros((MK_CAP, 4), np.int64)
        for a in (self.deliver, self.tape, self.aux, self.mk):
            a.fill(0)                 # touch every page now, not inside the timed loop
        self.sha = hashlib.sha256()
        self.fills: list[np.ndarray] = []        # (t, book, side, price, qty, liq, fee, real, unreal, pos)
        self.orders_log: list[np.ndarray] = []   # (t, book, rtype, side, price, qty)
        self.rejects: dict[str, int] = {}
        self.marks_log: list[np.ndarray] = []
        self.elapsed = 0.0
        self.tape_records = 0

    # -- the loop ---------------------------------------------------------------------------------
    def _call(self, budget: int) -> int:
        es = self.es
        run = Run(self.md.records, self.md.times, self.deliver, self.bt, self.btf, self.ord_cur,
                  self.obuf, self.ebuf, self.tape, self.aux, self.mk)
        return int(run_events(run, (es.books, es.strats, es.gate, es.tel, self.io), self.sim,
                              (self.timer_tsc, self.ack_timeout_ns), budget))

    def _flush(self) -> None:
        n = int(self.bt[BT_TAPE_N])
        if n:
            tape = self.tape[:n]
            aux = self.aux[:n]
            blob = np.concatenate([aux[:, AX_T:AX_T + 1].view(np.uint8), tape], axis=1)
            self.sha.update(np.ascontiguousarray(blob).tobytes())
            self.tape_records += n
            rt = tape[:, records.RTYPE_OFF]
            fm = rt == records.RT_FILL
            if fm.any():
                f = np.ascontiguousarray(tape[fm]).view(records.FILL)[:, 0]
                a = aux[fm]
                self.fills.append(np.stack([a[:, AX_T], a[:, AX_BOOK], f["side"].astype(np.int64),
                                            f["last_price"], f["last_qty"],
                                            f["liquidity"].astype(np.int64), f["fee"],
                                            a[:, AX_REAL], a[:, AX_UNREAL], a[:, AX_POS]], axis=1))
            for kind, dt in ((records.RT_NEW_ORDER, records.NEW_ORDER),
                             (records.RT_REPLACE, records.REPLACE), (records.RT_CANCEL, records.CANCEL)):
                om = rt == kind
                if not om.any():
                    continue
                o = np.ascontiguousarray(tape[om]).view(dt)[:, 0]
                a = aux[om]
                price = o["price"] if kind != records.RT_CANCEL else np.zeros(len(o), np.int64)
                self.orders_log.append(np.stack([a[:, AX_T], a[:, AX_BOOK], np.full(len(o), kind),
                                                 o["side"].astype(np.int64), price, o["qty"]], axis=1))
            jm = rt == records.RT_REJECT
            if jm.any():
                j = np.ascontiguousarray(tape[jm]).view(records.REJECT)[:, 0]
                for text, cxl in zip(j["text"], j["is_cancel_reject"]):
                    key = ("cancel: " if cxl else "") + (text.decode(errors="replace") or "rejected")
                    self.rejects[key] = self.rejects.get(key, 0) + 1
            self.bt[BT_TAPE_N] = 0
        m = int(self.bt[BT_MK_N])
        if m:
            self.marks_log.append(self.mk[:m].copy())
            self.bt[BT_MK_N] = 0

    def run(self, progress=None, chunk: int = 1 << 20) -> None:
        """Run to the end. ``progress(done, total)`` is called between chunks of ``chunk`` md
        records (never per event)."""
        self._call(0)                 # compile before the clock starts
        total = len(self.md.records)
        t0 = time.perf_counter()
        while True:
            rc = self._call(chunk)
            if rc == RC_TAPE_FULL:
                self._flush()
                continue
            if rc == RC_SIM_FULL:
                raise BacktestError(RC_NAMES[RC_SIM_FULL])
            if progress is not None:
                progress(int(self.bt[BT_KX]), total)
            if rc == RC_DONE:
                break
        self.elapsed = time.perf_counter() - t0
        self._flush()

    # -- results ---------------------------------------------------------------------------------
    def fills_array(self) -> np.ndarray:
        return np.concatenate(self.fills) if self.fills else np.zeros((0, 10), np.int64)

    def orders_array(self) -> np.ndarray:
        if not self.orders_log:
            return np.zeros((0, 6), np.int64)
        o = np.concatenate(self.orders_log)
        return o[np.argsort(o[:, 0], kind="stable")]

    def marks_array(self) -> np.ndarray:
        return np.concatenate(self.marks_log) if self.marks_log else np.zeros((0, 4), np.int64)

    def report(self) -> dict:
        from appliance.engine import risk
        from appliance.engine.state import USD_PEGGED
        es = self.es
        md = self.md
        st = es.stats
        f = self.fills_array()
        rtype = md.records[:, records.RTYPE_OFF]
        quotes = {es.instrument_assets[nm][1] for nm in es.instrument_names}
        one_ccy = len(quotes) == 1 or quotes <= USD_PEGGED
        real_e8, unreal_e8 = pnl_parts(es.led, es.marks)
        rt_n = int(self.bt[BT_RT_SEEN])
        mean = self.btf[BTF_RT_SUM] / rt_n if rt_n else 0.0
        sharpe = None
        if rt_n >= 2:
            var = (self.btf[BTF_RT_SUMSQ] - rt_n * mean * mean) / (rt_n - 1)
            if var > 0:
                sharpe = round(mean / math.sqrt(var), 4)
        per_ccy: dict = {}
        for ii, nm in enumerate(es.instrument_names):
            q = es.instrument_assets[nm][1]
            p = es.led.pos[ii]
            r = int(positions.tl_to_e8(es.led.instr, ii, int(p["realised"]))) - int(p["fees_e8"])
            u = int(positions.tl_to_e8(es.led.instr, ii,
                                       int(positions.unrealised_tl(es.led, ii, int(es.marks[ii])))))
            d = per_ccy.setdefault(q, {"realized_pnl": 0.0, "unrealized_pnl": 0.0, "fees": 0.0})
            d["realized_pnl"] += r / 1e8
            d["unrealized_pnl"] += u / 1e8
            d["fees"] += int(p["fees_e8"]) / 1e8
        denied = {k: v for k, v in risk.denial_counts(es.rk).items() if v and k != "ok"}
        rejects = dict(self.rejects)
        for k, v in denied.items():
            rejects[f"risk: {k}"] = v
        money = (lambda e8: round(e8 / 1e8, 8)) if one_ccy else (lambda e8: None)
        out = {
            "venue": md.venue, "input": md.path, "input_kind": md.kind, "config": self.setup.source,
            "strategies": list(es.names),
            "instruments": list(es.instrument_names),
            "quote": sorted(quotes)[0] if len(quotes) == 1 else sorted(quotes),
            "events": int(len(md.records)),
            "events_per_s": round(len(md.records) / self.elapsed, 1) if self.elapsed > 0 else None,
            "seconds": round(self.elapsed, 6),
            "event_time_s": round((int(md.times[-1]) - int(md.times[0])) / 1e9, 6),
            "l2": int((rtype == records.RT_L2_UPDATE).sum()),
            "trades": int((rtype == records.RT_TRADE).sum()),
            "orders": int(st[K.ST_NEW] + st[K.ST_REPLACE] + st[K.ST_CANCEL]),
            "new": int(st[K.ST_NEW]), "replaces": int(st[K.ST_REPLACE]),
            "cancels": int(st[K.ST_CANCEL]),
            "acks": int(st[K.ST_ACKS]),
            "rejects": sum(rejects.values()),
            "rejects_by_reason": rejects,
            "fills": int(len(f)),
            "maker_fills": int((f[:, 5] == M.LIQ_MAKER).sum()) if len(f) else 0,
            "taker_fills": int((f[:, 5] == M.LIQ_TAKER).sum()) if len(f) else 0,
            "volume": int(f[:, 4].sum()) if len(f) else 0,
            "fees": money(int(f[:, 6].sum()) if len(f) else 0),
            "round_trips": rt_n,
            "win_rate": round(int(self.bt[BT_RT_WINS]) / rt_n, 4) if rt_n else None,
            "realized_pnl": money(real_e8),
            "unrealized_pnl": money(unreal_e8),
            "total_pnl": money(real_e8 + unreal_e8),
            "max_drawdown": money(int(self.bt[BT_MAXDD])),
            "sharpe": sharpe,
            "positions": {nm: int(es.led.pos[ii]["qty"]) for ii, nm in enumerate(es.instrument_names)},
            "open_orders": es.open_orders(),
            "risk_state": risk.state_name(es.rk),
            "kills": int(self.bt[BT_KILLS]),
            "timer_runs": int(self.bt[BT_TIMERS]),
            "latency_ns": {k: getattr(self.setup.sim, k).mean_ns()
                           for k in ("entry", "response", "feed")},
            "queue_model": self.setup.sim.queue_model,
            "sim": M.counters(self.sim),
            "engine": {k: v for k, v in es.stats_dict().items()
                       if k in ("md", "l2", "trades", "batches", "book_invalid",
                                "unknown_instrument", "risk_rejects", "exec_rejects",
                                "exec_unmatched", "exec_other", "stuck_requests", "oms_refused")},
            "records_hashed": self.tape_records,
            "sha256": self.sha.hexdigest(),
        }
        if not one_ccy:
            out["pnl_by_quote"] = per_ccy
        return out

    # -- outputs ---------------------------------------------------------------------------------
    def write_equity_csv(self, path: str) -> int:
        """(event time ns, realized PnL, unrealized PnL, position, instrument) per fill."""
        f = self.fills_array()
        names = self.es.instrument_names
        with open(path, "w") as fh:
            fh.write("time_ns,realized_pnl,unrealized_pnl,position,instrument\n")
            for row in f:
                b = int(row[1])
                fh.write(f"{int(row[0])},{int(row[7]) / 1e8:.8f},{int(row[8]) / 1e8:.8f},"
                         f"{int(row[9])},{names[b] if 0 <= b < len(names) else ''}\n")
        return len(f)

    def price_scale(self, b: int) -> float:
        v, sym = self.es.book_keys[b]
        g = self.grids.get(f"{v}:{sym}")
        return g["tick_e8"] / 1e8 if g is not None else 1.0

    def qty_scale(self, b: int) -> float:
        v, sym = self.es.book_keys[b]
        g = self.grids.get(f"{v}:{sym}")
        return g["lot_e8"] / 1e8 if g is not None else 1.0


# =============================================================================================
# plotting
# =============================================================================================
def _series(bt: Backtest):
    """Per traded book: touch, our quotes, fills; account position and equity per fill."""
    mk = bt.marks_array()
    o = bt.orders_array()
    f = bt.fills_array()
    t0 = int(bt.md.times[0])
    out = []
    for b, (v, sym) in enumerate(bt.es.book_keys):
        sc = bt.price_scale(b)
        m = mk[mk[:, 1] == b]
        ob = o[(o[:, 1] == b) & (o[:, 2] != records.RT_CANCEL)]
        fb = f[f[:, 1] == b]
        out.append({
            "name": f"{v}:{sym}",
            "t_mid": (m[:, 0] - t0) / 1e9, "mid": (m[:, 2] + m[:, 3]) / 2 * sc,
            "bid": m[:, 2] * sc, "ask": m[:, 3] * sc,
            "t_buy": (ob[ob[:, 3] == records.SIDE_BUY, 0] - t0) / 1e9,
            "q_buy": ob[ob[:, 3] == records.SIDE_BUY, 4] * sc,
            "t_sell": (ob[ob[:, 3] == records.SIDE_SELL, 0] - t0) / 1e9,
            "q_sell": ob[ob[:, 3] == records.SIDE_SELL, 4] * sc,
            "t_fb": (fb[fb[:, 2] == records.SIDE_BUY, 0] - t0) / 1e9,
            "p_fb": fb[fb[:, 2] == records.SIDE_BUY, 3] * sc,
            "t_fs": (fb[fb[:, 2] == records.SIDE_SELL, 0] - t0) / 1e9,
            "p_fs": fb[fb[:, 2] == records.SIDE_SELL, 3] * sc,
            "t_pos": (fb[:, 0] - t0) / 1e9, "pos": fb[:, 9] * bt.qty_scale(b),
        })
    eq_t = (f[:, 0] - t0) / 1e9 if len(f) else np.zeros(0)
    eq = (f[:, 7] + f[:, 8]) / 1e8 if len(f) else np.zeros(0)
    return out, eq_t, eq


def plot(bt: Backtest, path: str) -> None:
    """``.png``: matplotlib; ``.html``: plotly. Panels: price (touch, our quotes, fills) per
    traded instrument, position, equity (realized + unrealized)."""
    books, eq_t, eq = _series(bt)
    books = books[:4]
    title = f"backtest {bt.md.venue} {Path(bt.md.path).name}"
    if path.endswith(".html"):
        try:
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots
        except ImportError:
            raise BacktestError("--plot F.html needs plotly (pip install 'appliance[plot]')") from None
        rows = len(books) + 2
        fig = make_subplots(rows=rows, cols=1, shared_xaxes=True,
                            subplot_titles=[b["name"] for b in books] + ["position", "equity"])
        for i, s in enumerate(books, 1):
            fig.add_trace(go.Scatter(x=s["t_mid"], y=s["bid"], name="best bid", line=dict(width=1, color="#7aa6d8"), line_shape="hv"), i, 1)
            fig.add_trace(go.Scatter(x=s["t_mid"], y=s["ask"], name="best ask", line=dict(width=1, color="#e39a9a"), line_shape="hv"), i, 1)
            fig.add_trace(go.Scatter(x=s["t_buy"], y=s["q_buy"], mode="markers", name="our bid", marker=dict(symbol="line-ew-open", color="#1f5fa8")), i, 1)
            fig.add_trace(go.Scatter(x=s["t_sell"], y=s["q_sell"], mode="markers", name="our ask", marker=dict(symbol="line-ew-open", color="#a81f1f")), i, 1)
            fig.add_trace(go.Scatter(x=s["t_fb"], y=s["p_fb"], mode="markers", name="bought", marker=dict(symbol="triangle-up", size=10, color="green")), i, 1)
            fig.add_trace(go.Scatter(x=s["t_fs"], y=s["p_fs"], mode="markers", name="sold", marker=dict(symbol="triangle-down", size=10, color="red")), i, 1)
            fig.add_trace(go.Scatter(x=s["t_pos"], y=s["pos"], name=f"position {s['name']}", line_shape="hv"), rows - 1, 1)
        fig.add_trace(go.Scatter(x=eq_t, y=eq, name="equity", line_shape="hv"), rows, 1)
        fig.update_layout(title=title, height=300 * rows)
        fig.update_xaxes(title_text="event time (s from start)", row=rows, col=1)
        fig.write_html(path, include_plotlyjs="cdn")
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BacktestError("--plot F.png needs matplotlib (pip install 'appliance[plot]')") from None
    rows = len(books) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.8 * rows), sharex=True,
                             gridspec_kw={"height_ratios": [3] * len(books) + [1.2, 1.5]})
    for ax, s in zip(axes, books):
        ax.step(s["t_mid"], s["bid"], where="post", color="#7aa6d8", lw=0.8, label="best bid")
        ax.step(s["t_mid"], s["ask"], where="post", color="#e39a9a", lw=0.8, label="best ask")
        ax.scatter(s["t_buy"], s["q_buy"], marker="_", s=40, color="#1f5fa8", label="our bid")
        ax.scatter(s["t_sell"], s["q_sell"], marker="_", s=40, color="#a81f1f", label="our ask")
        ax.scatter(s["t_fb"], s["p_fb"], marker="^", s=50, color="green", label="bought", zorder=3)
        ax.scatter(s["t_fs"], s["p_fs"], marker="v", s=50, color="red", label="sold", zorder=3)
        ax.set_ylabel(s["name"])
        ax.legend(loc="upper left", fontsize=7, ncol=6)
        axes[-2].step(s["t_pos"], s["pos"], where="post", label=s["name"])
    axes[-2].set_ylabel("position")
    axes[-2].axhline(0, color="grey", lw=0.5)
    axes[-1].step(eq_t, eq, where="post", color="black")
    axes[-1].set_ylabel(f"equity ({bt.report().get('quote')})")
    axes[-1].set_xlabel("event time (s from start)")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# =============================================================================================
# CLI
# =============================================================================================
def _progress_bar(stream):
    last = [0.0]

    def show(done, total):
        now = time.monotonic()
        if done < total and now - last[0] < 0.2:
            return
        last[0] = now
        w = 40
        k = int(w * done / total) if total else w
        stream.write(f"\rbacktest [{'#' * k}{'.' * (w - k)}] {done:,}/{total:,} md records")
        if done >= total:
            stream.write("\n")
        stream.flush()
    return show


def _human(rep: dict) -> str:
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.8f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.2f}"
        return f"{v:,}" if isinstance(v, int) else str(v)
    lines = [f"backtest {rep['venue']} {rep['input']} ({rep['input_kind']}), config {rep['config']}",
             f"  strategies {', '.join(rep['strategies'])} on {', '.join(rep['instruments'])}; "
             f"queue model {rep['queue_model']}, latency ns entry {rep['latency_ns']['entry']:.0f} "
             f"response {rep['latency_ns']['response']:.0f} feed {rep['latency_ns']['feed']:.0f}"]
    rows = [("events (md records)", rep["events"]), ("events/s", rep["events_per_s"]),
            ("event time span s", rep["event_time_s"]), ("orders (new/replace/cancel)",
             f"{rep['orders']:,} ({rep['new']:,}/{rep['replaces']:,}/{rep['cancels']:,})"),
            ("acks", rep["acks"]), ("rejects", rep["rejects"]),
            ("fills (maker/taker)", f"{rep['fills']:,} ({rep['maker_fills']:,}/{rep['taker_fills']:,})"),
            ("volume (lots)", rep["volume"]), (f"fees ({rep['quote']})", rep["fees"]),
            ("round trips", rep["round_trips"]), ("win rate", rep["win_rate"]),
            ("realized PnL", rep["realized_pnl"]), ("unrealized PnL", rep["unrealized_pnl"]),
            ("max drawdown", rep["max_drawdown"]), ("sharpe (per round trip)", rep["sharpe"]),
            ("risk state", rep["risk_state"]), ("sha256", rep["sha256"])]
    for k, v in rows:
        lines.append(f"  {k:<28}{fmt(v)}")
    for k, v in rep["rejects_by_reason"].items():
        lines.append(f"    reject {k}: {v:,}")
    for k, v in rep["positions"].items():
        lines.append(f"  position {k:<19}{v:,}")
    return "\n".join(lines)


def warm() -> int:
    """Compile (or load from the cache) the backtest loop and every kernel it calls, with the
    types a backtest runs: the packaged Binance recording through the packaged setup
    (``appliance compile --all``; :data:`appliance.jit.OPTIONAL_WARMERS`). Without it the first
    ``appliance backtest`` compiles before its clock starts."""
    import logging
    from appliance.sim.venue import default_recordings
    logging.getLogger("appliance").setLevel(logging.WARNING)
    setup = load_setup(None, "binance")
    symbols = [i.symbol for i in setup.cfg.instruments_of("binance")] or None
    md = load_input(str(default_recordings("binance")[0]), "binance", symbols)
    Backtest(md, setup).run()
    return 1


def main(args) -> int:
    import json
    import logging
    logging.getLogger("appliance").setLevel(logging.WARNING)
    try:
        if args.plot and not (args.plot.endswith(".png") or args.plot.endswith(".html")):
            raise BacktestError(f"--plot {args.plot}: expected a .png or .html file name")
        from appliance.venues import registry
        if args.venue not in registry.VENUES:
            raise BacktestError(f"unknown venue {args.venue!r}; one of: {', '.join(registry.VENUES)}")
        config = getattr(args, "config", None)
        setup = load_setup(config, args.venue)
        symbols = [i.symbol for i in setup.cfg.instruments_of(args.venue)] or None
        md = load_input(args.path, args.venue, symbols, args.tsc_hz)
        bt = Backtest(md, setup, plot=bool(args.plot))
        show = None
        if len(md.records) >= args.progress_min and sys.stderr.isatty() and not args.no_progress:
            show = _progress_bar(sys.stderr)
        bt.run(show)
        rep = bt.report()
        if args.equity_csv:
            bt.write_equity_csv(args.equity_csv)
        if args.plot:
            plot(bt, args.plot)
    except BacktestError as e:
        print(f"appliance backtest: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"appliance backtest: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep, separators=(",", ":")))
    else:
        print(_human(rep))
    if rep["orders"] == 0:
        print(f"appliance backtest: the strategies sent no order over {rep['events']:,} md "
              f"records (see the report)", file=sys.stderr)
        return 1
    return 0
