"""``appliance top``: a live terminal view of the running appliance (textual).

Refreshed ``[telemetry] refresh_hz`` times a second (default 5) from
:class:`appliance.ops.source.Observer` (control block, rings, telemetry, status files, all mapped
read-only) and :class:`appliance.ops.books.BookWatcher` (this view's own consumer ``top`` of
every md ring). Panels:

    summary     kill switch (flag, epoch, acknowledgement, reason, ack time), risk tier state,
                engine pid, persisted halt, problems (nothing running, no control block, ...)
    actors      name, kind, pid, alive, core, loops, heartbeat age, kill acknowledgement
    rings       head, capacity, writer, every consumer's lag / lost / laps
    latency     per actor and hop: count, p50, p99, p99.9, max (telemetry histograms)
    books       top 5 levels per configured instrument and the book's sync state
    trading     risk gate, strategies (positions, PnL, open orders), positions, open orders
    counters    every actor's non-zero counters and gauges

Keys: ``q`` quits; ``k`` asks for confirmation (``y`` / ``n``) and then pulls the kill switch
through :func:`appliance.engine.killswitch.kill` (the same path as ``appliance kill``), showing
who confirmed (the engine's acknowledgement, each FIX gateway's nothing-working confirmation) and
how fast, or who did not.

Nothing in the refresh path raises: a missing shared-memory directory, a half-started or stopped
appliance are shown as such, and log records of the libraries are kept in the summary instead of
being written over the screen.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from appliance.ops import source
from appliance.ops.books import decimal_str

DEPTH = 5
OPEN_ORDER_ROWS = 12


def fmt_ns(v) -> str:
    """A latency in ns, in the unit that reads best."""
    if v is None:
        return "-"
    v = float(v)
    if v < 1_000:
        return f"{v:.0f} ns"
    if v < 1_000_000:
        return f"{v / 1e3:.1f} µs"
    if v < 1_000_000_000:
        return f"{v / 1e6:.2f} ms"
    return f"{v / 1e9:.2f} s"


def fmt_age(s) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.0f} min"


class LogKeeper(logging.Handler):
    """Keeps the last log records for the summary (a full-screen view cannot print them)."""

    def __init__(self, n: int = 3):
        super().__init__(logging.WARNING)
        self.lines: deque = deque(maxlen=n)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(source.redact(f"{record.levelname} {record.name}: "
                                            f"{record.getMessage()}")[:300])
        except Exception:                      # noqa: BLE001 - a log line must never break the view
            pass


# --- panels ---------------------------------------------------------------------------------------

def render_summary(snap: dict, kill_line: str | None, logs) -> Text:
    t = Text()
    t.append("appliance top", style="bold")
    t.append(f"   shm {snap['shm_dir']}   state {snap['state_dir']}   "
             f"{time.strftime('%H:%M:%S', time.localtime(snap['time_ns'] / 1e9))}\n")
    k = snap.get("kill")
    if k is None:
        t.append("kill switch: unknown (no control block)", style="yellow")
    elif k["set"]:
        acked = k["ack_epoch"] >= k["epoch"]
        t.append("KILL SWITCH SET", style="bold white on red")
        t.append(f"  epoch {k['epoch']}  source {k['source']}  reason {k['reason']!r}  ")
        if acked:
            ack = f" in {fmt_ns(k['ack_ns'])}" if k.get("ack_ns") is not None else ""
            t.append(f"acknowledged by the engine{ack}", style="green")
        else:
            t.append("NOT acknowledged by an engine", style="bold yellow")
    else:
        t.append("kill switch: clear", style="green")
        t.append(f" (epoch {k['epoch']})")
    ph = snap.get("persisted_halt") or {}
    if ph.get("halted"):
        t.append(f"   persisted HALT: {source.redact(str(ph.get('reason', '')))}", style="red")
    t.append("\nrisk state: ")
    risk = snap.get("risk_state")
    style = {"RUNNING": "green", "REDUCING": "yellow", "PAUSED": "yellow"}.get(risk, "bold red")
    t.append(str(risk or "unknown"), style=style if risk else "yellow")
    eng = snap.get("engine") or {}
    r = eng.get("risk") or {}
    if r:
        t.append(f"  (gate {r.get('state')}, cause {r.get('cause')}, trips {r.get('trips')}, "
                 f"passed {r.get('passed')}, denied {sum((r.get('denied') or {}).values())})")
    t.append(f"   engine: {('pid ' + str(snap['engine_pid'])) if snap.get('engine_pid') else 'not running'}")
    if kill_line:
        t.append("\n" + kill_line, style="bold")
    for p in snap.get("problems", []):
        t.append("\n" + p, style="yellow")
    for line in logs:
        t.append("\n" + line, style="dim")
    return t


class Tab:
    """A plain-text table rendered straight into a ``Text`` (rich's ``Table`` measures every
    cell on every frame: ~10x the cost, at several refreshes a second)."""

    def __init__(self, *cols: str):
        # a column name ending in ">" is right-aligned
        self.heads = [c.rstrip(">") for c in cols]
        self.right = [c.endswith(">") for c in cols]
        self.rows: list[list[tuple[str, str]]] = []

    def row(self, *cells) -> None:
        self.rows.append([c if isinstance(c, tuple) else (str(c), "") for c in cells])

    def lines(self) -> list[Text]:
        w = [len(h) for h in self.heads]
        for r in self.rows:
            for i, (v, _) in enumerate(r):
                w[i] = max(w[i], len(v))
        out = [self._line([(h, "bold") for h in self.heads], w)]
        out += [self._line(r, w) for r in self.rows]
        return out

    def _line(self, cells, w) -> Text:
        t = Text(" ")
        for i, (v, style) in enumerate(cells):
            cell = v.rjust(w[i]) if self.right[i] else v.ljust(w[i])
            t.append(cell, style=style)
            if i + 1 < len(cells):
                t.append("  ")
        return t

    def text(self, title: str | None = None) -> Text:
        lines = self.lines()
        if title:
            lines.insert(0, Text(title, style="bold"))
        return Text("\n").join(lines)


def render_actors(snap: dict) -> Text:
    tb = Tab("name", "kind", "pid>", "state", "core>", "loops>", "heartbeat>", "kill ack")
    if not snap["actors"]:
        tb.row("(none registered)", "", "", "", "", "", "", "")
    for a in snap["actors"]:
        age = a["heartbeat_age_s"]
        if not a["alive"]:
            state = ("DEAD", "red")
        elif age is not None and age > 1.0:
            state = ("LATE", "yellow")
        else:
            state = ("alive", "green")
        ack = str(a["kill_ack_epoch"] or "-")
        g = a.get("gw_kill")
        if g:
            ack += f" (saw {g['seen_epoch']}, cancels sent {g['sent_epoch']}, working {g['working']})"
        tb.row(a["name"], a["kind"], a["pid"], state, "-" if a["core"] < 0 else a["core"],
               a["loops"], fmt_age(age), ack)
    return tb.text("actors")


def render_rings(snap: dict) -> Text:
    tb = Tab("ring", "head>", "capacity>", "writer", "consumer", "lag>", "lost>", "laps>")
    if not snap["rings"]:
        tb.row("(no rings)", "", "", "", "", "", "", "")
    for r in snap["rings"]:
        w = f"pid {r['writer_pid']}" if r["writer_alive"] else "stopped"
        head = [r["name"], r["head"], r["capacity"], w]
        if not r["consumers"]:
            tb.row(*head, "(no consumer)", "", "", "")
        for i, c in enumerate(r["consumers"]):
            lost = (str(c["lost"]), "red" if c["lost"] else "")
            name = c["name"] + ("" if c["alive"] else " (dead)")
            tb.row(*(head if i == 0 else ["", "", "", ""]), name, c["lag"], lost, c["laps"])
    return tb.text("rings")


def render_latency(snap: dict) -> Text:
    tb = Tab("actor", "hop", "count>", "p50>", "p99>", "p99.9>", "max>")
    if not snap["hops"]:
        tb.row("(no histograms published)", "", "", "", "", "", "")
    for h in snap["hops"]:
        tb.row(h["actor"], h["hop"], h["count"], fmt_ns(h.get("p50")), fmt_ns(h.get("p99")),
               fmt_ns(h.get("p999")), fmt_ns(h.get("max")))
    return tb.text("latency (telemetry histograms)")


def _book_block(b: dict) -> list[Text]:
    st = b["state"]
    style = "green" if st == "synced" else "yellow" if st in ("partial", "no data") else "red"
    title = Text(f" {b['venue']}:{b['symbol']}  ", style="bold")
    title.append(st, style=style)
    extra = f"levels {b['levels'][0]}/{b['levels'][1]}"
    if b["mismatches"]:
        extra += f"  mismatches {b['mismatches']}"
    if b["last_trade"]:
        lt = b["last_trade"]
        extra += f"  last {lt['side']} {lt['qty']} @ {lt['price']}"
    tb = Tab("bid qty>", "bid>", "ask", "ask qty>")
    for k in range(max(len(b["bids"]), len(b["asks"]))):
        bq, bp = (b["bids"][k][1], (b["bids"][k][0], "green")) if k < len(b["bids"]) else ("", "")
        ap, aq = ((b["asks"][k][0], "red"), b["asks"][k][1]) if k < len(b["asks"]) else ("", "")
        tb.row(bq, bp, ap, aq)
    return [title, Text(" " + extra, style="dim"), *tb.lines()]


def render_books(books: list[dict] | None, problems: dict | None = None,
                 width: int = 160) -> Text:
    head = Text("books (top 5, this view's own consumer of the md rings)", style="bold")
    if books is None:
        return Text("books: off (--no-books)", style="dim")
    if not books:
        return Text("books: no [[instruments]] in the config", style="dim")
    blocks = [_book_block(b) for b in books]
    bw = max(max(len(line.plain) for line in blk) for blk in blocks) + 3
    per_row = max(1, width // bw)
    lines = [head]
    for i in range(0, len(blocks), per_row):
        row = blocks[i:i + per_row]
        for k in range(max(len(blk) for blk in row)):
            line = Text()
            for blk in row:
                cell = blk[k] if k < len(blk) else Text()
                line.append_text(cell)
                line.append(" " * (bw - len(cell.plain)))
            lines.append(line)
        lines.append(Text())
    for name, p in (problems or {}).items():
        lines.append(Text(f"{name}: {p}", style="yellow"))
    return Text("\n").join(lines)


def render_trading(snap: dict, cfg) -> Text:
    eng = snap.get("engine")
    if not eng:
        return Text("trading: no engine status file (engine not started)", style="dim")
    age = eng.get("age_s")
    head = Text("trading", style="bold")
    head.append(f"  (engine status written {fmt_age(age)} ago"
                f"{', engine stopped' if not eng.get('live', True) else ''})", style="dim")
    st = Tab("strategy", "pnl>", "legs (position, lots)", "open orders>")
    orders = []
    for s in eng.get("strategies", []):
        pnl, quote = source.strategy_pnl(cfg, s)
        pnl_s = f"{pnl:,.8g} {quote}" if pnl is not None else f"{s.get('pnl_tl')} tick-lots"
        legs = "; ".join(f"{leg['venue']}:{leg['symbol']} {leg['position']}"
                         for leg in s.get("legs", []))
        st.row(s.get("name", "?"), pnl_s, legs, len(s.get("open_orders", [])))
        for o in s.get("open_orders", []):
            orders.append((s.get("name", "?"), s, o))
    pos = Tab("instrument", "position>")
    for p in eng.get("positions", []):
        units = source.position_units(cfg, p.get("instrument", ""), int(p.get("position", 0)))
        v = f"{units:,.8g} {p.get('base', '')}" if units is not None else f"{p.get('position')} lots"
        pos.row(p.get("instrument", "?"), v)
    oo = Tab("strategy", "clord_id>", "state", "side", "price>", "qty>")
    for name, s, o in orders[:OPEN_ORDER_ROWS]:
        legs = s.get("legs") or [{}]
        price, qty = str(o.get("price")), str(o.get("qty"))
        if len(legs) == 1:
            try:
                inst = cfg.instrument(legs[0]["venue"], legs[0]["symbol"])
                price = decimal_str(int(o["price"]), inst.tick)
                qty = decimal_str(int(o["qty"]), inst.lot)
            except (KeyError, TypeError, ValueError):
                pass
        side = {1: "buy", 2: "sell"}.get(o.get("side"), str(o.get("side")))
        oo.row(name, o.get("clord_id"), o.get("state"), side, price, qty)
    if len(orders) > OPEN_ORDER_ROWS:
        oo.row(f"... {len(orders) - OPEN_ORDER_ROWS} more", "", "", "", "", "")
    if not orders:
        oo.row("(no open orders)", "", "", "", "", "")
    stats = eng.get("stats") or {}
    keys = ("md", "new", "replace", "cancel", "acks", "fills", "risk_rejects", "exec_rejects")
    line = "  ".join(f"{k} {stats[k]}" for k in keys if k in stats)
    parts = [head, *st.lines(), Text("positions", style="bold"), *pos.lines(),
             Text("open orders", style="bold"), *oo.lines()]
    if line:
        parts.append(Text("engine: " + line, style="dim"))
    return Text("\n").join(parts)


def render_counters(snap: dict) -> Text:
    parts = [Text("counters (telemetry)", style="bold")]
    if not snap["telemetry"]:
        parts.append(Text("(no telemetry regions)", style="dim"))
    for actor, t in sorted(snap["telemetry"].items()):
        items = [f"{k} {v}" for k, v in t["counters"].items() if v]
        items += [f"{k}={v}" for k, v in t["gauges"].items()]
        line = Text(f"{actor}{'' if t['alive'] else ' (stopped)'}: ", style="bold")
        line.append("  ".join(items) if items else "(all zero)")
        parts.append(line)
    return Text("\n").join(parts)


# --- the app --------------------------------------------------------------------------------------

class ConfirmKill(ModalScreen[bool]):
    """``y`` pulls the kill switch, ``n`` / escape does not."""

    BINDINGS = [Binding("y", "answer(True)", "yes, kill"),
                Binding("n", "answer(False)", "no"),
                Binding("escape", "answer(False)", "no")]
    DEFAULT_CSS = """
    ConfirmKill { align: center middle; }
    #confirm { width: 72; height: auto; border: thick $error; padding: 1 2; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("Pull the kill switch?\n\n", "bold"),
                                   "Trading halts: the engine cancels every working order and "
                                   "sends no new one until `appliance kill --reset --confirm`.\n\n",
                                   ("y", "bold"), " = yes, halt      ", ("n", "bold"), " = no"),
                     id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TopApp(App):
    """The live view (see the module docstring)."""

    TITLE = "appliance top"
    BINDINGS = [Binding("q", "quit", "quit"), Binding("k", "kill", "kill switch")]
    DEFAULT_CSS = """
    #body { height: 1fr; }
    .panel { margin: 0 0 1 0; }
    """

    def __init__(self, observer: source.Observer, books=None, refresh_hz: float = 5.0,
                 logkeeper: LogKeeper | None = None, kill_timeout_s: float = 5.0):
        super().__init__()
        self.observer = observer
        self.books = books
        self.refresh_hz = refresh_hz
        self.logkeeper = logkeeper or LogKeeper()
        self.kill_timeout_s = kill_timeout_s
        self.kill_line: str | None = None
        self.kill_result: dict | None = None
        self.last: dict | None = None
        self.refreshes = 0
        self._shown: dict[str, Text] = {}
        self._pulling = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="body"):
            yield Static(id="summary", classes="panel")
            yield Static(id="actors", classes="panel")
            yield Static(id="rings", classes="panel")
            yield Static(id="latency", classes="panel")
            yield Static(id="books", classes="panel")
            yield Static(id="trading", classes="panel")
            yield Static(id="counters", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_view)

    def refresh_view(self) -> None:
        try:
            snap = self.observer.collect()
        except Exception as e:                 # noqa: BLE001 - the view shows it and goes on
            snap = {"time_ns": time.time_ns(), "shm_dir": str(self.observer.dir),
                    "state_dir": str(self.observer.state_dir), "problems":
                    [f"reading the appliance failed: {type(e).__name__}: {e}"],
                    "actors": [], "rings": [], "hops": [], "telemetry": {}, "engine": None,
                    "kill": None, "risk_state": None, "engine_pid": 0}
        books, book_problems = None, None
        if self.books is not None:
            try:
                self.books.poll()
                books = self.books.view()
                book_problems = dict(self.books.problems)
            except Exception as e:             # noqa: BLE001
                books, book_problems = [], {"books": f"{type(e).__name__}: {e}"}
        self.last = snap
        self._set("summary", render_summary(snap, self.kill_line, list(self.logkeeper.lines)))
        self._set("actors", render_actors(snap))
        self._set("rings", render_rings(snap))
        self._set("latency", render_latency(snap))
        self._set("books", render_books(books, book_problems, max(40, self.size.width - 2)))
        self._set("trading", render_trading(snap, self.observer.cfg))
        self._set("counters", render_counters(snap))
        self.refreshes += 1

    def _set(self, panel: str, text: Text) -> None:
        """Update a panel only when its text changed (a re-render costs more than a compare)."""
        if self._shown.get(panel) != text:
            self._shown[panel] = text
            self.query_one(f"#{panel}", Static).update(text)

    def action_kill(self) -> None:
        if isinstance(self.screen, ConfirmKill) or self._pulling:
            return                             # one question, one kill at a time
        self.push_screen(ConfirmKill(), self._confirmed)

    def _confirmed(self, yes: bool | None) -> None:
        if not yes:
            self.kill_line = "kill switch: not pulled (cancelled)"
            return
        self.kill_line = "kill switch: pulling ..."
        self._pulling = True
        self.run_worker(self._pull, thread=True, group="kill")

    def _pull(self) -> None:
        try:
            line, result = pull_kill_switch(self.observer, self.kill_timeout_s)
        except Exception as e:                 # noqa: BLE001 - said on screen, the view goes on
            line, result = f"kill switch: FAILED ({type(e).__name__}: {e}); use appliance kill", None
        self.call_from_thread(self._pulled, line, result)

    def _pulled(self, line: str, result: dict | None) -> None:
        self._pulling = False
        self.kill_line = line
        self.kill_result = result
        self.refresh_view()


def pull_kill_switch(observer: source.Observer, timeout_s: float) -> tuple[str, dict | None]:
    """``appliance kill`` from the view: (one line saying what happened, the kill result)."""
    from appliance.engine import killswitch
    from appliance.transport import control, shm

    reason = f"kill from appliance top (pid {os.getpid()})"
    try:
        cb = control.ControlBlock.open(str(observer.dir))
    except shm.ShmError as e:
        return f"kill switch NOT set: {e}", None
    try:
        r = killswitch.kill(cb, observer.state_dir, reason, timeout_s=timeout_s)
    except killswitch.KillSwitchError as e:
        return f"kill switch SET in the control block, but: {e}", None
    finally:
        cb.close()
    return killswitch.describe(r, timeout_s), r
