"""The reference FIX 4.4 session acceptance suite against our acceptor (one case per script).

All scripts run against one in-process acceptor, one after the other, like the reference
setup. The two scripts that wait out real heartbeat intervals (4a, 6: HeartBtInt=6 is part of the
expected messages, so it cannot be shortened) start at module setup, each against its own
acceptor on a background thread, so their ~40 s of waiting overlaps the rest of the suite.
"""
from __future__ import annotations

import threading
import time

import pytest

from appliance.sim.acceptor import AcceptorThread
from tests.fix.defscript import DATA, Driver

TIMED = ("4a_NoDataSentDuringHeartBtInt", "6_SendTestRequest")
# the timed scripts' cases come last: by then their background runs are nearly done
SCRIPTS = sorted((DATA / "fix44").glob("*.def"), key=lambda p: (p.stem in TIMED, p.stem))


def _run(acc, script):
    _wait_idle(acc)
    drv = Driver(acc.port)
    try:
        drv.run(script)
    finally:
        drv.close()
        _wait_idle(acc)


def _wait_idle(acc, timeout=5.0):
    deadline = time.monotonic() + timeout
    while acc.loop.bound and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not acc.loop.bound, "acceptor still holds a connection from the previous script"


class _Background:
    def __init__(self, script, store):
        self.acc = AcceptorThread(store_dir=store).start()
        self.error = None
        self.thread = threading.Thread(target=self._main, args=(script,), daemon=True)
        self.thread.start()

    def _main(self, script):
        try:
            _run(self.acc, script)
        except BaseException as e:          # re-raised in the test's own thread
            self.error = e

    def result(self, timeout):
        self.thread.join(timeout)
        self.acc.stop()
        if self.thread.is_alive():
            raise AssertionError("script still running after its time limit")
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def timed_runs(tmp_path_factory):
    runs = {p.stem: _Background(p, tmp_path_factory.mktemp(p.stem)) for p in SCRIPTS if p.stem in TIMED}
    yield runs
    for r in runs.values():
        r.acc.stop()


@pytest.fixture(scope="module")
def acceptor(tmp_path_factory):
    acc = AcceptorThread(store_dir=tmp_path_factory.mktemp("acceptance-store")).start()
    yield acc
    acc.stop()


def test_suite_has_every_fix44_script():
    assert len(SCRIPTS) == 47 and all(any(p.stem == t for p in SCRIPTS) for t in TIMED)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_fix44_acceptance_script_passes(timed_runs, acceptor, script):
    if script.stem in timed_runs:
        timed_runs[script.stem].result(timeout=80)
    else:
        _run(acceptor, script)
