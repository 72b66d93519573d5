"""The engine actor process: attach the md and exec rings, create the order ring, loop the
compiled ``step`` until stopped, write the status snapshot, cancel everything on the way out."""
from __future__ import annotations

from appliance.engine import book
from appliance.transport import control, records, ring, wait
from appliance.engine.kernels import (EngineError, MAX_SESSIONS, STEP_MAX_LOSS, STEP_OK,
                                      ST_KILL_CANCELS, ST_RISK_STATE, ST_SESS_READY, step)
from appliance.engine.state import EngineState

STATUS_FILE = "engine_status.json"


def _wait_attach(name, consumer, start, shm_dir, wait_s, stop):
    import time as _t

    from appliance.transport import shm as _shm

    deadline = _t.monotonic() + wait_s
    while True:
        try:
            return ring.RingReader.attach(name, consumer=consumer, start=start, shm_dir=shm_dir)
        except (_shm.ShmError, FileNotFoundError) as e:
            if _t.monotonic() >= deadline or stop():
                raise EngineError(f"input ring {name!r} is not there ({e}); start its writer "
                                  f"first or raise --wait-rings") from None
            _t.sleep(0.05)


def run(cfg, stop=lambda: False, shm_dir=None, wait_rings_s: float = 30.0, log=None,
        status_every_s: float = 0.5) -> int:
    """The engine actor process: attach md.<venue> rings and the exec ring, create the order
    ring, come up HALTED if the persisted kill switch says so, then loop ``step`` until
    ``stop()``; on exit cancel every working order. Returns the exit status."""
    import json
    import logging
    import os
    import time as _t

    from appliance.engine import killswitch

    log = log or logging.getLogger("appliance.engine")
    es = EngineState.from_config(cfg)
    shm_dir = shm_dir or cfg.appliance.shm_dir or None
    state_dir = cfg.appliance.state_dir
    cb = control.ControlBlock.open(shm_dir)
    persisted = killswitch.read_state(state_dir)
    if persisted.get("halted"):
        if not cb.killed:
            cb.request_kill(str(persisted.get("reason", "persisted halt"))[:63],
                            control.SOURCE_PERSISTED)
        log.warning("kill switch is persisted in %s: starting HALTED (reason: %s); "
                    "`appliance kill --reset --confirm` resumes",
                    killswitch.state_path(state_dir), persisted.get("reason"))
    core = cfg.cores.actors.get("engine")
    wparams = wait.from_config(cfg.wait, core)
    wstate = wait.new_state()
    venues = [v.name for v in cfg.venues if v.enabled]
    # outputs first, then wait for the inputs: the FIX gateway waits for our order ring while
    # we wait for its exec ring, so neither may need the other to be up before it starts
    ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE, cfg.rings.order_capacity,
                                shm_dir=shm_dir)
    readers = []
    try:
        for v in venues:
            # oldest: a late-starting engine still sees the snapshot and BOOK_VALID records
            readers.append(_wait_attach(f"md.{v}", "engine", ring.START_OLDEST, shm_dir,
                                        wait_rings_s, stop))
        # oldest: the gateway's last SESSION record says whether its session is ready now;
        # older exec records are for orders this engine does not know (counted, ignored)
        ex = _wait_attach("exec", "engine", ring.START_OLDEST, shm_dir, wait_rings_s, stop)
    except EngineError:
        for r in readers:
            r.close()
        ow.close()
        cb.close()
        raise
    actor = cb.register_actor("engine", control.ACTOR_ENGINE, -1 if core is None else core)
    es.stats[ST_SESS_READY:ST_SESS_READY + MAX_SESSIONS] = 0   # until the gateways say so
    cb.rec["engine_pid"] = os.getpid()
    io = es.attach(ow.hdr, ow.data, cb.words)
    loop = es.loop([(r.hdr, r.data, r.cur) for r in readers], (ex.hdr, ex.data, ex.cur), wparams,
                   wstate)
    books, strats, gate, tel = es.books, es.strats, es.gate, es.tel
    max_iters = es.settings["max_iters"]
    if not cfg.extra.get("risk"):
        log.error("no [risk] table in the config: the risk gate denies every order "
                  "(configure [risk.limits] and [risk.venues.<venue>], see appliance/config/default.toml)")
    log.info("engine up: %d strategies (%s), md rings %s, wait %s, %s",
             len(es.names), ", ".join(es.names), [f"md.{v}" for v in venues],
             wait.kind_name(wparams), "HALTED" if cb.killed else "RUNNING")
    if not cb.killed:
        control.set_risk_state(cb.words, records.RISK_RUNNING)
        es.stats[ST_RISK_STATE] = records.RISK_RUNNING
    status_path = os.path.join(state_dir, STATUS_FILE)
    next_status = 0.0
    md_resyncs: dict[str, int] = {}
    try:
        while not stop():
            rc = step(loop, books, strats, gate, tel, io, actor, max_iters)
            if rc != STEP_OK:
                src = "max_loss" if rc == STEP_MAX_LOSS else None
                st = killswitch.read_state(state_dir)
                if cb.killed and (not st.get("halted") or st.get("epoch") != cb.epoch):
                    killswitch.persist_halt(state_dir,
                                            cb.rec["kill_reason"].decode(errors="replace")
                                            or "max loss", src or st.get("source", "cli"),
                                            cb.epoch)
                log.warning("HALTED (epoch %d, %s): %d working orders cancelled",
                            cb.epoch, src or "kill switch", int(es.stats[ST_KILL_CANCELS]))
            now = _t.monotonic()
            if now >= next_status:
                next_status = now + status_every_s
                for v, r in zip(venues, readers):
                    if r.writer_restarted():
                        # the gateway restarted: its books restart from its next snapshot
                        r.resync(ring.START_LATEST)
                        vid = records.VENUE_IDS[v]
                        for bk, (bv, _sym) in enumerate(es.book_keys):
                            if bv == v:
                                book.clear(es.px, es.qty, es.n, bk)
                        md_resyncs[v] = md_resyncs.get(v, 0) + 1
                        log.warning("md.%s writer restarted: resynchronised at the newest record, "
                                    "its books cleared (venue id %d, %d resyncs)", v, vid,
                                    md_resyncs[v])
                if ex.writer_restarted():
                    # the FIX gateway restarted: its sessions reconcile working orders and send
                    # their reports on the new ring; read it from its start
                    ex.resync(ring.START_OLDEST)
                    md_resyncs["exec"] = md_resyncs.get("exec", 0) + 1
                    log.warning("exec writer restarted: resynchronised at its oldest record "
                                "(%d resyncs)", md_resyncs["exec"])
                snap = es.snapshot()
                snap["pid"] = os.getpid()
                snap["time_ns"] = _t.time_ns()
                lat = es.latency_percentiles()
                snap["order_latency_ns"] = {"p50": lat[0.5], "p99": lat[0.99]}
                snap["md_lost"] = {f"md.{v}": r.lost for v, r in zip(venues, readers)}
                snap["md_resyncs"] = md_resyncs
                try:
                    os.makedirs(state_dir, exist_ok=True)
                    tmp = status_path + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(snap, f)
                    os.replace(tmp, status_path)
                except OSError as e:
                    log.debug("status file %s not written: %s", status_path, e)
    finally:
        k = es.cancel_all()
        log.info("engine stopping: %d working orders cancelled; stats %s", k, es.stats_dict())
        cb.rec["engine_pid"] = 0
        for r in readers:
            r.close()
        ex.close()
        ow.close()
        cb.close()
    return 0
