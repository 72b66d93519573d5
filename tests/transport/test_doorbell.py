"""The rings' doorbell (transport/ring.py): a consumer whose back-off wait would sleep sleeps on
its input rings' BELL words (futex_waitv) and a producer's notify ends that sleep; nobody armed,
the producer does nothing but one load. Every sleep here is long (5 s): a test that passes was
woken by the bell, which the wait state counts (S_RUNG), not by its timeout."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

import numpy as np

from appliance.group import run as group
from appliance.engine import kernels
from appliance.transport import records, ring, wait

LONG_NS = 5_000_000_000


def _words(hdr) -> tuple[int, int, int]:
    """(SLEEP, BELL, RUNG) of a ring header."""
    w = hdr.view(np.uint64)
    return int(w[ring.SLEEP_OFF // 8]), int(w[ring.BELL_OFF // 8]), int(w[ring.RUNG_OFF // 8])


def _long_backoff() -> np.ndarray:
    return wait.make("backoff", None, 0, LONG_NS, LONG_NS)


def _publish_when_armed(hdr, data, rec, writer=None) -> threading.Thread:
    """A producer thread that publishes one record once a consumer has armed the ring, and
    notifies (``writer``: through RingWriter.publish, which notifies by itself)."""
    def run():
        end = time.monotonic() + 30
        while _words(hdr)[0] == 0 and time.monotonic() < end:
            time.sleep(0.001)
        time.sleep(0.02)                    # the consumer is in futex_waitv (or about to be)
        if writer is not None:
            writer.publish(rec)
        else:
            ring.publish(hdr, data, rec)
            ring.notify(hdr)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_notify_with_nobody_asleep_rings_nothing():
    hdr, data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    ring.publish(hdr, data, np.zeros(records.ORDER_RECORD_SIZE, np.uint8))
    assert not ring.notify(hdr)
    assert _words(hdr) == (0, 0, 0)


def test_publishing_alone_rings_nothing():
    """The producer rings once per batch (notify), not per record: a bare publish leaves the
    sleeper asleep (a hot path such as gw_step stays as it was)."""
    hdr, data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    ring.arm(hdr, ring.bell_rows([hdr]), 0)
    ring.publish(hdr, data, np.zeros(records.ORDER_RECORD_SIZE, np.uint8))
    assert _words(hdr) == (1, 0, 0)


def test_an_armed_ring_is_rung_once_and_disarmed():
    hdr, _data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    bells = ring.bell_rows([hdr])
    assert bells[0, 1] == hdr.ctypes.data + ring.BELL_OFF and bells[0, 2] == 2   # FUTEX_32
    ring.arm(hdr, bells, 0)
    assert _words(hdr) == (1, 0, 0)
    assert ring.notify(hdr)
    assert _words(hdr) == (0, 1, 1)
    assert not ring.notify(hdr)            # disarmed: the next batch costs one load again
    assert _words(hdr) == (0, 1, 1)


def test_a_record_published_before_the_sleep_means_no_sleep():
    hdr, data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    cur = ring.local_cursor(hdr)
    ring.publish(hdr, data, np.zeros(records.ORDER_RECORD_SIZE, np.uint8))
    st = wait.new_state()
    ring.idle_on(_long_backoff(), st, hdr, cur, ring.bell_rows([hdr]))
    assert st[wait.S_SLEEPS] == 0 and st[wait.S_RUNG] == 0


def test_spinning_waits_never_arm():
    hdr, _data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    cur = ring.local_cursor(hdr)
    st = wait.new_state()
    for kind in ("spin", "spin_yield"):
        ring.idle_on(wait.make(kind, None, 0), st, hdr, cur, ring.bell_rows([hdr]))
    assert _words(hdr) == (0, 0, 0) and st[wait.S_SLEEPS] == 0


def test_a_sleeping_consumer_is_woken_by_the_producer():
    hdr, data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    cur = ring.local_cursor(hdr)
    st = wait.new_state()
    t = _publish_when_armed(hdr, data, np.zeros(records.ORDER_RECORD_SIZE, np.uint8))
    ring.idle_on(_long_backoff(), st, hdr, cur, ring.bell_rows([hdr]))
    t.join(30)
    assert st[wait.S_SLEEPS] == 1 and st[wait.S_RUNG] == 1
    assert _words(hdr)[2] == 1
    assert ring.behind(hdr, cur) == 1


def test_the_engine_sleeps_on_all_its_input_rings():
    """The engine's idle pass arms its md ring and its exec ring; an exec record ends the sleep."""
    _md, _cal, en, _fx, _frx, _g, _w = group.scratch_args("binance")
    loop = en.loop
    assert loop.bells.shape == (2, ring.BELL_COLS)          # one md ring, one exec ring
    loop.wait_params[:] = _long_backoff()
    eh, ed = loop.ex_hdrs[0], loop.ex_datas[0]
    t = _publish_when_armed(eh, ed, np.zeros(records.EXEC_RECORD_SIZE, np.uint8))
    kernels._idle(loop)
    t.join(30)
    st = loop.wait_state
    assert st[wait.S_SLEEPS] == 1 and st[wait.S_RUNG] == 1
    assert _words(loop.md_hdrs[0])[0] == 1                   # armed, not rung: no md record came
    assert _words(eh)[2] == 1


def _sleeper(name: str, shm_dir: str, q) -> None:
    """Child process: attach to ring ``name`` and sleep on its doorbell once; report the wait
    state's sleeps and rings."""
    r = ring.RingReader.attach(name, "sleeper", ring.START_LATEST, shm_dir=shm_dir)
    st = wait.new_state()
    ring.idle_on(_long_backoff(), st, r.hdr, r.cur, ring.bell_rows([r.hdr]))
    q.put((int(st[wait.S_SLEEPS]), int(st[wait.S_RUNG]), int(ring.behind(r.hdr, r.cur))))
    r.close()


def test_the_doorbell_works_across_processes(shm_dir):
    w = ring.RingWriter.create("bell", records.ORDER_RECORD_SIZE, 64, shm_dir=str(shm_dir))
    try:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_sleeper, args=("bell", str(shm_dir), q))
        p.start()
        t = _publish_when_armed(w.hdr, w.data, np.zeros(records.ORDER_RECORD_SIZE, np.uint8), w)
        sleeps, rung, behind = q.get(timeout=60)
        p.join(30)
        t.join(30)
        assert p.exitcode == 0
        assert (sleeps, rung, behind) == (1, 1, 1)
        assert _words(w.hdr)[2] == 1
    finally:
        w.close()


def test_a_refused_futex_wait_falls_back_to_the_plain_sleep():
    """A kernel without futex_waitv (ENOSYS) or one that refuses the vector: the back-off's
    nanosleep from then on, never a busy loop."""
    bad = np.zeros((1, ring.BELL_COLS), np.int64)
    bad[0, 2] = 2                                  # FUTEX_32 on address 0: EFAULT
    st = wait.new_state()
    p = wait.make("backoff", None, 0, 1_000_000, 1_000_000)
    wait.sleep_bells(p, st, bad, 1)
    assert st[wait.S_NO_WAITV] == 1 and st[wait.S_SLEEPS] == 1 and st[wait.S_RUNG] == 0
    wait.sleep_bells(p, st, bad, 1)                # no second attempt
    assert st[wait.S_SLEEPS] == 2 and st[wait.S_RUNG] == 0


def test_bench_wake_reports_both_waits_and_only_the_doorbell_is_rung(capsys):
    """``appliance bench wake --json``: the doorbell and the nanosleep run side by side; every
    doorbell run's sleeps end at the producer's ring, no nanosleep run is ever rung."""
    import json

    from benches import bench_wake
    assert bench_wake.main(["--json", "--records", "200", "--pace-us", "300"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    wheres = ["same_core"] + (["other_core"] if len(res["cores"]) > 1 else [])
    for where in wheres:
        assert res[f"doorbell_{where}_rung"] > 0
        assert res[f"nanosleep_{where}_rung"] == 0
        assert res[f"nanosleep_{where}_sleeps"] > 0
        assert res[f"doorbell_{where}_p50_ns"] > 0 and res[f"nanosleep_{where}_p50_ns"] > 0
        assert f"nanosleep_vs_doorbell_{where}" in res
