"""Compile (or load from the cache) the transport's kernels with the types their Python callers
use: clock, rings, control block, wait strategies, histograms (see :mod:`appliance.jit`). Every
actor runs it before its own warm-up (:meth:`appliance.actor.Actor.run`): the lifecycle itself
(heartbeat, clock re-anchor, kill acknowledgement) calls these from Python."""
from __future__ import annotations

import numpy as np

from appliance.transport import clock, control, hist, records, ring, wait


def warm() -> int:
    """Call every transport kernel once on private arrays; returns how many were called."""
    cal = clock.calibration()
    clock.now(cal)
    clock.tsc_to_ns(cal, np.int64(1))
    clock.tsc_to_utc_ns(cal, np.int64(1))
    hdr, data = ring.local_ring(records.ORDER_RECORD_SIZE, 8)
    cur = ring.local_cursor(hdr)
    rec = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
    ring.publish(hdr, data, rec)
    ring.poll(hdr, data, cur, rec)
    ring.end_write(hdr, data, ring.begin_write(hdr, data))
    ring.drain(hdr, data, cur, np.zeros((4, records.ORDER_RECORD_SIZE), np.uint8), 4)
    ring.head(hdr)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    control.kill_requested(words)
    control.kill_epoch(words)
    control.request_kill(words, control.SOURCE_CLI, 1)
    control.ack_kill(words, np.uint64(1), np.uint64(1))
    control.actor_ack_kill(words, 0, 1)           # as the FIX gateway calls it (Python ints)
    control.set_risk_state(words, records.RISK_RUNNING)
    control.heartbeat(words, 0, 1)                # as Actor.beat calls it (time.time_ns())
    control.store_release_py(words, control.KILL_OFF, 0)
    params, state = wait.make("spin"), wait.new_state()
    wait.idle(params, state)
    wait.reset(state)
    # the doorbell wait, as the FIX gateway's step calls it (a published record: no sleep)
    ring.publish(hdr, data, rec)
    ring.idle_on(wait.make("backoff", None, 0), state, hdr, cur, ring.bell_rows([hdr]))
    ring.notify(hdr)
    row = hist.new_row()
    hist.record(row, 1)
    hist.bucket(1)
    return 23
