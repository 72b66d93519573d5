"""The tick-to-trade bench's own instruments (benches/bench_tick_to_trade.py): the in-memory run
of the one-process layout's kernels, and the compiled send-then-receive the wire-to-wire figure
rests on. No timing is asserted: what is checked is that each instrument measures what it says."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benches import bench_tick_to_trade as t2t
from appliance.transport import clock


def test_send_then_recv_stamps_the_send_and_the_first_bytes_back():
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    for s in (a, b, c, d):
        s.setblocking(False)
    try:
        cal = clock.calibration()
        frame = np.frombuffer(b"frame-bytes", np.uint8).copy()
        out = np.zeros(2, np.int64)
        rio = np.zeros(2, np.int64)
        rbuf = np.zeros(64, np.uint8)
        d.send(b"order")                       # already waiting: returned at the first recv()
        t2t.send_then_recv(a.fileno(), frame, len(frame), c.fileno(), rbuf,
                           t2t._ticks(cal, 1.0), out, rio, t2t.venue_warm_off(), 0)
        assert out[1] == len(frame) and b.recv(64) == b"frame-bytes"
        assert rio[0] == 5 and rbuf[:5].tobytes() == b"order"
        assert 0 < out[0] <= rio[1]
        # nothing comes back: the spin ends at the deadline with -EAGAIN, the send still stamped
        t2t.send_then_recv(a.fileno(), frame, len(frame), c.fileno(), rbuf,
                           t2t._ticks(cal, 0.001), out, rio, t2t.venue_warm_off(), 0)
        assert out[1] == len(frame) and rio[0] == -t2t._EAGAIN
    finally:
        for s in (a, b, c, d):
            s.close()


def test_the_venue_warms_its_send_path_only_inside_the_window_between_frames():
    from appliance.transport import netwarm
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    for s in (a, b, c, d):
        s.setblocking(False)
    cal = clock.calibration()
    w = netwarm.NetWarm(5.0, cal)
    try:
        frame = np.frombuffer(b"frame-bytes", np.uint8).copy()
        out, rio, rbuf = np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(64, np.uint8)
        ticks, stop = t2t._ticks(cal, 0.004), t2t._ticks(cal, 0.001)
        win = np.array([0, 1], np.int64)                      # on: send_then_recv places it
        t2t.send_then_recv(a.fileno(), frame, len(frame), c.fileno(), rbuf, ticks, out, rio,
                           (w.words, w.buf, win), stop)
        assert rio[0] == -t2t._EAGAIN                          # nothing came back: a 4 ms spin
        assert (win[0], win[1]) == (out[0] + ticks // 4, out[0] + ticks - stop)
        warms = w.counts()["net_warms"]
        assert warms > 10 and w.counts()["net_warm_errors"] == 0
        last = int(w.words[netwarm.W_NEXT]) - int(w.words[netwarm.W_EVERY])   # the last one's end
        assert win[0] <= last < win[1] + stop // 2             # started inside the window
        win[:] = 0                                             # off: no window, no warm-up
        t2t.send_then_recv(a.fileno(), frame, len(frame), c.fileno(), rbuf, ticks, out, rio,
                           (w.words, w.buf, win), stop)
        assert w.counts()["net_warms"] == warms
    finally:
        w.close()
        for s in (a, b, c, d):
            s.close()


@pytest.mark.slow
def test_in_memory_run_times_frames_that_put_orders_in_the_send_buffer():
    """The recorded Binance frames through handle_frame -> engine -> gw_step in one compiled loop
    (compiled without NRT, as the group loop is): every timed frame put its two quotes in the
    send buffer as FIX NewOrderSingles."""
    from appliance.sim import venue as sim
    cal = clock.calibration()
    venue = t2t.Venue(sim.find_data_dir())
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = t2t.write_config(Path(d), venue, 1, "spin", {})
            res = t2t.in_memory(cal, venue, cfg, 1)
    finally:
        venue.close()
    assert res["frame_to_send_buffer_n"] > 100
    # two quotes per hot frame, each a NewOrderSingle (the venue's answers cancel them)
    assert res["frame_to_send_buffer_orders"] == 2 * res["frame_to_send_buffer_n"]
    assert res["frame_to_send_buffer_p50_ns"] > 0
    for kernel in (t2t._mem_frames, t2t._mem_answer, t2t._mem_drain):
        assert kernel.targetoptions.get("_nrt") is False


@pytest.mark.parametrize("ack_after_us", [-1.0, 20.0])
def test_paced_one_way_times_every_message_on_its_own(ack_after_us):
    """With the kernel's ACKs and with the md gateway's deferred ones."""
    cal = clock.calibration()
    cores = sorted(os.sched_getaffinity(0))
    res = t2t.tcp_paced(cal, 40, 200.0, 300, cores[0], cores[-1], ack_after_us)
    assert res["n"] == 30                      # the first 10 are dropped (warm-up)
    assert 0 < res["p50"] <= res["p99"]


def test_rings_go_where_the_appliance_would_put_them(tmp_path):
    import argparse
    from appliance.transport import shm
    assert t2t.shm_root(argparse.Namespace(shm_dir=str(tmp_path))) == str(tmp_path)
    assert t2t.shm_root(argparse.Namespace(shm_dir=None)) == str(shm.resolve_dir().parent)
    with pytest.raises(t2t.BenchError, match="not a directory"):
        t2t.shm_root(argparse.Namespace(shm_dir=str(tmp_path / "missing")))


def test_group_status_is_read_from_the_loops_closing_line(tmp_path):
    """The bench reports what the one-process loop left to Python (group_python_rounds) from the
    group's own closing status line; a log without one gives nothing rather than zeros."""
    log = tmp_path / "one-group.log"
    log.write_text(
        "2026-12-07 08:35:58,400 INFO appliance.group: group: warm\n"
        '2026-12-07 08:35:58,468 INFO appliance.group: group: {"kernel_calls": 37, "frames": 35, '
        '"batches": 23, "orders": 46, "fix_reads": 22, "python_rounds": {"orders": 1}}\n'
        "2026-12-07 08:35:58,470 INFO appliance.venues.gateway: md binance stopped: {}\n")
    st = t2t.group_status(log)
    assert st["group_kernel_calls"] == 37 and st["group_fix_reads"] == 22
    assert st["group_python_rounds"] == {"orders": 1}
    log.write_text("2026-12-07 08:35:58,400 INFO appliance.group: group: warm\n")
    assert t2t.group_status(log) == {}
    assert t2t.group_status(tmp_path / "missing.log") == {}


def test_warm_ab_splits_the_hops_by_the_tsc_bit_at_the_frames_arrival():
    from appliance.transport import records
    cal = clock.calibration()
    base = 5 << (t2t.WARM_AB_BIT + 1)                 # bit WARM_AB_BIT 0: a warm period
    origins = [base + 1000, base + (1 << t2t.WARM_AB_BIT) + 1000]   # then a cold one
    md = np.zeros((4, records.MD_RECORD_SIZE), np.uint8)
    od = np.zeros((2, records.ORDER_RECORD_SIZE), np.uint8)
    sent, received = [], {}
    for k, o in enumerate(origins):
        l2 = md[2 * k].view(records.L2_UPDATE)[0]
        l2["rtype"], l2["origin_tsc"], l2["publish_tsc"] = records.RT_L2_UPDATE, o, o + 100
        end = md[2 * k + 1].view(records.HEADER)[0]
        end["rtype"], end["flags"] = records.RT_BATCH_END, records.F_LAST
        end["origin_tsc"], end["publish_tsc"] = o, o + 200
        no = od[k].view(records.NEW_ORDER)[0]
        no["rtype"], no["origin_tsc"], no["publish_tsc"], no["clord_id"] = (
            records.RT_NEW_ORDER, o, o + 300, 100 + k)
        received[str(100 + k).encode()] = o + 5000 * (k + 1)
        # (send TSC, timed, t2t count, t2t sum ns, o2w count, o2w sum ns, venue warmed)
        sent.append((o - 400, True, 1, 1000 * (k + 1), 1, 500 * (k + 1), -1))
    res = t2t.analyse(cal, sent, md, od, received, t2t.WARM_AB_BIT)
    assert (res["tick_to_trade_warm_p50_ns"], res["tick_to_trade_cold_p50_ns"]) == (1000, 2000)
    assert (res["order_to_wire_warm_p50_ns"], res["order_to_wire_cold_p50_ns"]) == (500, 1000)
    ns = t2t._ns(cal, [5000 + 400, 10000 + 400])
    assert (res["wire_to_wire_warm_p50_ns"], res["wire_to_wire_cold_p50_ns"]) == (
        pytest.approx(ns[0], abs=0.1), pytest.approx(ns[1], abs=0.1))
    assert "tick_to_trade_warm_p50_ns" not in t2t.analyse(cal, sent, md, od, received)


def test_the_echo_gives_one_sample_per_round_trip_after_its_warm_up():
    cal = clock.calibration()
    cores = sorted(os.sched_getaffinity(0))
    ns = t2t.tcp_echo_ns(cal, 50, cores[0], cores[-1])
    assert ns.shape == (50,) and (ns > 0).all()     # the 100 warm-up round trips are dropped


def test_the_baseline_is_the_p50_of_both_halves_samples_not_the_mean_of_their_p50s():
    before = (np.array([10.0, 11.0, 12.0, 13.0]), np.array([100.0, 101.0]))
    after = (np.array([30.0, 31.0, 32.0, 33.0, 34.0, 35.0]), np.array([300.0]))
    k = t2t.baseline_keys(before, after)
    assert k["baseline_tick_to_trade_p50_ns"] == 30.5     # 10 samples: (30 + 31) / 2
    assert k["baseline_n"] == 10
    assert k["baseline_wire_to_wire_p50_ns"] == 101.0
    assert (k["baseline_before_p50_ns"], k["baseline_after_p50_ns"]) == (11.5, 32.5)
