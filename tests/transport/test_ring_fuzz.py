"""Cross-process fuzz: one producer, several consumer processes, millions of records whose payload
is a function of the record's sequence, so any torn read breaks it; lapping must be reported with
the exact number of records lost."""
from __future__ import annotations

import multiprocessing as mp

from tests.transport import ringprocs as rp

N = 3_000_000
CAPACITY = 4096


def test_two_consumers_see_every_record_untorn_and_count_exactly_what_they_lost(shm_dir):
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    ready = [ctx.Event() for _ in range(3)]
    results = ctx.Manager().dict()
    prod = ctx.Process(target=rp.producer_main, args=("fuzz", str(shm_dir), CAPACITY, N, ready[0], go))
    prod.start()
    assert ready[0].wait(120), "producer did not start"
    # consumer 0 reads flat out; consumer 1 stalls every 200k records long enough to be lapped
    cons = [ctx.Process(target=rp.consumer_main,
                        args=("fuzz", str(shm_dir), N, slow_every, slow_spins, ready[1 + k], go, results, k))
            for k, (slow_every, slow_spins) in enumerate(((0, 0), (200_000, 2_000_000)))]
    for c in cons:
        c.start()
    for e in ready[1:]:
        assert e.wait(120), "consumer did not start"
    go.set()
    prod.join(120)
    for c in cons:
        c.join(120)
    assert prod.exitcode == 0
    assert [c.exitcode for c in cons] == [0, 0]
    for k in (0, 1):
        res = results[k]
        read, torn, gaps, jumps, last, backwards, timeout, _, lost, position = res
        assert timeout == 0, f"consumer {k} timed out: {res}"
        assert torn == 0, f"consumer {k} saw {torn} torn records"
        assert backwards == 0
        assert last == N - 1 and position == N
        # every record was either read or counted as lost, exactly
        assert gaps == lost, f"consumer {k}: sequence gaps {gaps} != reported lost {lost}"
        assert read + lost == N, f"consumer {k}: read {read} + lost {lost} != {N}"
    # the stalled consumer was lapped, and knew it
    assert results[1][8] > 0 and results[1][3] > 0
