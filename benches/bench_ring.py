"""``appliance bench ring``: cross-core latency and throughput of the seqlock ring, with baselines.

Two processes pinned to two different cores (``--cores A B``) measure, in one run:

- floor: one cache line bounced between the cores (the hardware's one-way cost, RTT / 2);
- ring: ping-pong over two 64-byte-record rings (one each way), one-way = RTT / 2;
- throughput: one producer streaming records to one consumer, and to two consumers;
- merge: the consumer-side cost of polling five empty rings (one ring per md gateway);
- baselines: os.pipe and multiprocessing.Queue ping-pong between the same two processes.

Latencies are measured with rdtsc inside compiled loops (no Python per round trip) except for the
pipe and queue baselines, which are Python by nature. Timing starts after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from numba import njit

from appliance.transport import clock, ring, shm
from appliance.transport.intrinsics import cpu_pause, load_acquire, rdtsc, store_release

LINE_OFF = 0


# ----------------------------------------------------------------------------- compiled kernels

STUCK_SPINS = 1 << 34     # ~10 s of spinning: the peer is gone, give up instead of hanging


@njit(cache=True, nogil=True)
def _floor_ping(line, n, lat):
    for i in range(n):
        t0 = rdtsc()
        store_release(line, LINE_OFF, 2 * i + 1)
        spins = 0
        while load_acquire(line, LINE_OFF) != np.uint64(2 * i + 2):
            cpu_pause()
            spins += 1
            if spins > STUCK_SPINS:
                return i
        lat[i] = rdtsc() - t0
    return n


@njit(cache=True, nogil=True)
def _floor_pong(line, n):
    for i in range(n):
        spins = 0
        while load_acquire(line, LINE_OFF) != np.uint64(2 * i + 1):
            cpu_pause()
            spins += 1
            if spins > STUCK_SPINS:
                return i
        store_release(line, LINE_OFF, 2 * i + 2)
    return n


@njit(cache=True, nogil=True)
def _ring_ping(ohdr, odata, ihdr, idata, icur, rec, out, n, lat):
    for i in range(n):
        t0 = rdtsc()
        ring.publish(ohdr, odata, rec)
        spins = 0
        while ring.poll(ihdr, idata, icur, out) == 0:
            cpu_pause()          # what wait.idle does in a spinning actor
            spins += 1
            if spins > STUCK_SPINS:
                return i
        lat[i] = rdtsc() - t0
    return n


@njit(cache=True, nogil=True)
def _ring_pong(ohdr, odata, ihdr, idata, icur, rec, out, n):
    for i in range(n):
        spins = 0
        while ring.poll(ihdr, idata, icur, out) == 0:
            cpu_pause()          # what wait.idle does in a spinning actor
            spins += 1
            if spins > STUCK_SPINS:
                return i
        ring.publish(ohdr, odata, out)
    return n


@njit(cache=True, nogil=True)
def _stream(hdr, data, rec, n):
    for _ in range(n):
        ring.publish(hdr, data, rec)


@njit(cache=True, nogil=True)
def _sink(hdr, data, cur, out, n):
    """Read until n records have been read or lost; returns (first tsc, last tsc, lost)."""
    got = 0
    t0 = np.uint64(0)
    lost0 = cur[ring.CUR_LOST]
    while got + (cur[ring.CUR_LOST] - lost0) < n:
        if ring.poll(hdr, data, cur, out):
            if got == 0:
                t0 = rdtsc()
            got += 1
        else:
            cpu_pause()
    return t0, rdtsc(), cur[ring.CUR_LOST] - lost0


@njit(cache=True, nogil=True)
def _merge_poll(rings, out, n):
    """Poll five rings (``rings``: five (header, data, cursor) tuples) once each per iteration
    (all empty): the consumer's idle merge cost. Returns the ticks for all n iterations (too
    short to time one by one)."""
    h0, d0, c0 = rings[0]
    h1, d1, c1 = rings[1]
    h2, d2, c2 = rings[2]
    h3, d3, c3 = rings[3]
    h4, d4, c4 = rings[4]
    got = 0
    t0 = rdtsc()
    for i in range(n):
        got += ring.poll(h0, d0, c0, out)
        got += ring.poll(h1, d1, c1, out)
        got += ring.poll(h2, d2, c2, out)
        got += ring.poll(h3, d3, c3, out)
        got += ring.poll(h4, d4, c4, out)
    return rdtsc() - t0 + got


# ------------------------------------------------------------------------------------ processes

def _pin(core):
    if core is not None:
        os.sched_setaffinity(0, {core})


def _echo_process(core, shm_dir, n_floor, n_ring, n_pipe, n_queue, tput_n, pipes, queues, ready, phase):
    _pin(core)
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    line_region = shm.attach("bench.line", shm.KIND_RAW)
    line = line_region.data_view().reshape(-1).view(np.uint64)
    ab = ring.RingReader.attach("bench.ab", "echo", start="latest")
    ba = ring.RingWriter.create("bench.ba", 64, 1024)
    rec = np.zeros(64, np.uint8)
    out = np.zeros(64, np.uint8)
    # compile (throwaway arrays)
    _floor_pong(np.zeros(8, np.uint64), 0)
    _ring_pong(ba.hdr, ba.data, ab.hdr, ab.data, ab.cur, rec, out, 0)
    _sink(ab.hdr, ab.data, ab.cur.copy(), out, 0)
    ready.set()
    _floor_pong(line, n_floor)
    _ring_pong(ba.hdr, ba.data, ab.hdr, ab.data, ab.cur, rec, out, n_ring)
    # pipe baseline
    r_fd, w_fd = pipes
    for _ in range(n_pipe):
        os.write(w_fd, os.read(r_fd, 64))
    q_in, q_out = queues
    for _ in range(n_queue):
        q_out.put(q_in.get())
    # throughput: one consumer (this process), then two (this one plus a third process)
    for stage in (1, 2):
        phase[stage].wait(120)
        res = np.array(_sink(ab.hdr, ab.data, ab.cur, out, tput_n), dtype=np.int64)
        phase[2 + stage].put(res.tolist())
    ab.close()
    ba.close()
    line_region.close()


def _second_consumer(core, shm_dir, tput_n, ready, go, results):
    _pin(core)
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    ab = ring.RingReader.attach("bench.ab", "second", start="latest")
    out = np.zeros(64, np.uint8)
    _sink(ab.hdr, ab.data, ab.cur.copy(), out, 0)
    ready.set()
    go.wait(120)
    results.put(np.array(_sink(ab.hdr, ab.data, ab.cur, out, tput_n), dtype=np.int64).tolist())
    ab.close()


def _pct(ns: np.ndarray) -> dict:
    return {"p50": float(np.percentile(ns, 50)), "p99": float(np.percentile(ns, 99)),
            "p999": float(np.percentile(ns, 99.9)), "max": float(ns.max())}


def run(cores=(None, None), n_lat=200_000, n_pipe=20_000, n_queue=10_000, tput_n=20_000_000,
        capacity=1 << 16) -> dict:
    cal = clock.calibration()
    base = shm.resolve_dir()
    shm_dir = tempfile.mkdtemp(prefix="bench-", dir=str(base)) if base.exists() or _mk(base) else None
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    ctx = mp.get_context("fork")   # the pipe baseline needs the child to inherit the fds
    try:
        line_region = shm.create("bench.line", shm.KIND_RAW, 64, 1, 4096)
        line = line_region.data_view().reshape(-1).view(np.uint64)
        ab = ring.RingWriter.create("bench.ab", 64, capacity)
        backing = ab.region.backing
        p_r, c_w = os.pipe()
        c_r, p_w = os.pipe()
        q1, q2 = ctx.Queue(), ctx.Queue()
        ready = ctx.Event()
        phase = [None, ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()]
        echo = ctx.Process(target=_echo_process, args=(cores[1], shm_dir, n_lat, n_lat, n_pipe, n_queue,
                                                        tput_n, (c_r, c_w), (q1, q2), ready, phase))
        echo.start()
        _pin(cores[0])
        rec = np.zeros(64, np.uint8)
        out = np.zeros(64, np.uint8)
        lat = np.zeros(n_lat, np.uint64)
        _floor_ping(np.zeros(8, np.uint64), 0, lat)
        if not ready.wait(180):
            raise RuntimeError("echo process did not start")
        ba = ring.RingReader.attach("bench.ba", "ping", start="latest")
        _ring_ping(ab.hdr, ab.data, ba.hdr, ba.data, ba.cur.copy(), rec, out, 0, lat)
        if _floor_ping(line, n_lat, lat) != n_lat:
            raise RuntimeError("echo process stopped answering (floor)")
        warm = n_lat // 10
        floor = np.array([clock.tsc_to_ns_py(cal, int(x)) for x in lat[warm:]], np.float64) / 2
        if _ring_ping(ab.hdr, ab.data, ba.hdr, ba.data, ba.cur, rec, out, n_lat, lat) != n_lat:
            raise RuntimeError("echo process stopped answering (ring)")
        ringl = np.array([clock.tsc_to_ns_py(cal, int(x)) for x in lat[warm:]], np.float64) / 2
        # os.pipe ping-pong
        msg = bytes(64)
        pl = np.zeros(n_pipe, np.float64)
        for i in range(n_pipe):
            t0 = time.perf_counter_ns()
            os.write(p_w, msg)
            os.read(p_r, 64)
            pl[i] = (time.perf_counter_ns() - t0) / 2
        ql = np.zeros(n_queue, np.float64)
        for i in range(n_queue):
            t0 = time.perf_counter_ns()
            q1.put(msg)
            q2.get()
            ql[i] = (time.perf_counter_ns() - t0) / 2
        # throughput, one consumer
        _stream(ab.hdr, ab.data, rec, 0)
        phase[1].set()
        time.sleep(0.2)
        _stream(ab.hdr, ab.data, rec, tput_n)
        t0, t1, lost1 = phase[3].get(timeout=120)
        tput1 = (tput_n - lost1) / clock.tsc_to_ns_py(cal, t1 - t0) * 1e9
        # throughput, two consumers
        go = ctx.Event()
        ready2 = ctx.Event()
        res2 = ctx.Queue()
        second = ctx.Process(target=_second_consumer, args=(cores[0], shm_dir, tput_n, ready2, go, res2))
        second.start()
        if not ready2.wait(180):
            raise RuntimeError("second consumer did not start")
        phase[2].set()
        go.set()
        time.sleep(0.2)
        _stream(ab.hdr, ab.data, rec, tput_n)
        r_a = phase[4].get(timeout=120)
        r_b = res2.get(timeout=120)
        rates = []
        for t0, t1, lost in (r_a, r_b):
            rates.append((tput_n - lost) / max(1, clock.tsc_to_ns_py(cal, t1 - t0)) * 1e9)
        lost2 = int(r_a[2] + r_b[2])
        echo.join(60)
        second.join(60)
        # merge cost: five empty rings polled per iteration
        args = []
        for _ in range(5):
            h, d = ring.local_ring(64, 1024)
            args.append((h, d, ring.local_cursor(h)))
        rings5 = tuple(args)
        _merge_poll(rings5, out, 1000)
        n_merge = 2_000_000
        merge_ns = clock.tsc_to_ns_py(cal, int(_merge_poll(rings5, out, n_merge))) / n_merge
        fl, rl = _pct(floor), _pct(ringl)
        result = {
            "backing": backing, "cores": list(cores), "clock": clock.describe(cal),
            "floor_p50_ns": fl["p50"], "floor_p99_ns": fl["p99"], "floor_p999_ns": fl["p999"],
            "floor_max_ns": fl["max"],
            "ring_p50_ns": rl["p50"], "ring_p99_ns": rl["p99"], "ring_p999_ns": rl["p999"],
            "ring_max_ns": rl["max"],
            "pipe_p50_ns": float(np.percentile(pl, 50)), "pipe_p99_ns": float(np.percentile(pl, 99)),
            "mpqueue_p50_ns": float(np.percentile(ql, 50)), "mpqueue_p99_ns": float(np.percentile(ql, 99)),
            "throughput_msgs_per_s": tput1, "throughput_lost": int(lost1),
            "throughput_2c_msgs_per_s": min(rates), "throughput_2c_lost": lost2,
            "merge5_empty_poll_ns": merge_ns,
            "ring_vs_floor_p50": rl["p50"] / fl["p50"], "ring_vs_floor_p99": rl["p99"] / fl["p99"],
            "pipe_vs_ring_p50": float(np.percentile(pl, 50)) / rl["p50"],
            "samples": int(len(ringl)),
        }
        ba.close()
        ab.close()
        line_region.close()
        return result
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)


def _mk(p) -> bool:
    try:
        os.makedirs(p, exist_ok=True)
        return True
    except OSError:
        return False


def default_cores() -> tuple:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-2], cpus[-1]) if len(cpus) >= 2 else (None, None)


def print_table(r: dict) -> None:
    print(f"ring benchmark  backing={r['backing']}  cores={r['cores']}  {r['clock']}")
    print(f"{'one-way latency (ns)':<28}{'p50':>10}{'p99':>10}{'p99.9':>10}{'max':>12}")
    print(f"{'cache-line floor':<28}{r['floor_p50_ns']:>10.0f}{r['floor_p99_ns']:>10.0f}"
          f"{r['floor_p999_ns']:>10.0f}{r['floor_max_ns']:>12.0f}")
    print(f"{'seqlock ring (64 B)':<28}{r['ring_p50_ns']:>10.0f}{r['ring_p99_ns']:>10.0f}"
          f"{r['ring_p999_ns']:>10.0f}{r['ring_max_ns']:>12.0f}")
    print(f"{'os.pipe':<28}{r['pipe_p50_ns']:>10.0f}{r['pipe_p99_ns']:>10.0f}")
    print(f"{'multiprocessing.Queue':<28}{r['mpqueue_p50_ns']:>10.0f}{r['mpqueue_p99_ns']:>10.0f}")
    print(f"ring/floor p50 {r['ring_vs_floor_p50']:.2f}x  p99 {r['ring_vs_floor_p99']:.2f}x  "
          f"pipe/ring p50 {r['pipe_vs_ring_p50']:.1f}x")
    print(f"throughput 1 consumer  {r['throughput_msgs_per_s'] / 1e6:8.1f} M msgs/s (lost {r['throughput_lost']})")
    print(f"throughput 2 consumers {r['throughput_2c_msgs_per_s'] / 1e6:8.1f} M msgs/s each, slowest "
          f"(lost {r['throughput_2c_lost']})")
    print(f"merge: polling 5 empty rings costs {r['merge5_empty_poll_ns']:.1f} ns per round")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench ring", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--cores", type=int, nargs=2, metavar=("PING", "PONG"),
                    help="cores for the two processes (default: the last two allowed)")
    ap.add_argument("--samples", type=int, default=200_000, help="latency round trips")
    ap.add_argument("--messages", type=int, default=20_000_000, help="throughput messages")
    a = ap.parse_args(argv)
    r = run(tuple(a.cores) if a.cores else default_cores(), n_lat=a.samples, tput_n=a.messages)
    if a.json:
        json.dump(r, sys.stdout)
        print()
    else:
        print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
