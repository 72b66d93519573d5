"""``appliance exporter``: the appliance's telemetry as Prometheus metrics (prometheus-client).

Every scrape reads the shared memory afresh through :class:`appliance.ops.source.Observer`
(read-only mappings) and the status files, and returns these families (``appliance_`` prefix;
counters end in ``_total``, latencies are ``_seconds`` histograms):

    appliance_up                                    1 while at least one registered actor lives
    appliance_actor_up{actor,kind}                  1 alive / 0 dead (control block)
    appliance_actor_heartbeat_age_seconds{actor}    since the actor's last heartbeat
    appliance_actor_loops_total{actor}              loop iterations
    appliance_actor_core{actor}                     pinned core (-1 = not pinned)
    appliance_actor_status_age_seconds{actor}       since the actor last wrote its status file
    appliance_actor_kill_ack_epoch{actor}           last kill epoch the actor confirmed its part of
    appliance_fix_working_orders{actor}             orders a FIX gateway knows working (control
                                                    block, its kill line)
    appliance_ring_records_total{ring}              records published (the ring's head)
    appliance_ring_capacity{ring}                   slots
    appliance_ring_writer_up{ring}                  1 while the producer lives
    appliance_ring_consumer_lag{ring,consumer}      records published and not yet read
    appliance_ring_consumer_lost_total{ring,consumer}  records lost to lapping
    appliance_kill_switch                           1 while the kill flag is set
    appliance_kill_epoch / appliance_kill_ack_epoch request / engine acknowledgement epochs
    appliance_kill_ack_seconds                      flag set -> engine ack (TSC), last kill
    appliance_kill_persisted                        1 while <state_dir>/killswitch.json halts
    appliance_risk_state{state}                     1 for the current tier state, 0 others
    appliance_risk_trips_total, appliance_risk_passed_total, appliance_risk_denials_total{reason}
    appliance_risk_equity, appliance_risk_peak_equity   account equity (quote asset, e8 / 1e8)
    appliance_position{venue,instrument}            engine position, base-asset units
    appliance_strategy_pnl{strategy,quote}          PnL in the quote asset (one-grid strategies)
    appliance_strategy_open_orders{strategy}
    appliance_hop_latency_seconds{actor,hop,venue}  histogram per telemetry hop
    appliance_<family>_<counter>_total{actor,venue} every telemetry counter, ``family`` = the
                                                    actor name before its first dot (md, engine,
                                                    fix, recorder, exchange)
    appliance_<family>_<gauge>{actor,venue}         every telemetry gauge

Histogram buckets: the log-linear histogram (:mod:`appliance.transport.hist`, 8 sub-buckets per
power of two) is reported at two edges per power of two from 128 ns to 2**35 ns (~34 s). Bucket
``k`` holds integer ns values in ``[lo(k), lo(k + 1))``, so the cumulative count of the buckets
below ``lo(e)`` is exactly the number of values ``<= lo(e) - 1`` ns: that is the ``le`` reported,
in seconds. ``+Inf`` and ``_count`` are the total of the buckets (one copy of the row, so they
always agree), ``_sum`` the row's sum.

The server binds ``[telemetry] exporter_host`` (default 127.0.0.1: loopback only) and
``exporter_port`` (9464) unless ``--host`` / ``--port`` say otherwise.
"""
from __future__ import annotations

import re
import threading

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from appliance.actor import stop_signals
from appliance.ops import source
from appliance.transport import hist, records

PREFIX = "appliance_"
# 2 edges per power of two: bucket indices k with bucket_lo(k) = 2**E and 1.5 * 2**E
EDGE_BUCKETS = tuple(k for E in range(7, 36) for k in (8 * (E - 2), 8 * (E - 2) + 4))
LE = tuple(floatToGoString((hist.bucket_lo(k) - 1) / 1e9) for k in EDGE_BUCKETS)
assert all(hist.bucket_lo(8 * (E - 2)) == 1 << E for E in range(7, 36))

_BAD = re.compile(r"[^a-zA-Z0-9_]")

# families whose names the counter-derived names must not take
FIXED = ("appliance_up", "appliance_actor_up", "appliance_actor_heartbeat_age_seconds",
         "appliance_actor_loops", "appliance_actor_core", "appliance_actor_status_age_seconds",
         "appliance_actor_kill_ack_epoch", "appliance_fix_working_orders",
         "appliance_ring_records", "appliance_ring_capacity", "appliance_ring_writer_up",
         "appliance_ring_consumer_lag", "appliance_ring_consumer_lost", "appliance_kill_switch",
         "appliance_kill_epoch", "appliance_kill_ack_epoch", "appliance_kill_ack_seconds",
         "appliance_kill_persisted", "appliance_risk_state", "appliance_risk_trips",
         "appliance_risk_passed", "appliance_risk_denials", "appliance_risk_equity",
         "appliance_risk_peak_equity", "appliance_position", "appliance_strategy_pnl",
         "appliance_strategy_open_orders", "appliance_hop_latency_seconds")


def metric_part(s: str) -> str:
    """A name fragment valid in a Prometheus metric name."""
    s = _BAD.sub("_", s).strip("_").lower()
    return re.sub(r"_+", "_", s) or "x"


def family_of(actor: str) -> str:
    return metric_part(actor.split(".", 1)[0])


def buckets(row) -> tuple[list[tuple[str, float]], float, float]:
    """Cumulative ``le`` buckets, sum (s) and count of one histogram row."""
    import numpy as np
    counts = np.asarray(row[:hist.BUCKETS], dtype=np.int64)
    cum = np.cumsum(counts)
    total = int(cum[-1])
    out = [(le, float(cum[k - 1])) for le, k in zip(LE, EDGE_BUCKETS)]
    out.append(("+Inf", float(total)))
    return out, int(row[hist.H_SUM]) / 1e9, float(total)


class ApplianceCollector:
    """A prometheus-client collector over :class:`source.Observer` (one read per scrape)."""

    def __init__(self, observer: source.Observer):
        self.observer = observer
        self.lock = threading.Lock()
        self.last_problems: list[str] = []

    def describe(self):
        return []

    def collect(self):
        with self.lock:
            snap = self.observer.collect()
        self.last_problems = snap["problems"]
        yield from families(snap, self.observer.cfg)


def families(snap: dict, cfg) -> list:
    """Every metric family of one :meth:`Observer.collect` result."""
    out = []
    g = GaugeMetricFamily
    c = CounterMetricFamily

    up = g("appliance_up", "1 while at least one registered actor is alive")
    up.add_metric([], 1.0 if snap.get("running") else 0.0)
    out.append(up)

    a_up = g("appliance_actor_up", "1 while the actor's process is alive", labels=["actor", "kind"])
    a_hb = g("appliance_actor_heartbeat_age_seconds", "seconds since the actor's last heartbeat",
             labels=["actor"])
    a_loops = c("appliance_actor_loops", "loop iterations of the actor", labels=["actor"])
    a_core = g("appliance_actor_core", "core the actor is pinned to (-1 = not pinned)",
               labels=["actor"])
    a_kack = g("appliance_actor_kill_ack_epoch", "last kill epoch the actor confirmed its part of "
               "(a FIX gateway: nothing of its own working)", labels=["actor"])
    f_work = g("appliance_fix_working_orders", "orders a FIX gateway knows working at its venue",
               labels=["actor"])
    for a in snap["actors"]:
        a_kack.add_metric([a["name"]], float(a["kill_ack_epoch"]))
        if a.get("gw_kill"):
            f_work.add_metric([a["name"]], float(a["gw_kill"]["working"]))
        a_up.add_metric([a["name"], a["kind"]], 1.0 if a["alive"] else 0.0)
        if a["heartbeat_age_s"] is not None:
            a_hb.add_metric([a["name"]], max(0.0, a["heartbeat_age_s"]))
        a_loops.add_metric([a["name"]], float(a["loops"]))
        a_core.add_metric([a["name"]], float(a["core"]))
    a_st = g("appliance_actor_status_age_seconds", "seconds since the actor wrote its status file",
             labels=["actor"])
    for name, st in snap["status"].items():
        if st.get("age_s") is not None:
            a_st.add_metric([name], max(0.0, st["age_s"]))
    out += [a_up, a_hb, a_loops, a_core, a_st, a_kack, f_work]

    r_rec = c("appliance_ring_records", "records published on the ring (its head sequence)",
              labels=["ring"])
    r_cap = g("appliance_ring_capacity", "slots of the ring", labels=["ring"])
    r_up = g("appliance_ring_writer_up", "1 while the ring's producer is alive", labels=["ring"])
    r_lag = g("appliance_ring_consumer_lag", "records published and not yet read by the consumer",
              labels=["ring", "consumer"])
    r_lost = c("appliance_ring_consumer_lost", "records the consumer lost to lapping",
               labels=["ring", "consumer"])
    for r in snap["rings"]:
        r_rec.add_metric([r["name"]], float(r["head"]))
        r_cap.add_metric([r["name"]], float(r["capacity"]))
        r_up.add_metric([r["name"]], 1.0 if r["writer_alive"] else 0.0)
        seen = set()
        for cons in r["consumers"]:
            if not cons["alive"] or cons["name"] in seen:
                continue
            seen.add(cons["name"])
            r_lag.add_metric([r["name"], cons["name"]], float(cons["lag"]))
            r_lost.add_metric([r["name"], cons["name"]], float(cons["lost"]))
    out += [r_rec, r_cap, r_up, r_lag, r_lost]

    k = snap.get("kill")
    k_set = g("appliance_kill_switch", "1 while the kill switch is set")
    k_ep = g("appliance_kill_epoch", "kill requests so far (control block epoch)")
    k_ack = g("appliance_kill_ack_epoch", "last kill epoch the engine acknowledged")
    k_sec = g("appliance_kill_ack_seconds", "kill flag set -> engine acknowledgement, last kill")
    k_per = g("appliance_kill_persisted", "1 while the persisted halt file says HALTED")
    if k is not None:
        k_set.add_metric([], 1.0 if k["set"] else 0.0)
        k_ep.add_metric([], float(k["epoch"]))
        k_ack.add_metric([], float(k["ack_epoch"]))
        if k.get("ack_ns") is not None:
            k_sec.add_metric([], k["ack_ns"] / 1e9)
    k_per.add_metric([], 1.0 if (snap.get("persisted_halt") or {}).get("halted") else 0.0)
    out += [k_set, k_ep, k_ack, k_sec, k_per]

    rs = g("appliance_risk_state", "risk tier state (1 = current)", labels=["state"])
    cur = snap.get("risk_state")
    if cur is not None:
        names = list(records.RISK_STATE_NAMES.values())
        if cur not in names:
            names.append(cur)                  # HALT REQUESTED / HALTED (no engine)
        for name in names:
            rs.add_metric([name], 1.0 if name == cur else 0.0)
    out.append(rs)

    eng = snap.get("engine") or {}
    risk = eng.get("risk") or {}
    r_trips = c("appliance_risk_trips", "circuit breaker trips")
    r_pass = c("appliance_risk_passed", "orders the risk gate passed")
    r_den = c("appliance_risk_denials", "orders the risk gate denied, by reason",
              labels=["reason"])
    r_eq = g("appliance_risk_equity", "account equity (quote asset) as the risk gate sees it")
    r_peak = g("appliance_risk_peak_equity", "peak account equity (quote asset)")
    if risk:
        r_trips.add_metric([], float(risk.get("trips", 0)))
        r_pass.add_metric([], float(risk.get("passed", 0)))
        from appliance.engine.risk import RJ_NAMES  # every reason, 0 until it happens
        denied = {n: 0 for n in RJ_NAMES.values() if n != "ok"}
        denied.update(risk.get("denied") or {})
        for reason, n in denied.items():
            r_den.add_metric([str(reason)], float(n))
        if isinstance(risk.get("equity_e8"), int):
            r_eq.add_metric([], risk["equity_e8"] / 1e8)
        if isinstance(risk.get("peak_e8"), int):
            r_peak.add_metric([], risk["peak_e8"] / 1e8)
    out += [r_trips, r_pass, r_den, r_eq, r_peak]

    pos = g("appliance_position", "engine position in base-asset units",
            labels=["venue", "instrument"])
    for p in eng.get("positions", []):
        key = str(p.get("instrument", ""))
        units = source.position_units(cfg, key, int(p.get("position", 0)))
        if units is not None:
            venue, _, sym = key.partition(":")
            pos.add_metric([venue, sym], units)
    pnl = g("appliance_strategy_pnl", "strategy PnL (cash + position at mid) in its quote asset",
            labels=["strategy", "quote"])
    oo = g("appliance_strategy_open_orders", "working orders of the strategy", labels=["strategy"])
    for s in eng.get("strategies", []):
        v, quote = source.strategy_pnl(cfg, s)
        if v is not None:
            pnl.add_metric([str(s.get("name")), quote], v)
        oo.add_metric([str(s.get("name"))], float(len(s.get("open_orders", []))))
    out += [pos, pnl, oo]

    h = HistogramMetricFamily("appliance_hop_latency_seconds",
                              "per-hop latency from the actors' telemetry histograms",
                              labels=["actor", "hop", "venue"])
    dyn: dict[str, object] = {}
    for actor, t in sorted(snap["telemetry"].items()):
        venue = source.actor_venue(cfg, actor)
        for hop, row in t["rows"].items():
            bk, ssum, _ = buckets(row)
            h.add_metric([actor, hop, venue], bk, ssum)
        fam = family_of(actor)
        for kind, values in (("counter", t["counters"]), ("gauge", t["gauges"])):
            for name, v in values.items():
                base = f"{PREFIX}{fam}_{metric_part(name)}"
                if base in FIXED or base.endswith("_total"):
                    base = base.removesuffix("_total")
                    if base in FIXED:
                        continue
                m = dyn.get(base)
                if m is None:
                    if kind == "counter":
                        m = c(base, f"{fam} telemetry counter {name!r}", labels=["actor", "venue"])
                    else:
                        m = g(base, f"{fam} telemetry gauge {name!r}", labels=["actor", "venue"])
                    dyn[base] = m
                elif (kind == "counter") != isinstance(m, CounterMetricFamily):
                    continue                   # one name, two kinds across actors: keep the first
                m.add_metric([actor, venue], float(v))
    out.append(h)
    out += [dyn[k] for k in sorted(dyn)]
    return out


def make_registry(observer: source.Observer) -> tuple[CollectorRegistry, ApplianceCollector]:
    reg = CollectorRegistry(auto_describe=False)
    col = ApplianceCollector(observer)
    reg.register(col)
    return reg, col


def serve(observer: source.Observer, host: str, port: int, ready=None, stop=None) -> int:
    """Serve ``/metrics`` on host:port until SIGTERM / SIGINT (or ``stop`` is set).
    Raises OSError when the address cannot be bound."""
    from prometheus_client import start_http_server
    reg, _ = make_registry(observer)
    httpd, thread = start_http_server(port, addr=host, registry=reg)
    stop = stop or threading.Event()
    try:
        with stop_signals(stop.set):             # the actors' stop handling (main thread only)
            bound = httpd.server_address
            if ready is not None:
                ready(bound)
            while not stop.wait(0.5):
                pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    return 0
