"""The engine's state and settings: the bundles the compiled kernels work on, built from the
config (``EngineState``), the ``[engine]`` settings and the symbol -> asset reference data.

Bundles (namedtuples of arrays; numba flattens them, see :mod:`appliance.engine.kernels` for
who reads what)::

    Books(px, qty, n, book_map, bstate, marks)
    Strategies(meta, params, state, quotes, pnl, dirty)
    Gate(oms, led, risk, rows)                   oms.Oms, positions.Ledger, risk.Risk, scratch
    Telemetry(stats, lat_hist, cal)
    Io(ord_hdr, ord_data, words, md_buf, ex_buf)  the order ring and control block it works on
    Loop(md_hdrs, md_datas, md_curs, ex_hdrs, ex_datas, ex_curs, wait_params, wait_state,
         settings, bells)

``EngineState`` builds Books, Strategies, Gate and Telemetry from the config; ``attach`` gives it
an Io (the order ring it writes and the control block); the actor builds the Loop from its rings
(``loop``). The arrays are the engine's: a kernel changes them in place.

Configuration: ``[engine]`` keys are ``ENGINE_KEYS`` below, plus ``balances``
(``"binance:USDT" = 1000.0``: starting balances, moved by fills and open orders; there is no
venue balance feed). Instruments (grids, base / quote assets) come from the ``[[instruments]]``
registry: the ledger / OMS / gate index ``ii`` is the book row, one per traded (venue, symbol).
The breaker adds PnL in one currency, so max_loss / drawdown over instruments quoted in
different (non USD-pegged) currencies is refused. Limits come from ``[risk]``
(``risk.build_risk``; no table in a config = every order denied, logged at start).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from appliance.engine import book, oms, positions, risk
from appliance.engine import strategies as strat
from appliance.engine.strategies import base
from appliance.config.instruments import USD_PEGGED, split_symbol
from appliance.transport import clock, hist, records, ring
from appliance.engine.kernels import (BS_MAX_STRAT, BS_N, BS_NSTRAT, BS_STRAT, BS_VALID,
                                      HOPS, EngineError, LP_ACK_TIMEOUT_NS, LP_N, LP_N_EX, LP_N_MD,
                                      LP_STEP_TSC, LP_TIMER_TSC, MAX_EXEC_RINGS, MAX_INSTRUMENTS,
                                      MAX_MD_RINGS, MAX_SESSIONS, PNL_CASH, PNL_FEES, PNL_N,
                                      PNL_POS, STAT_NAMES, ST_CLORD_NEXT, ST_LAT_N, ST_N, ST_OPEN,
                                      ST_SESS_READY, cancel_all, equity, handle_exec, run_records)

Books = namedtuple("Books", ["px", "qty", "n", "book_map", "bstate", "marks"])
Books.__doc__ = """The books: px / qty int64[B, 2, levels] and n int64[B, 2] (book.py: best level
at the end), book_map int64[8, MAX_INSTRUMENTS] ((venue, instrument) -> book row, -1 = not
traded), bstate int64[B, BS_N] (kernels.BS_*), marks int64[B] (book mids for the breaker)."""
Strategies = namedtuple("Strategies", ["meta", "params", "state", "quotes", "pnl", "dirty"])
Strategies.__doc__ = """The strategy instances: meta / params / state / quotes (strategies/base.py),
pnl int64[S, MAX_LEGS, PNL_N] (kernels.PNL_*), dirty int64[S] (reconcile on the next event)."""
Gate = namedtuple("Gate", ["oms", "led", "risk", "rows"])
Gate.__doc__ = """The order gate: oms (oms.Oms), led (positions.Ledger), risk (risk.Risk), rows
int32[order capacity] (scratch for oms.live_rows)."""
Telemetry = namedtuple("Telemetry", ["stats", "lat_hist", "cal", "hists", "hidx"])
Telemetry.__doc__ = """stats int64[ST_N] (kernels.ST_*: counters, halt / kill / session flags),
lat_hist int64[hist.ROW] (order latency: md event origin -> order published, transport/hist.py),
cal (clock calibration), hists int64[H, hist.ROW] with hidx int64[len(kernels.HOPS)]: the row of
each engine hop (md_ring_hop: md record published -> read by step; md_to_order: read -> the
order it triggered published); private rows until the actor maps them (``set_hop_rows``)."""
Io = namedtuple("Io", ["ord_hdr", "ord_data", "words", "md_buf", "ex_buf"])
Io.__doc__ = """ord_hdr / ord_data: the order ring (written in place), words: the control block
(uint64 view), md_buf uint8[64] / ex_buf uint8[128]: one md / exec record of scratch."""
Loop = namedtuple("Loop", ["md_hdrs", "md_datas", "md_curs", "ex_hdrs", "ex_datas", "ex_curs",
                           "wait_params", "wait_state", "settings", "bells"])
Loop.__doc__ = """What ``step`` polls and how: md_hdrs / md_datas / md_curs (tuples, one md ring per
venue, padded to MAX_MD_RINGS), ex_hdrs / ex_datas / ex_curs (one exec ring per FIX session,
padded to MAX_EXEC_RINGS), wait_params / wait_state (transport/wait.py), settings int64[LP_N]
(kernels.LP_*: the counts of rings to poll, timer period, step budget, ack timeout), bells
int64[n_md + n_ex, 3] (the futex_waitv rows of the real rings' doorbells, md rings first:
transport/ring.py; the back-off sleeps on them)."""


# [engine] table: name -> (default, minimum)
ENGINE_KEYS = {
    "timer_ms": (10, 1),                 # strategy timer period
    "book_levels": (512, 8),             # levels kept per book side
    "max_iters": (4096, 1),              # polls per compiled step before Python looks around
    "clord_base": (0, 0),                # first clord_id; 0 = derived from the start time
    "order_capacity": (4096, 2),         # OMS rows (live + recently finished orders)
    "max_live": (32, 1),                 # live orders per instrument the OMS can track
    "ack_timeout_ms": (5000, 1),         # a request unanswered this long pauses the gate
    "snapshot_ms": (200, 10),            # durable state snapshot at most this often (recovery.py)
}
# [engine.instruments."venue:SYMBOL"]: the instrument's grid, in 1e-8 of its quote / base asset
INSTRUMENT_KEYS = {"tick_e8": 1, "lot_e8": 1}   # default: the 1e-8 print grid of the md gateways
# ... and its assets (default: from the symbol, see split_symbol)
INSTRUMENT_ASSET_KEYS = ("base", "quote")

# Risk limits EngineState uses when it is given no [risk] table (tests, bench, replays): every
# check is on but wide, the throttle allows 100k orders/s, balances are not checked (the engine
# has no balance feed). A production config says its own limits in [risk] (see risk.py).
DEFAULT_RISK_LIMITS = {"max_qty": 1_000_000, "max_notional": 1e9, "max_position": 10_000_000,
                       "max_open_orders": 64, "collar_bps": 10_000, "max_spread_ticks": 10**12,
                       "self_trade_prevention": True}
DEFAULT_RISK_VENUE = {"rate_per_s": 100_000, "burst": 10_000, "check_balance": False}


def default_risk_table(venues) -> dict:
    """The [risk] table EngineState uses when given none (see DEFAULT_RISK_LIMITS)."""
    return {"limits": dict(DEFAULT_RISK_LIMITS),
            "venues": {v: dict(DEFAULT_RISK_VENUE) for v in venues}}


def engine_settings(table: dict | None) -> dict:
    """Validated [engine] settings (unknown keys rejected by name); ``instruments`` maps
    "venue:SYMBOL" -> {tick_e8, lot_e8} (validated against the books in EngineState)."""
    table = table or {}
    if not isinstance(table, dict):
        raise EngineError("engine: expected a table")
    out = {}
    for key in table:
        if key not in ENGINE_KEYS and key not in ("instruments", "balances"):
            raise EngineError(f"engine.{key}: unknown key (known: "
                              f"{', '.join(sorted([*ENGINE_KEYS, 'instruments', 'balances']))})")
    for key, (default, minimum) in ENGINE_KEYS.items():
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v < 1 << 40:
            raise EngineError(f"engine.{key}: expected an integer in {minimum}..{(1 << 40) - 1}, "
                              f"got {v!r}")
        out[key] = v
    instruments = table.get("instruments", {})
    if not isinstance(instruments, dict):
        raise EngineError("engine.instruments: expected a table of \"venue:SYMBOL\" tables")
    out["instruments"] = {}
    for name, sub in instruments.items():
        where = f"engine.instruments.{name}"
        if not isinstance(sub, dict):
            raise EngineError(f"{where}: expected a table with tick_e8 / lot_e8")
        for k in sub:
            if k not in INSTRUMENT_KEYS and k not in INSTRUMENT_ASSET_KEYS:
                raise EngineError(f"{where}.{k}: unknown key (known: tick_e8, lot_e8, base, quote)")
        row = {}
        for k, default in INSTRUMENT_KEYS.items():
            v = sub.get(k, default)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EngineError(f"{where}.{k}: expected an integer >= 1 (1e-8 units), got {v!r}")
            row[k] = v
        for k in INSTRUMENT_ASSET_KEYS:
            if k in sub:
                if not isinstance(sub[k], str) or not sub[k].strip():
                    raise EngineError(f"{where}.{k}: expected an asset name, got {sub[k]!r}")
                row[k] = sub[k].strip().upper()
        out["instruments"][name] = row
    balances = table.get("balances", {})
    if not isinstance(balances, dict):
        raise EngineError('engine.balances: expected a table of "venue:ASSET" = amount')
    out["balances"] = {}
    for name, v in balances.items():
        venue, _, asset = name.partition(":")
        if venue not in records.VENUE_IDS or not asset:
            raise EngineError(f"engine.balances.{name}: expected \"venue:ASSET\" with a venue of "
                              f"{', '.join(sorted(records.VENUE_IDS))}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1e18:
            raise EngineError(f"engine.balances.{name}: expected an amount in 0..1e18, got {v!r}")
        out["balances"][(venue, asset.upper())] = int(round(v * 1e8))
    return out


def _padded(rings: list, n: int, record_size: int, what: str) -> list:
    """``rings`` + copies of one empty local ring (never polled) up to ``n`` entries."""
    if len(rings) > n:
        raise EngineError(f"{len(rings)} {what} rings: the engine polls at most {n}")
    if len(rings) < n:
        hdr, data = ring.local_ring(record_size, 2)
        rings = rings + [(hdr, data, ring.local_cursor(hdr))] * (n - len(rings))
    return rings


class EngineState:
    """Every array the compiled engine works on, built from the config.

    ``venues`` maps venue name -> its symbol list (instrument id = position in the list), as in
    the config's [[venues]]; ``strategies`` is the list of [[strategies]] tables; ``risk_table``
    is the [risk] table (None: :func:`default_risk_table`).

    The OMS / ledger / risk gate address instruments by ``ii`` = the book row: one ledger
    instrument per traded book, tick_e8 / lot_e8 from [engine.instruments."venue:SYMBOL"]
    (default 1 / 1, the 1e-8 grid), base asset column 1 + ii, one shared quote asset column 0
    (the ledger assumes one quote currency for the account's equity)."""

    def __init__(self, venues: dict, strategy_tables: list, settings: dict | None = None,
                 cal: np.ndarray | None = None, clord_base: int | None = None,
                 books_valid: bool = False, risk_table: dict | None = None):
        self.settings = engine_settings(settings)
        self.cal = clock.calibration() if cal is None else cal
        tsc_per_ns = float(self.cal[clock.C_HZ]) / 1e9
        self.venues = {k: list(v) for k, v in venues.items()}
        self.book_map = np.full((8, MAX_INSTRUMENTS), -1, np.int64)
        self.book_keys: list[tuple[str, str]] = []

        def instrument_of(venue, symbol):
            if venue not in records.VENUE_IDS or venue not in self.venues:
                raise base.StrategyConfigError(
                    f"strategies: venue {venue!r} is not configured (have: {', '.join(self.venues)})")
            syms = self.venues[venue]
            if symbol not in syms:
                raise base.StrategyConfigError(
                    f"strategies: symbol {symbol!r} is not in venue {venue!r}'s symbols {syms}")
            vid, idx = records.VENUE_IDS[venue], syms.index(symbol)
            if idx >= MAX_INSTRUMENTS:
                raise base.StrategyConfigError(f"strategies: {venue} has more than "
                                               f"{MAX_INSTRUMENTS} symbols")
            if self.book_map[vid, idx] < 0:
                self.book_map[vid, idx] = len(self.book_keys)
                self.book_keys.append((venue, symbol))
            return vid, idx, int(self.book_map[vid, idx])

        (self.meta, self.params, self.state, self.quotes,
         self.names) = strat.build(strategy_tables, instrument_of, tsc_per_ns)
        nb = max(1, len(self.book_keys))
        self.px, self.qty, self.n = book.new_books(nb, self.settings["book_levels"])
        # a book is untrusted until its gateway says BOOK_VALID (after a snapshot);
        # ``books_valid`` is for callers that feed hand-built, already consistent books
        self.bstate = np.zeros((nb, BS_N), np.int64)
        self.bstate[:, BS_VALID] = 1 if books_valid else 0
        for b in range(nb):
            on = [i for i in range(self.meta.shape[0])
                  if b in self.meta[i, base.M_BOOK:base.M_BOOK + self.meta[i, base.M_NLEGS]]]
            if len(on) > BS_MAX_STRAT:
                self.bstate[b, BS_NSTRAT] = -1
            else:
                self.bstate[b, BS_NSTRAT] = len(on)
                self.bstate[b, BS_STRAT:BS_STRAT + len(on)] = on
        s = self.meta.shape[0]
        self.pnl = np.zeros((s, base.MAX_LEGS, PNL_N), np.int64)
        self.loop_settings = np.zeros(LP_N, np.int64)
        self.loop_settings[LP_TIMER_TSC] = int(self.settings["timer_ms"] * 1e6 * tsc_per_ns)
        self.loop_settings[LP_STEP_TSC] = int(1e6 * tsc_per_ns)
        self.loop_settings[LP_ACK_TIMEOUT_NS] = int(self.settings["ack_timeout_ms"]) * 1_000_000
        # --- ledger, OMS, risk gate (ii = book row) ---
        self.instrument_names = [f"{v}:{sym}" for v, sym in self.book_keys]
        grids = self.settings["instruments"]
        # assets: named per instrument (config, else from the symbol); one ledger column each
        pairs = []
        for v, sym in self.book_keys:
            g = grids.get(f"{v}:{sym}", {})
            guess = split_symbol(sym) or (sym.upper(), "QUOTE")
            pairs.append((g.get("base", guess[0]), g.get("quote", guess[1])))
        self.asset_names = sorted({a for p in pairs for a in p} | {"QUOTE"}
                                  | {a for _, a in self.settings["balances"]})
        col = {a: k for k, a in enumerate(self.asset_names)}
        self.instrument_assets = dict(zip(self.instrument_names, pairs))
        specs = []
        for b, (v, sym) in enumerate(self.book_keys):
            g = grids.get(f"{v}:{sym}", INSTRUMENT_KEYS)
            specs.append({"venue": v, "instrument": self.venues[v].index(sym),
                          "base_asset": col[pairs[b][0]], "quote_asset": col[pairs[b][1]],
                          "tick_e8": g["tick_e8"], "lot_e8": g["lot_e8"]})
        if not specs:            # no strategy: one placeholder row keeps the arrays non-empty
            specs.append({"venue": next(iter(records.VENUE_IDS)), "instrument": 0,
                          "base_asset": col["QUOTE"], "quote_asset": col["QUOTE"],
                          "tick_e8": 1, "lot_e8": 1})
        self.led = positions.make_ledger(
            specs, len(self.asset_names),
            {(v, col[a]): amt for (v, a), amt in self.settings["balances"].items()})
        if risk_table is None:
            risk_table = default_risk_table(self.venues)
        quotes_ = {q for _, q in pairs}
        money = [k for k in ("max_loss", "drawdown_reduce", "drawdown_pause")
                 if risk_table.get(k)]
        if money and len(quotes_) > 1 and not quotes_ <= USD_PEGGED:
            raise EngineError(f"risk.{money[0]}: one amount for instruments quoted in "
                              f"{', '.join(sorted(quotes_))} (the breaker adds PnL in one "
                              f"currency): run one engine per quote currency, or trade "
                              f"instruments quoted in one currency (USD-pegged ones count as one)")
        names = self.instrument_names or [f"{specs[0]['venue']}:-"]
        try:
            self.rk = risk.build_risk(risk_table, self.led.instr, names)
        except ValueError as e:       # ConfigError: say it is the engine's risk gate
            raise EngineError(f"risk gate: {e}") from None
        self.marks = np.zeros(len(specs), np.int64)
        if clord_base is None:
            clord_base = self.settings["clord_base"] or None
        cap = self.settings["order_capacity"]
        max_live = self.settings["max_live"]
        if cap <= len(specs) * max_live:
            raise EngineError(f"engine.order_capacity: {cap} must exceed traded instruments x "
                              f"max_live = {len(specs) * max_live}")
        self.oms = oms.make_oms(cap, len(specs), max_live=max_live,
                                n_quotes=max(1, s) * base.Q_SLOTS, first_clord_id=clord_base)
        self.rows = np.zeros(cap, np.int32)
        self.dirty = np.zeros(max(1, s), np.int64)   # strategies to reconcile on their next event
        self.stats = np.zeros(ST_N, np.int64)
        # in-process use (replays, bench, tests) has no FIX gateway: sessions count as ready;
        # the actor (``run``) clears them and waits for each gateway's SESSION_RECONCILED
        self.stats[ST_SESS_READY:ST_SESS_READY + MAX_SESSIONS] = 1
        self.stats[ST_CLORD_NEXT] = self.oms.ctr[oms.C_NEXT_ID]
        self.lat_hist = hist.new_row()
        self.md_buf = np.zeros(records.MD_RECORD_SIZE, np.uint8)
        self.ex_buf = np.zeros(records.EXEC_RECORD_SIZE, np.uint8)
        # the bundles (the attributes above are the same arrays, for Python-side reading)
        self.books = Books(self.px, self.qty, self.n, self.book_map, self.bstate, self.marks)
        self.strats = Strategies(self.meta, self.params, self.state, self.quotes, self.pnl,
                                 self.dirty)
        self.gate = Gate(self.oms, self.led, self.rk, self.rows)
        self.hop_hists = np.zeros((len(HOPS), hist.ROW), np.int64)
        self.hop_idx = np.arange(len(HOPS), dtype=np.int64)
        self.tel = Telemetry(self.stats, self.lat_hist, self.cal, self.hop_hists, self.hop_idx)
        self.io: Io | None = None

    def set_hop_rows(self, hists: np.ndarray, slots) -> None:
        """Record the engine's hops (kernels.HOPS, in that order) into rows ``slots`` of
        ``hists`` (the actor's mapped telemetry histograms, int64[H, hist.ROW])."""
        slots = np.asarray(slots, np.int64)
        if hists.dtype != np.int64 or hists.ndim != 2 or hists.shape[1] != hist.ROW \
                or slots.shape != (len(HOPS),) or slots.min() < 0 or slots.max() >= len(hists):
            raise ValueError(f"hop rows must be int64[H, {hist.ROW}] and {len(HOPS)} slots in it")
        self.hop_hists, self.hop_idx = hists, slots
        self.tel = Telemetry(self.stats, self.lat_hist, self.cal, hists, slots)

    @classmethod
    def from_config(cls, cfg, cal=None, clord_base=None) -> "EngineState":
        """From the config: books, grids and assets of the traded instruments from the
        [[instruments]] registry, [engine] settings, [[strategies]], [risk]. Without a [risk]
        table every order is denied (the gate needs configured limits to trade), which the
        engine actor logs loudly."""
        venues = {v.name: list(v.symbols) for v in cfg.venues if v.enabled}
        settings = dict(cfg.extra.get("engine") or {})
        if "instruments" in settings:
            raise EngineError("engine.instruments: an instrument's grid and assets are its "
                              "[[instruments]] entry (tick, lot, base, quote)")
        grids = {}
        for ins in cfg.instruments:
            grids[ins.key] = {"tick_e8": ins.tick_e8, "lot_e8": ins.lot_e8, "base": ins.base,
                              "quote": ins.quote}
        settings["instruments"] = grids
        es = cls(venues, cfg.extra.get("strategies", []), settings, cal, clord_base,
                 risk_table=cfg.extra.get("risk", {}))
        for name in es.instrument_names:
            g = grids[name]
            if g["tick_e8"] < 1 or g["lot_e8"] < 1:
                raise EngineError(f"instruments.{name}: tick and lot must be whole multiples of "
                                  f"1e-8 (the ledger counts money in 1e-8 units)")
        return es

    def attach(self, ord_hdr: np.ndarray, ord_data: np.ndarray, words: np.ndarray) -> Io:
        """Write orders into this order ring (``ring.RingWriter`` / ``ring.local_ring`` arrays)
        and read / acknowledge the kill switch in this control block (its uint64 words)."""
        if ord_data.ndim != 2 or ord_data.shape[1] != records.ORDER_RECORD_SIZE:
            raise EngineError(f"order ring: expected {records.ORDER_RECORD_SIZE} B records, got "
                              f"{ord_data.dtype}{ord_data.shape}")
        self.io = Io(ord_hdr, ord_data, words, self.md_buf, self.ex_buf)
        return self.io

    def loop(self, md_rings, ex_rings, wait_params: np.ndarray, wait_state: np.ndarray) -> Loop:
        """The ``step`` loop's inputs: ``md_rings`` (one ``(hdr, data, cur)`` per md ring, at
        most MAX_MD_RINGS), ``ex_rings`` (one per FIX session's exec ring, at most
        MAX_EXEC_RINGS), the wait strategy (``wait.from_config`` / ``wait.new_state``). Sets
        ``loop_settings[LP_N_MD]`` / ``[LP_N_EX]``."""
        md_rings, ex_rings = list(md_rings), list(ex_rings)
        md = _padded(md_rings, MAX_MD_RINGS, records.MD_RECORD_SIZE, "md")
        ex = _padded(ex_rings, MAX_EXEC_RINGS, records.EXEC_RECORD_SIZE, "exec")
        self.loop_settings[LP_N_MD] = len(md_rings)
        self.loop_settings[LP_N_EX] = len(ex_rings)
        return Loop(tuple(r[0] for r in md), tuple(r[1] for r in md), tuple(r[2] for r in md),
                    tuple(r[0] for r in ex), tuple(r[1] for r in ex), tuple(r[2] for r in ex),
                    wait_params, wait_state, self.loop_settings,
                    ring.bell_rows([r[0] for r in md_rings] + [r[0] for r in ex_rings]))

    def attached_io(self) -> Io:
        """The Io given to ``attach`` (EngineError when none was)."""
        if self.io is None:
            raise EngineError("no order ring attached: call EngineState.attach first")
        return self.io

    # -- in-process use (tests, benches, tools) ----------------------------------------------------
    def feed(self, md_records: np.ndarray) -> int:
        """Run md records (uint8[N, 64]) through the engine (``run_records``); returns orders
        written in total."""
        if md_records.ndim != 2 or md_records.shape[1] != records.MD_RECORD_SIZE:
            raise EngineError(f"feed: expected uint8[N, {records.MD_RECORD_SIZE}], "
                              f"got {md_records.dtype}{md_records.shape}")
        return int(run_records(md_records, md_records.shape[0], self.books, self.strats,
                               self.gate, self.tel, self.attached_io()))

    def exec_record(self, rec_u8: np.ndarray) -> int:
        """Apply one exec record (uint8[128]) as the step loop does; returns STEP_*."""
        return int(handle_exec(rec_u8, self.books, self.strats, self.gate, self.tel, self.attached_io()))

    def cancel_all(self) -> int:
        """CANCEL every live order now (shutdown); returns how many went out."""
        return int(cancel_all(self.strats, self.gate, self.tel, self.attached_io(), clock.now(self.cal)))

    # -- reporting -------------------------------------------------------------------------------
    def open_orders(self) -> int:
        return int(self.oms.agg[:, oms.G_N_OPEN].sum())

    def stats_dict(self) -> dict:
        self.stats[ST_OPEN] = self.open_orders()
        self.stats[ST_CLORD_NEXT] = self.oms.ctr[oms.C_NEXT_ID]
        self.stats[ST_LAT_N] = self.lat_hist[hist.H_COUNT]
        return {name: int(self.stats[k]) for k, name in STAT_NAMES.items()}

    def risk_dict(self) -> dict:
        """The gate's state, trip cause and denials by reason (only reasons that occurred)."""
        st = self.rk.state
        return {"state": risk.state_name(self.rk),
                "cause": risk.CB_NAMES.get(int(st[risk.R_CAUSE]), str(int(st[risk.R_CAUSE]))),
                "trips": int(st[risk.R_TRIPS]), "equity_e8": int(st[risk.R_EQUITY_E8]),
                "peak_e8": int(st[risk.R_PEAK_E8]),
                "loss_streak": int(self.led.acct[positions.A_LOSS_STREAK]),
                "passed": int(self.rk.denials[risk.RJ_OK]),
                "denied": {k: v for k, v in risk.denial_counts(self.rk).items()
                           if v and k != "ok"}}

    def latency_percentiles(self, qs=(0.5, 0.99)) -> dict:
        """Order latency (origin TSC -> order published, ns) percentiles from the histogram
        (``hist.percentiles``: None before the first order)."""
        return hist.percentiles(self.lat_hist, qs)

    def snapshot(self) -> dict:
        """A JSON-able picture: stats, risk gate, OMS counters, per-strategy positions / PnL /
        open orders."""
        live = self.rows[:oms.live_rows(self.oms, -1, self.rows)]
        orders = self.oms.orders
        strategies = []
        for i, name in enumerate(self.names):
            nlegs = int(self.meta[i, base.M_NLEGS])
            legs = []
            for leg in range(nlegs):
                venue, symbol = self.book_keys[int(self.meta[i, base.M_BOOK + leg])]
                legs.append({"venue": venue, "symbol": symbol,
                             "position": int(self.pnl[i, leg, PNL_POS]),
                             "cash_tl": int(self.pnl[i, leg, PNL_CASH]),
                             "fees": int(self.pnl[i, leg, PNL_FEES])})
            sid = int(self.meta[i, base.M_ID])
            open_orders = [{"clord_id": int(orders[r]["clord_id"]),
                            "state": oms.STATE_NAMES[int(orders[r]["state"])],
                            "side": int(orders[r]["side"]), "price": int(orders[r]["price"]),
                            "qty": int(orders[r]["leaves"])}
                           for r in live if int(orders[r]["strategy"]) == sid]
            strategies.append({"name": name, "legs": legs,
                               "pnl_tl": int(equity(i, self.books, self.strats)),
                               "open_orders": open_orders})
        positions_ = [{"instrument": nm, "position": int(self.led.pos[ii]["qty"]),
                       "fills": int(self.led.pos[ii]["n_fills"]),
                       "volume": int(self.led.pos[ii]["volume"]),
                       "base": self.instrument_assets[nm][0],
                       "quote": self.instrument_assets[nm][1]}
                      for ii, nm in enumerate(self.instrument_names)]
        balances = [{"venue": vname, "asset": a,
                     "balance_e8": int(self.led.balances[vid, k]),
                     "reserved_e8": int(self.led.reserved[vid, k])}
                    for vname, vid in records.VENUE_IDS.items()
                    for k, a in enumerate(self.asset_names)
                    if self.led.balances[vid, k] or self.led.reserved[vid, k]]
        return {"stats": self.stats_dict(), "risk": self.risk_dict(),
                "oms": oms.counters(self.oms), "positions": positions_,
                "balances": balances, "strategies": strategies}


def validate_config(cfg) -> None:
    """The engine's part of ``config.load``: [engine], [[strategies]] and [risk] build an
    EngineState over the [[instruments]] registry (a placeholder clock calibration: nothing is
    measured)."""
    from appliance.config import ConfigError
    cal = np.zeros(clock.C_WORDS, np.int64)
    cal[clock.C_MODE] = clock.MODE_MONOTONIC
    cal[clock.C_HZ] = 1_000_000_000
    cal[clock.C_MULT] = 1 << clock.SHIFT
    try:
        EngineState.from_config(cfg, cal=cal, clord_base=1)
    except (EngineError, base.StrategyConfigError, ValueError) as e:
        raise ConfigError(str(e)) from None
