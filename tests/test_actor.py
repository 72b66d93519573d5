"""The actor lifecycle: order of the steps, stop on a signal, status files, failures."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from appliance import actor, config
from appliance.transport import control, telemetry


def _cfg(tmp_path, shm_dir):
    return config.parse({"appliance": {"state_dir": str(tmp_path / "state"),
                                       "shm_dir": str(shm_dir)}})


class Recording(actor.Actor):
    def __init__(self, cfg, polls=3, fail_in=None):
        super().__init__(cfg, "probe")
        self.calls = []
        self.polls = polls
        self.fail_in = fail_in

    def _hook(self, name):
        self.calls.append(name)
        if name == self.fail_in:
            raise actor.ActorError(f"{name} failed on purpose")

    def warm(self):
        self._hook("warm")

    def open(self):
        self._hook("open")

    def start(self):
        self._hook("start")
        self.tm.counter("polls")

    def poll(self):
        self._hook("poll")
        self.tm.counters[self.tm.counter("polls")] += 1
        if self.calls.count("poll") >= self.polls:
            self.stopping = True

    def status(self):
        return {"polls": self.calls.count("poll")}

    def close(self):
        self._hook("close")


def test_steps_run_in_order_and_the_status_is_written_0640_whatever_the_umask(tmp_path, shm_dir):
    old = os.umask(0)
    try:
        a = Recording(_cfg(tmp_path, shm_dir))
        assert a.run() == actor.EXIT_OK
    finally:
        os.umask(old)
    assert a.calls == ["warm", "open", "start", "poll", "poll", "poll", "close"]
    path = actor.status_path(tmp_path / "state", "probe")
    st = json.loads(path.read_text())
    assert st["name"] == "probe" and st["polls"] == 3 and st["live"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    snap = telemetry.read_all(str(shm_dir))["probe"]
    assert snap["counters"]["polls"] == 3 and snap["alive"] is False
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        line = [x for x in cb.actors() if x["name"] == "probe"][0]
        assert line["pid"] == os.getpid() and line["loops"] >= 3
    finally:
        cb.close()




def test_the_periodic_status_is_published_a_piece_per_tick(tmp_path, shm_dir):
    """When the status period is due, each tick does one piece of the publish (re-anchor and
    periodic, counters, gauges, snapshot, file), so a busy loop is never away for all of it;
    ``tick(force=True)`` and ``publish_status`` do it whole, finishing one in progress."""
    a = Recording(_cfg(tmp_path, shm_dir))
    a._register()
    path = actor.status_path(tmp_path / "state", "probe")
    try:
        a.calls = ["poll"]
        ticks = 0
        while True:
            a.tick()
            ticks += 1
            a._writer.flush()
            if path.exists():
                break
            assert ticks < 10
        assert ticks == 5 and not a.status_step()
        assert json.loads(path.read_text())["polls"] == 1
        assert telemetry.read_all(str(shm_dir))["probe"]["counters"]["live_compiles"] == 0
        a.tick()                                      # not due again yet: nothing starts
        assert a._publishing is None
        a._next_status = 0.0
        a.calls = ["poll"] * 2
        a.tick()
        assert a.status_step()                        # in progress ...
        a.calls = ["poll"] * 3
        a.publish_status(wait=True)                   # ... finished, then a whole one now
        assert a._publishing is None and not a.status_step()
        assert json.loads(path.read_text())["polls"] == 3
        a.calls = ["poll"] * 4
        a.tick(force=True)
        a._writer.flush()
        assert json.loads(path.read_text())["polls"] == 4
    finally:
        a._writer.close()
        a._release()


def test_the_heap_is_frozen_out_of_the_collector_while_live(tmp_path, shm_dir):
    """What exists when the actor goes live is kept out of the cyclic collector's scans (a full
    collection would walk it in the loop) until the actor stops."""
    import gc

    class Frozen(Recording):
        def poll(self):
            self.frozen = gc.get_freeze_count()
            super().poll()

    before = gc.get_freeze_count()
    a = Frozen(_cfg(tmp_path, shm_dir), polls=1)
    assert a.run() == actor.EXIT_OK
    assert a.frozen > 1000 and gc.get_freeze_count() == before == 0


def test_a_kernel_compiled_after_the_warm_up_is_counted_and_logged(tmp_path, shm_dir, caplog):
    """A kernel the warm-up missed compiles (or loads from the cache) in the live loop: the
    actor counts it in telemetry (``live_compiles``) and logs which one; one the warm-up ran
    is free."""
    import numpy as np
    from numba import njit

    @njit(cache=False)
    def warmed(a):
        return a[0] + 1

    @njit(cache=False)
    def missed(a):
        return a[0] * 2

    class Late(Recording):
        def warm(self):
            warmed(np.zeros(1, np.int64))
            super().warm()

        def poll(self):
            warmed(np.ones(1, np.int64))
            if self.calls.count("poll") == 1:
                missed(np.ones(1, np.int64))
                self.publish_status(wait=True)
                self.seen = telemetry.read_all(self.shm_dir)["probe"]["counters"]
            super().poll()

    a = Late(_cfg(tmp_path, shm_dir))
    with caplog.at_level("WARNING"):
        assert a.run() == actor.EXIT_OK
    assert a.live_compiles == 1 and a.seen["live_compiles"] == 1
    assert [r for r in caplog.records if "missed" in r.getMessage()
            and "after the warm-up" in r.getMessage()]
    from numba.core.registry import CPUDispatcher
    assert CPUDispatcher._appliance_watched is None          # not counted once the actor stops


@pytest.mark.parametrize("where, rc, closed", [("warm", actor.EXIT_CANNOT_START, False),
                                               ("open", actor.EXIT_CANNOT_START, True),
                                               ("poll", actor.EXIT_FAILED, True)])
def test_a_failing_step_gives_its_exit_status_and_still_closes(tmp_path, shm_dir, where, rc,
                                                                closed):
    a = Recording(_cfg(tmp_path, shm_dir), fail_in=where)
    assert a.run() == rc
    assert ("close" in a.calls) == closed


def test_wait_for_gives_up_with_a_reason_and_on_stop(tmp_path, shm_dir):
    a = Recording(_cfg(tmp_path, shm_dir))
    with pytest.raises(actor.ActorError, match="ring x is not there after 0.2 s"):
        a.wait_for("ring x", lambda: None, 0.2, 0.01)
    a.stopping = True
    with pytest.raises(actor.ActorError, match="stopped while waiting"):
        a.wait_for("ring x", lambda: None, 10, 0.01)


PROBE = textwrap.dedent("""
    import sys, time
    from appliance import actor, config
    class Busy(actor.Actor):
        def poll(self):
            time.sleep(0.01)
    cfg = config.parse({"appliance": {"state_dir": sys.argv[1], "shm_dir": sys.argv[2]}})
    sys.exit(Busy(cfg, "busy").run())
""")


def test_sigterm_stops_a_running_actor_cleanly(tmp_path, shm_dir):
    p = subprocess.Popen([sys.executable, "-c", PROBE, str(tmp_path / "state"), str(shm_dir)])
    try:
        path = actor.status_path(tmp_path / "state", "busy")
        deadline = time.monotonic() + 60
        while not path.exists():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert json.loads(path.read_text())["live"] is False
    finally:
        if p.poll() is None:
            p.kill()


def test_stop_signals_call_on_stop_and_restore_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in actor.STOP_SIGNALS}
    got = []
    with actor.stop_signals(lambda: got.append(1)):
        for s in actor.STOP_SIGNALS:
            os.kill(os.getpid(), s)
            deadline = time.monotonic() + 5
            while len(got) < actor.STOP_SIGNALS.index(s) + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
    assert got == [1, 1]
    assert {s: signal.getsignal(s) for s in actor.STOP_SIGNALS} == before


def test_stop_signals_outside_the_main_thread_leave_the_handlers_alone():
    import threading
    before = {s: signal.getsignal(s) for s in actor.STOP_SIGNALS}
    seen = []

    def body():
        with actor.stop_signals(lambda: None):
            seen.append({s: signal.getsignal(s) for s in actor.STOP_SIGNALS})

    t = threading.Thread(target=body)
    t.start()
    t.join(5)
    assert seen == [before]


def test_pin_pins_to_a_core_and_none_leaves_the_affinity_alone():
    cpus = os.sched_getaffinity(0)
    try:
        assert actor.pin(None) is False and os.sched_getaffinity(0) == cpus
        core = min(cpus)
        assert actor.pin(core) is True and os.sched_getaffinity(0) == {core}
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_fix_acceptor_stops_cleanly_on_sigterm_and_sigint(tmp_path, sig):
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "fix", "acceptor", "--port", "0",
                          "--store", str(tmp_path / "store")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening "), (line, p.stderr.read() if p.poll() is not None else "")
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()


_SLEEPER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from appliance import actor
    from appliance.transport import wait
    params = np.array([wait.BACKOFF, 0, 30_000_000_000, 30_000_000_000], np.int64)
    state = np.zeros(4, np.int64)
    wait.idle(np.array([wait.BACKOFF, 0, 1000, 1000], np.int64), np.zeros(4, np.int64))  # loaded
    with actor.stop_signals(lambda: None):
        print("sleeping", flush=True)
        t0 = time.monotonic()
        wait.idle(params, state)          # the compiled back-off sleep: 30 s asked
        print(f"woke {time.monotonic() - t0:.3f}", flush=True)
""")


def test_the_wake_signal_ends_an_actors_compiled_idle_sleep_at_once():
    """``control.wake`` (what ``appliance kill`` sends the engine and the FIX gateways) ends the
    compiled back-off sleep of an actor: a kill is seen now, not when a 30 s sleep ends."""
    p = subprocess.Popen([sys.executable, "-c", _SLEEPER], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "sleeping"
        time.sleep(0.3)                       # into the nanosleep
        assert control.wake(p.pid)
        line = p.stdout.readline().split()
        assert p.wait(timeout=20) == 0
    finally:
        p.kill()
    assert line[0] == "woke" and float(line[1]) < 15.0     # not the 30 s it asked for


def test_the_wake_signal_does_not_harm_a_process_that_is_not_an_actor():
    """Its default action is to ignore it: a pid that no longer is an actor's (reused) lives on."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        assert control.wake(p.pid)
        time.sleep(0.3)
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
    assert not control.wake(0)
