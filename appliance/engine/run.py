"""The engine actor process (``appliance engine``): attach the md rings (one per venue) and the
exec rings (one per FIX session, :func:`exec_rings`), create the order ring, come up HALTED if
the persisted kill switch says so, recover (snapshot + replay of the exec records after it, then
RECONCILING until every FIX session confirmed: see :mod:`appliance.engine.recovery`), loop the
compiled ``step`` until stopped, snapshot the durable state as it goes, cancel every working
order on the way out. The lifecycle is :class:`appliance.actor.Actor`.
"""
from __future__ import annotations

import os
import time

from appliance.actor import Actor
from appliance.jit.bound import Bound
from appliance.engine import book, killswitch, recovery, risk
from appliance.engine.kernels import (HOPS, MAX_SESSIONS, STEP_MAX_LOSS, STEP_OK, ST_HALTED,
                                      ST_KILL_CANCELS, ST_RISK_STATE, step)
from appliance.engine.strategies import base
from appliance.engine.state import EngineState
from appliance.transport import control, records, ring, wait

NAME = "engine"


class Engine(Actor):
    kind = control.ACTOR_ENGINE

    def __init__(self, cfg, wait_rings_s: float = 30.0, log=None):
        super().__init__(cfg, NAME, log)
        self.wait_rings_s = wait_rings_s
        self.es = EngineState.from_config(cfg)
        self.venues = [v.name for v in cfg.venues if v.enabled]
        self.wparams = wait.from_config(cfg.wait, self.core)
        self.wstate = wait.new_state()
        self.ow = None
        self.readers: list = []
        self.exec_names = exec_rings(cfg)
        self.execs: list = []          # RingReader per exec ring, in exec_names order
        self.md_resyncs: dict[str, int] = {}
        self.orders_head_at_open = 0
        self.recovery: recovery.Recovery | None = None
        self.snap: recovery.Snapshotter | None = None
        self.exec_lost: dict[str, int] = {}

    def warm(self) -> None:
        """Compile (or load from the cache) every engine kernel with the live argument types
        (``appliance.engine.warm``: a scratch engine on local rings; nothing of the live state
        or the shared regions is touched)."""
        from appliance.engine import warm
        warm.warm()

    def open(self) -> None:
        # outputs first, then wait for the inputs: the FIX gateway waits for our order ring while
        # we wait for its exec ring, so neither may need the other to be up before it starts
        self.ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE,
                                         self.cfg.rings.order_capacity, shm_dir=self.shm_dir)
        self.orders_head_at_open = int(ring.head(self.ow.hdr))   # > 0: a previous run wrote it

        def attach(name):
            return lambda: ring.RingReader.attach(name, consumer=NAME, start=ring.START_OLDEST,
                                                  shm_dir=self.shm_dir)
        for v in self.venues:
            # oldest: a late-starting engine still sees the snapshot and BOOK_VALID records
            self.readers.append(self.wait_for(f"input ring md.{v}", attach(f"md.{v}"),
                                              self.wait_rings_s))
        # oldest: the gateway's last SESSION record says whether its session is ready now;
        # older exec records are for orders this engine does not know (counted, ignored)
        for name in self.exec_names:
            self.execs.append(self.wait_for(f"input ring {name}", attach(name),
                                            self.wait_rings_s))

    def start(self) -> None:
        es, cb = self.es, self.cb
        es.set_hop_rows(self.tm.hists, [self.tm.hist(h) for h in HOPS])
        persisted = killswitch.read_state(self.state_dir)
        if persisted.get("halted"):
            if not cb.killed:
                cb.request_kill(str(persisted.get("reason", "persisted halt"))[:63],
                                control.SOURCE_PERSISTED)
            self.log.warning("kill switch is persisted in %s: starting HALTED (reason: %s); "
                             "`appliance kill --reset --confirm` resumes",
                             killswitch.state_path(self.state_dir), persisted.get("reason"))
        cb.rec["engine_pid"] = os.getpid()
        if not self.cfg.extra.get("risk"):
            self.log.error("no [risk] table in the config: the risk gate denies every order "
                           "(configure [risk.limits] and [risk.venues.<venue>], see "
                           "appliance/config/default.toml)")
        es.attach(self.ow.hdr, self.ow.data, cb.words)
        named = list(zip(self.exec_names, self.execs))
        # durable state back, exec records after it replayed; refuse to trade if unproven
        rec = self.recovery = recovery.Recovery(
            es, self.state_dir, self.ow, self.orders_head_at_open, named,
            self.cfg.appliance.journal_dir, self._sessions(),
            es.settings["ack_timeout_ms"] / 1000.0, self.log)
        rec.restore()
        if not cb.killed and int(es.rk.state[risk.R_STATE]) == records.RISK_HALTED:
            # halted in the snapshot, reset by the operator since (no flag, no persisted halt):
            # the gate resumes through the kernel's manual-reset path on its first step, as it
            # does for a reset while the engine runs
            es.stats[ST_HALTED] = 1
            self.log.info("recovery: the snapshot was HALTED and the kill switch has been reset "
                          "since: resuming")
        if rec.problems:
            self._refuse("recovery: " + "; ".join(rec.problems))
        # the recovered state is durable before anything goes out
        self.snap = recovery.Snapshotter(es, recovery.snapshot_path(self.state_dir),
                                         es.settings["snapshot_ms"] / 1000.0, self.ow,
                                         named, rec.config_balances, self.log)
        rec.request_reconcile(time.monotonic())     # RECONCILING: sessions not ready until
        self.snap.write_now()                       # their gateways answer
        self.snap.start()
        state = int(es.rk.state[risk.R_STATE])
        self.log.info("engine up: %d strategies (%s), md rings %s, wait %s, %s, recovery %s",
                      len(es.names), ", ".join(es.names), [f"md.{v}" for v in self.venues],
                      wait.kind_name(self.wparams),
                      "HALTED" if cb.killed else records.RISK_STATE_NAMES.get(state, state),
                      rec.state)
        if not cb.killed:
            control.set_risk_state(cb.words, state)
            es.stats[ST_RISK_STATE] = state
        self._step = Bound(step)        # the same objects every poll: no type resolution
        self._loop = es.loop([(r.hdr, r.data, r.cur) for r in self.readers],
                             [(r.hdr, r.data, r.cur) for r in self.execs], self.wparams,
                             self.wstate)

    def _sessions(self) -> set:
        """FIX session indexes to reconcile: every configured [fix.sessions.*] and every session
        a strategy sends to."""
        from appliance.fix import gateway
        es = self.es
        out = {int(es.meta[i, base.M_SESSION + leg]) for i in range(len(es.names))
               for leg in range(int(es.meta[i, base.M_NLEGS]))}
        for name in gateway._sessions(self.cfg):
            out.add(gateway.load_session_config(self.cfg, name).session_index)
        return {s for s in out if 0 <= s < MAX_SESSIONS}

    def _refuse(self, reason: str) -> None:
        """Refuse to trade: the kill switch set and persisted with the reason (``appliance
        status`` shows it; ``appliance kill --reset --confirm`` resumes)."""
        cb = self.cb
        if not cb.killed:
            cb.request_kill(reason[:63], control.SOURCE_RECOVERY)
        try:
            killswitch.persist_halt(self.state_dir, reason, "recovery", cb.epoch)
        except killswitch.KillSwitchError as e:
            self.log.error("HALT not persisted: %s", e)
        self.log.error("REFUSING TO TRADE (kill switch set, epoch %d): %s; check the positions "
                       "at the venue, then `appliance kill --reset --confirm`", cb.epoch, reason)

    def poll(self) -> None:
        es = self.es
        self.after_step(self._step(self._loop, es.books, es.strats, es.gate, es.tel, es.io,
                                   self._idx, es.settings["max_iters"]))

    def after_step(self, rc: int) -> None:
        """What a step's return code asks of Python: persist the halt its kill acknowledgement or
        max-loss trip put in place (also called by the one-process loop, appliance.group)."""
        es, cb = self.es, self.cb
        self.snap.maybe(time.monotonic())        # between steps: consistent with the cursors
        if rc != STEP_OK:
            src = "max_loss" if rc == STEP_MAX_LOSS else None
            st = killswitch.read_state(self.state_dir)
            if cb.killed and (not st.get("halted") or st.get("epoch") != cb.epoch):
                try:
                    killswitch.persist_halt(self.state_dir,
                                            cb.rec["kill_reason"].decode(errors="replace")
                                            or "max loss", src or st.get("source", "cli"),
                                            cb.epoch)
                except killswitch.KillSwitchError as e:
                    self.log.error("HALT not persisted: %s", e)
            self.log.warning("HALTED (epoch %d, %s): %d working orders cancelled", cb.epoch,
                             src or "kill switch", int(es.stats[ST_KILL_CANCELS]))

    def periodic(self) -> None:
        """Notice an input writer's restart and resynchronise to it."""
        es = self.es
        for v, r in zip(self.venues, self.readers):
            if r.writer_restarted():
                # the gateway restarted: its books restart from its next snapshot
                r.resync(ring.START_LATEST)
                for bk, (bv, _sym) in enumerate(es.book_keys):
                    if bv == v:
                        book.clear(es.px, es.qty, es.n, bk)
                self.md_resyncs[v] = self.md_resyncs.get(v, 0) + 1
                self.log.warning("md.%s writer restarted: resynchronised at the newest record, "
                                 "its books cleared (%d resyncs)", v, self.md_resyncs[v])
        for name, r in zip(self.exec_names, self.execs):
            if r.writer_restarted():
                # the FIX gateway restarted and reopened its ring with the sequence it had: read
                # on from where we are (every exec record exactly once: fills are money); it
                # reconciles its working orders and reports them on the ring
                moved = recovery.follow_exec_writer(r)
                self.md_resyncs[name] = self.md_resyncs.get(name, 0) + 1
                self.log.warning("%s writer restarted: reading on at record %d%s (%d restarts)",
                                 name, int(r.cur[ring.CUR_POS]),
                                 " (the ring went backwards)" if moved else "",
                                 self.md_resyncs[name])
            lost = r.lost
            if lost != self.exec_lost.get(name, 0):
                self.exec_lost[name] = lost
                self._refuse(f"exec ring {name} lapped the engine: {lost} exec records lost, "
                             f"positions unproven")
        if self.recovery is not None:
            self.recovery.periodic(time.monotonic())

    def status(self) -> dict:
        es = self.es
        snap = es.snapshot()
        lat = es.latency_percentiles()
        snap["order_latency_ns"] = {"p50": lat[0.5], "p99": lat[0.99]}
        snap["md_lost"] = {f"md.{v}": r.lost for v, r in zip(self.venues, self.readers)}
        snap["md_resyncs"] = self.md_resyncs
        if self.recovery is not None:
            snap["recovery"] = self.recovery.status()
        if self.snap is not None:
            snap["snapshot"] = self.snap.status()
        return snap

    GAUGES = ("open_orders", "halted", "acked_epoch", "stuck_requests", "latency_n")

    def counters(self) -> dict:
        return {k: v for k, v in self.es.stats_dict().items() if k not in self.GAUGES}

    def gauges(self) -> dict:
        st = self.es.stats_dict()
        out = {k: st[k] for k in self.GAUGES if k in st}
        out["risk_state"] = int(self.es.rk.state[risk.R_STATE])
        return out

    def close(self) -> None:
        if self.ow is not None:
            k = self.es.cancel_all() if self.es.io is not None else 0
            self.log.info("engine stopping: %d working orders cancelled; stats %s; wait %s", k,
                          self.es.stats_dict(), wait.counters(self.wstate))
        if self.snap is not None:
            self.snap.stop()
            try:
                self.snap.write_now()            # the last state, cursors included
            except OSError as e:
                self.log.error("last snapshot not written: %s", e)
        if self.cb is not None:
            self.cb.rec["engine_pid"] = 0
        for r in self.readers:
            r.close()
        for r in self.execs:
            r.close()
        if self.ow is not None:
            self.ow.close()


def exec_rings(cfg) -> list[str]:
    """The exec rings the engine reads: every [fix.sessions.NAME]'s ``exec_ring`` (default
    ``exec.NAME``); a config without FIX sessions reads one ring named ``exec``."""
    from appliance.fix import gateway
    names = [gateway.load_session_config(cfg, n).exec_ring
             for n in (cfg.extra.get("fix") or {}).get("sessions", {})]
    return names or ["exec"]


def run(cfg, wait_rings_s: float = 30.0) -> int:
    """``appliance engine``: the engine actor until SIGTERM / SIGINT; returns the exit status."""
    return Engine(cfg, wait_rings_s).run()
