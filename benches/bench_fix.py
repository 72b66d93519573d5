"""``appliance bench fix``: compiled FIX codec vs simplefix, and order -> ack over loopback TCP.

Measured in one run, so results read as ratios on a noisy machine:

- encode_nos: ``codec.encode_order`` of a NewOrderSingle, including reading the clock and
  turning it into SendingTime/TransactTime, timed per call with the TSC inside a compiled loop
  (no Python per call); the clord_id, price and sequence number change every call. Back-to-back
  calls mostly fall in the same millisecond (the rendered timestamp is reused);
  encode_nos_newms moves the clock one millisecond per call so every call renders its
  milliseconds (the rest of the timestamp stays cached within a second); encode_nos_newsec one
  second per call, so every call renders the whole timestamp;
- parse_er / parse_fill: ``codec.parse_messages`` of one ExecutionReport (150=0 ack; 150=F fill)
  into an exec record, timed the same way; ``timer_overhead`` is two back-to-back clock reads;
- simplefix_encode / simplefix_parse: the same messages with simplefix (baseline; Python, timed
  per call with perf_counter_ns);
- loopback_rtt: an order record published on a ring -> gateway (compiled encode, send) -> mock
  exchange (another process, its own core) -> ExecutionReport -> gateway (recv, compiled parse)
  -> ACK record on the exec ring; the bench drives the gateway loop and the clock spans publish
  to ACK. The gateway's own share is split out: gateway_out (order published -> its send()
  returned, Python dispatch included) and gateway_in (recv_into returned -> ACK published: the
  record's publish_tsc - origin_tsc). The rest is the mock exchange (Python session layer,
  ~0.2 ms per order) and the kernel. Baseline: a raw TCP ping-pong of the same byte count with an
  echo process on the peer core (loopback_echo_rtt).

- encode_send_plain / encode_send_tls: one NewOrderSingle from the order record to bytes handed
  to the kernel: compiled encode into the send buffer, then ``send`` on a connected loopback
  socket (a drain process reads the other end on the peer core), timed with perf_counter_ns
  around both (one Python dispatch of each included, as in the gateway). Plain TCP vs TLS
  (``SSLSocket.send``: OpenSSL encrypts in user space and writes the record) with a CA made
  for the run; with kernel TLS offload (``tls.ktls_available()``) the TLS path would be a plain
  ``send`` too. The ratio tls/plain is the cost of encryption on this path.

Cores come from ``--cores A B`` (this process, the peer process); every timed section runs after
a warm-up that compiles and exercises it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import sys
import tempfile
import time

import numpy as np
from numba import njit

from appliance.fix import codec as C
from appliance.transport import clock
from appliance.transport import records as R

INSTRUMENTS = [("BTCUSDT", "0.01", "0.00001")]
SENDER, TARGET = "APPLIANCE", "SIMEX"


# ------------------------------------------------------------------------------ compiled kernels
@njit(cache=True, nogil=True)
def _time_encode(rec, out, tables, cal, n, lat, step_ns):
    """Encode the NewOrderSingle record ``rec`` n times (a new ClOrdID and price each);
    ``tables`` is the encoder's (begin, comp, tcache, instr, syms). lat[i] = ticks of call i."""
    begin, comp, tcache, instr, syms = tables
    acc = 0
    for i in range(n):
        C.st_u64(rec, C._O_CLORD, 1_000_000 + i)
        C.st_u64(rec, C._N_PRICE, 4_500_000 + (i & 1023))
        t0 = clock.now(cal)
        utc = clock.tsc_to_utc_ns(cal, t0) + i * step_ns
        k = C.encode_order(rec, out, 0, begin, comp, i + 1, utc, tcache, instr, syms)
        t1 = clock.now(cal)
        lat[i] = t1 - t0
        acc += k
    return acc


@njit(cache=True, nogil=True)
def _time_parse(buf, n_bytes, seq, st, tables, out, cal, n, lat):
    """Parse the ``n_bytes`` of ``buf`` n times (``tables``: (instr, syms))."""
    instr, syms = tables
    acc = 0
    for i in range(n):
        st[C.ST_EXPECT_SEQ] = seq
        t0 = clock.now(cal)
        C.parse_messages(buf, 0, n_bytes, st, instr, syms, out, t0)
        t1 = clock.now(cal)
        lat[i] = t1 - t0
        acc += st[C.ST_NOUT]
    return acc


@njit(cache=True, nogil=True)
def _time_overhead(cal, n, lat):
    for i in range(n):
        t0 = clock.now(cal)
        t1 = clock.now(cal)
        lat[i] = t1 - t0


def _ns(cal, ticks: np.ndarray) -> np.ndarray:
    mult = float(cal[clock.C_MULT]) / (1 << clock.SHIFT)
    return ticks.astype(np.float64) * mult


def _pct(ns) -> dict:
    ns = np.asarray(ns, dtype=np.float64)
    return {"p50": float(np.percentile(ns, 50)), "p99": float(np.percentile(ns, 99)),
            "p999": float(np.percentile(ns, 99.9)), "max": float(ns.max()), "mean": float(ns.mean())}


def _pin(core) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def default_cores() -> tuple:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-2], cpus[-1]) if len(cpus) >= 2 else (None, None)


# ------------------------------------------------------------------------------ messages
def _nos_record(i: int = 0) -> np.ndarray:
    r = np.zeros(1, R.NEW_ORDER)
    r[0]["rtype"] = R.RT_NEW_ORDER
    r[0]["clord_id"] = 1_000_000 + i
    r[0]["price"] = 4_512_345
    r[0]["qty"] = 150
    r[0]["side"] = R.SIDE_BUY
    r[0]["ord_type"] = R.ORD_LIMIT
    r[0]["tif"] = R.TIF_GTC
    return r


def _er_bytes(fill: bool) -> bytes:
    import simplefix
    m = simplefix.FixMessage()
    pairs = [(8, "FIX.4.4"), (35, "8"), (34, 7), (49, TARGET), (52, "20260101-12:00:00.123"),
             (56, SENDER), (37, "O1234567"), (11, "1000042"), (17, "X987654"),
             (150, "F" if fill else "0"), (39, "2" if fill else "0"), (55, "BTCUSDT"), (54, "1"),
             (38, "0.00150"), (40, "2"), (44, "45123.45"), (59, "1")]
    if fill:
        pairs += [(32, "0.00150"), (31, "45123.45"), (12, "0.0067"), (851, "2")]
    pairs += [(151, "0" if fill else "0.00150"), (14, "0.00150" if fill else "0"), (6, "45123.45"),
              (60, "20260101-12:00:00.123")]
    for t, v in pairs:
        m.append_pair(t, v)
    return m.encode()


def bench_codec(n: int, n_py: int) -> dict:
    import simplefix
    cal = clock.calibration()
    enc = C.Encoder("FIX.4.4", SENDER, TARGET, INSTRUMENTS)
    rec = _nos_record().view(np.uint8).reshape(-1).copy()
    out = np.zeros(4096, np.uint8)
    lat = np.zeros(n, np.int64)
    etab = (enc.begin, enc.comp, enc.tcache, enc.instr, enc.syms)
    ptab = (enc.instr, enc.syms)
    # warm-up: compile and run every kernel once
    _time_encode(rec, out, etab, cal, 1000, lat, 0)
    _time_overhead(cal, 1000, lat)
    res = {}
    _time_overhead(cal, n, lat)
    res["timer_overhead"] = _pct(_ns(cal, lat))
    _time_encode(rec, out, etab, cal, n, lat, 0)
    res["encode_nos"] = _pct(_ns(cal, lat))
    _time_encode(rec, out, etab, cal, n, lat, 1_000_000)
    res["encode_nos_newms"] = _pct(_ns(cal, lat))
    _time_encode(rec, out, etab, cal, n, lat, 1_000_000_000)
    res["encode_nos_newsec"] = _pct(_ns(cal, lat))
    nos_bytes = enc.encode(_nos_record(), 1, int(clock.tsc_to_utc_ns(cal, clock.now(cal))))
    for key, fill in (("parse_er", False), ("parse_fill", True)):
        raw = _er_bytes(fill)
        buf = np.frombuffer(raw, np.uint8).copy()
        st = C.new_parser_state()
        rows = np.zeros((4, R.EXEC_RECORD_SIZE), np.uint8)
        _time_parse(buf, len(buf), 7, st, ptab, rows, cal, 1000, lat)
        assert rows[0, R.RTYPE_OFF] == (R.RT_FILL if fill else R.RT_ACK), "bench message did not parse"
        _time_parse(buf, len(buf), 7, st, ptab, rows, cal, n, lat)
        res[key] = _pct(_ns(cal, lat))
    # simplefix baselines: the same fields, the same bytes
    fields = simplefix.FixParser()
    fields.append_buffer(nos_bytes)
    nos_pairs = [(t, v) for t, v in fields.get_message().pairs if t not in (b"9", b"10")]
    er = _er_bytes(False)
    pl = np.zeros(n_py, np.int64)
    for phase in ("warm", "timed"):
        for i in range(n_py if phase == "timed" else 2000):
            t0 = time.perf_counter_ns()
            m = simplefix.FixMessage()
            for t, v in nos_pairs:
                m.append_pair(t, v)
            m.encode()
            pl[i % n_py] = time.perf_counter_ns() - t0
    res["simplefix_encode"] = _pct(pl)
    assert m.encode() == nos_bytes, "simplefix and the compiled encoder disagree on the bench message"
    for phase in ("warm", "timed"):
        for i in range(n_py if phase == "timed" else 2000):
            t0 = time.perf_counter_ns()
            p = simplefix.FixParser()
            p.append_buffer(er)
            p.get_message()
            pl[i % n_py] = time.perf_counter_ns() - t0
    res["simplefix_parse"] = _pct(pl)
    res["nos_bytes"] = len(nos_bytes)
    res["er_bytes"] = len(er)
    return res


# ------------------------------------------------------------------------------ loopback round trip
def _echo_server(core, port_q, n_bytes):
    _pin(core)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port_q.put(ls.getsockname()[1])
    s, _ = ls.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = s.recv(65536)
        if not data:
            break
        s.sendall(data)
    s.close()
    ls.close()


def _exchange_server(core, port_q, stop_ev):
    import logging
    logging.disable(logging.WARNING)
    _pin(core)
    from appliance.sim import exchange as X
    srv = X.ExchangeServer([("FIX.4.4", TARGET, SENDER)], venue=X.MatchingVenue(references={}),
                           heartbeat_tick=0.001)
    port_q.put(srv.port)
    try:
        srv.serve(stop_ev.is_set)
    finally:
        srv.loop.close()


def _drain_server(core, port_q, pki, use_tls):
    _pin(core)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port_q.put(ls.getsockname()[1])
    s, _ = ls.accept()
    if use_tls:
        from appliance.fix import tls
        ctx = tls.TlsSettings.from_table({"ServerCertificateFile": pki["server"],
                                          "ServerCertificateKeyFile": pki["server_key"]}).server_context()
        s = ctx.wrap_socket(s, server_side=True)
    while True:
        try:
            if not s.recv(1 << 16):
                break
        except OSError:
            break
    s.close()
    ls.close()


def bench_send(core_peer, n: int) -> dict:
    """Encode -> send returned, plain TCP and TLS, same messages, same run."""
    from appliance.fix import tls
    pki_dir = tempfile.mkdtemp(prefix="bench-fix-pki-")
    try:
        pki = tls.make_pki(pki_dir, client=False)
        enc = C.Encoder("FIX.4.4", SENDER, TARGET, INSTRUMENTS)
        cal = clock.calibration()
        rec = _nos_record().view(np.uint8).reshape(-1).copy()
        out = np.zeros(4096, np.uint8)
        res = {}
        ctx = mp.get_context("fork")
        for use_tls in (False, True):
            q = ctx.Queue()
            p = ctx.Process(target=_drain_server, args=(core_peer, q, pki, use_tls), daemon=True)
            p.start()
            s = socket.create_connection(("127.0.0.1", q.get(timeout=30)))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if use_tls:
                cctx = tls.TlsSettings.from_table({"CertificationAuthoritiesFile": pki["ca"]}).client_context()
                s = cctx.wrap_socket(s, server_hostname="localhost")
                res["tls_version"] = s.version()
                res["tls_cipher"] = s.cipher()[0]
            lat = np.zeros(n, np.int64)
            view = memoryview(out)
            for phase in ("warm", "timed"):
                for i in range(n if phase == "timed" else min(n, 2000)):
                    C.st_u64(rec, C._O_CLORD, 1_000_000 + i)
                    t0 = time.perf_counter_ns()
                    utc = clock.tsc_to_utc_ns(cal, clock.now(cal))
                    k = C.encode_order(rec, out, 0, enc.begin, enc.comp, i + 1, utc, enc.tcache, enc.instr,
                                       enc.syms)
                    s.send(view[:k])
                    lat[i] = time.perf_counter_ns() - t0
            s.close()
            p.join(10)
            res["tls" if use_tls else "plain"] = _pct(lat)
        res["ktls"] = tls.ktls_available()
        return res
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)


def bench_echo(core_peer, n: int, n_bytes: int) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_echo_server, args=(core_peer, q, n_bytes), daemon=True)
    p.start()
    port = q.get(timeout=30)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * n_bytes
    lat = np.zeros(n, np.int64)
    for phase in ("warm", "timed"):
        for i in range(n if phase == "timed" else min(n, 500)):
            t0 = time.perf_counter_ns()
            s.sendall(payload)
            got = 0
            while got < n_bytes:
                got += len(s.recv(65536))
            lat[i] = time.perf_counter_ns() - t0
    s.close()
    p.join(10)
    return _pct(lat / 1000.0)


def bench_rtt(core_peer, n: int) -> dict:
    import logging
    from appliance.fix import gateway as G
    from appliance.fix.store import MemoryStore
    from appliance.transport import ring, wait
    logging.disable(logging.WARNING)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    stop_ev = ctx.Event()
    p = ctx.Process(target=_exchange_server, args=(core_peer, q, stop_ev), daemon=True)
    p.start()
    port = q.get(timeout=60)
    shm_dir = tempfile.mkdtemp(prefix="bench-fix-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        cal = clock.calibration()
        gcfg = G.GatewayConfig.from_table("bench", {
            "host": "127.0.0.1", "port": port, "sender_comp_id": SENDER, "target_comp_id": TARGET,
            "instruments": [{"symbol": s, "tick_size": t, "lot_size": l} for s, t, l in INSTRUMENTS],
            "store_dir": os.path.join(shm_dir, "store")})
        ow = ring.RingWriter.create("orders", R.ORDER_RECORD_SIZE, 4096, shm_dir)
        orr = ring.RingReader.attach("orders", "fix.bench", "latest", shm_dir)
        ew = ring.RingWriter.create("exec.bench", R.EXEC_RECORD_SIZE, 4096, shm_dir)
        er = ring.RingReader.attach("exec.bench", "bench", "latest", shm_dir)
        gw = G.Gateway(gcfg, orr, ew, MemoryStore(), wait_params=wait.make("spin"), cal=cal)
        out = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)
        deadline = time.time() + 60
        while not gw.gst[G.G_READY]:
            gw.step()
            if time.time() > deadline:
                raise RuntimeError("gateway did not log on to the mock exchange")
        while ring.poll(er.hdr, er.data, er.cur, out):    # the UP / RECONCILED notices
            pass
        rec = _nos_record()
        lat = np.zeros(n, np.int64)
        lat_out = np.zeros(n, np.int64)      # publish -> bytes handed to the kernel (send returned)
        lat_in = np.zeros(n, np.int64)       # recv returned -> ACK published (origin -> publish tsc)
        warm = min(n, 300)
        for phase in ("warm", "timed"):
            for i in range(warm if phase == "warm" else n):
                cid = (1 if phase == "warm" else 2) * 10_000_000 + i
                rec[0]["clord_id"] = cid
                rec[0]["price"] = 4_000_000 + (i % 1000)
                t0 = clock.now(cal)
                ow.publish(rec)
                got = False
                sent = int(gw.gst[G.G_SENT])
                t_sent = 0
                t_end = time.time() + 30
                while not got:
                    gw.step()
                    if t_sent == 0 and gw.gst[G.G_SENT] != sent:
                        t_sent = gw.last_send_tsc
                    while ring.poll(er.hdr, er.data, er.cur, out):
                        if out[R.RTYPE_OFF] == R.RT_ACK and C.ld_u64(out, C._X_CLORD) == cid:
                            got = True
                            a = out.view(R.ACK)[0]
                            t_in = int(a["publish_tsc"]) - int(a["origin_tsc"])
                            break
                        if out[R.RTYPE_OFF] in (R.RT_REJECT, R.RT_SESSION):
                            raise RuntimeError(f"unexpected exec record type {out[R.RTYPE_OFF]} "
                                               f"during the bench")
                    if time.time() > t_end:
                        raise RuntimeError(f"no ack for order {cid} within 30 s (gateway state "
                                           f"{gw.gst.tolist()}, {gw.counters}, connected "
                                           f"{gw.sock is not None}, logged on {gw.session.logged_on})")
                if phase == "timed":
                    lat[i] = clock.now(cal) - t0
                    lat_out[i] = t_sent - t0
                    lat_in[i] = t_in
        res = {"rtt": _pct(_ns(cal, lat) / 1000.0), "gateway_out": _pct(_ns(cal, lat_out) / 1000.0),
               "gateway_in": _pct(_ns(cal, lat_in) / 1000.0)}
        gw.close()
        return res
    finally:
        stop_ev.set()
        p.join(10)
        if p.is_alive():
            p.terminate()
        shutil.rmtree(shm_dir, ignore_errors=True)


def run(cores=(None, None), n: int = 200_000, n_py: int = 20_000, n_rtt: int = 2_000,
        n_send: int = 20_000) -> dict:
    _pin(cores[0])
    cal = clock.calibration()
    codec = bench_codec(n, n_py)
    echo = bench_echo(cores[1], n_rtt, codec["nos_bytes"])
    rtt = bench_rtt(cores[1], n_rtt)
    send = bench_send(cores[1], n_send)
    r = {"cores": list(cores), "clock": clock.describe(cal), "samples": n, "samples_python": n_py,
         "samples_rtt": n_rtt, "nos_bytes": codec["nos_bytes"], "er_bytes": codec["er_bytes"]}
    for key, src in (("encode_nos", codec["encode_nos"]), ("encode_nos_newms", codec["encode_nos_newms"]),
                     ("encode_nos_newsec", codec["encode_nos_newsec"]),
                     ("parse_er", codec["parse_er"]),
                     ("parse_fill", codec["parse_fill"]), ("simplefix_encode", codec["simplefix_encode"]),
                     ("simplefix_parse", codec["simplefix_parse"]), ("timer_overhead", codec["timer_overhead"])):
        for q in ("p50", "p99", "p999", "max"):
            r[f"{key}_{q}_ns"] = src[q]
    for key, src in (("loopback_rtt", rtt["rtt"]), ("loopback_echo_rtt", echo),
                     ("gateway_out", rtt["gateway_out"]), ("gateway_in", rtt["gateway_in"])):
        for q in ("p50", "p99", "p999", "max"):
            r[f"{key}_{q}_us"] = src[q]
    for key, src in (("encode_send_plain", send["plain"]), ("encode_send_tls", send["tls"])):
        for q in ("p50", "p99", "p999", "max"):
            r[f"{key}_{q}_ns"] = src[q]
    r["samples_send"] = n_send
    r["tls_version"], r["tls_cipher"], r["ktls"] = send["tls_version"], send["tls_cipher"], send["ktls"]
    r["tls_vs_plain_send_p50"] = r["encode_send_tls_p50_ns"] / r["encode_send_plain_p50_ns"]
    r["encode_throughput_msgs_per_s"] = 1e9 / codec["encode_nos"]["mean"]
    r["parse_throughput_msgs_per_s"] = 1e9 / codec["parse_er"]["mean"]
    r["simplefix_vs_compiled_encode_p50"] = r["simplefix_encode_p50_ns"] / r["encode_nos_p50_ns"]
    r["simplefix_vs_compiled_parse_p50"] = r["simplefix_parse_p50_ns"] / r["parse_er_p50_ns"]
    r["rtt_vs_echo_p50"] = r["loopback_rtt_p50_us"] / r["loopback_echo_rtt_p50_us"]
    r["encode_target_ns"] = 200
    r["parse_target_ns"] = 500
    return r


def print_table(r: dict) -> None:
    print(f"FIX benchmark  cores={r['cores']}  {r['clock']}  NOS {r['nos_bytes']} B, ER {r['er_bytes']} B")
    print(f"{'per message (ns)':<34}{'p50':>10}{'p99':>10}{'p99.9':>10}{'max':>12}")
    for key, label in (("encode_nos", "compiled encode NewOrderSingle"),
                       ("encode_nos_newms", "  same, every call a new ms"),
                       ("encode_nos_newsec", "  same, every call a new second"),
                       ("simplefix_encode", "simplefix encode (baseline)"),
                       ("parse_er", "compiled parse ExecutionReport"),
                       ("parse_fill", "compiled parse ER fill"),
                       ("simplefix_parse", "simplefix parse (baseline)"),
                       ("timer_overhead", "timer overhead (2 clock reads)"),
                       ("encode_send_plain", "encode -> send returned, TCP"),
                       ("encode_send_tls", "encode -> send returned, TLS")):
        print(f"{label:<34}{r[key + '_p50_ns']:>10.0f}{r[key + '_p99_ns']:>10.0f}"
              f"{r[key + '_p999_ns']:>10.0f}{r[key + '_max_ns']:>12.0f}")
    print(f"{'round trip (us)':<34}{'p50':>10}{'p99':>10}{'p99.9':>10}{'max':>12}")
    for key, label in (("loopback_rtt", "order -> ack via mock exchange"),
                       ("gateway_out", "  gateway: ring -> send returned"),
                       ("gateway_in", "  gateway: recv -> ACK on ring"),
                       ("loopback_echo_rtt", "raw TCP echo (baseline)")):
        print(f"{label:<34}{r[key + '_p50_us']:>10.1f}{r[key + '_p99_us']:>10.1f}"
              f"{r[key + '_p999_us']:>10.1f}{r[key + '_max_us']:>12.1f}")
    print(f"TLS: {r['tls_version']} {r['tls_cipher']}, kernel TLS offload "
          f"{'available' if r['ktls'] else 'not available on this host (user-space OpenSSL)'}; "
          f"tls/plain encode->send p50 {r['tls_vs_plain_send_p50']:.2f}x")
    print(f"simplefix/compiled p50: encode {r['simplefix_vs_compiled_encode_p50']:.0f}x, "
          f"parse {r['simplefix_vs_compiled_parse_p50']:.0f}x; rtt/echo p50 {r['rtt_vs_echo_p50']:.1f}x")
    print(f"targets: encode <= {r['encode_target_ns']} ns ({'met' if r['encode_nos_p50_ns'] <= 200 else 'MISSED'}), "
          f"parse <= {r['parse_target_ns']} ns ({'met' if r['parse_er_p50_ns'] <= 500 else 'MISSED'}) at p50")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench fix", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--cores", type=int, nargs=2, metavar=("GATEWAY", "PEER"),
                    help="cores for this process and the peer process (default: the last two allowed)")
    ap.add_argument("--samples", type=int, default=200_000, help="compiled encode/parse calls timed")
    ap.add_argument("--py-samples", type=int, default=20_000, help="simplefix calls timed")
    ap.add_argument("--rtt-samples", type=int, default=2_000, help="loopback round trips timed")
    ap.add_argument("--send-samples", type=int, default=20_000, help="encode -> send calls timed (each of TCP, TLS)")
    a = ap.parse_args(argv)
    r = run(tuple(a.cores) if a.cores else default_cores(), a.samples, a.py_samples, a.rtt_samples,
            a.send_samples)
    if a.json:
        json.dump(r, sys.stdout)
        print()
    else:
        print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
