"""The FIX session acceptance suites (4.2 and 4.4) against our acceptor (one case per script).

Script sets (tests/data/fix/README.md): ``fix44`` the reference FIX 4.4 scripts, ``fix42`` the
same cases for FIX 4.2 (with the 4.2 differences), ``own44`` / ``own42`` ours for the session
test cases the reference set lacks. All scripts of a version run against one in-process acceptor,
one after the other, like the reference setup. The scripts that wait out real heartbeat intervals
(4a, 6: HeartBtInt=6 is part of the expected messages, so it cannot be shortened) start at module
setup, each against its own acceptor on a background thread, so their ~40 s of waiting overlaps
the rest of the suite.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.fix.helpers import AcceptorThread
from tests.fix.defscript import DATA, Driver

TIMED = ("4a_NoDataSentDuringHeartBtInt", "6_SendTestRequest")
SETS = ("fix44", "own44", "fix42", "own42")
# the timed scripts' cases come last: by then their background runs are nearly done
SCRIPTS = sorted((p for d in SETS for p in (DATA / d).glob("*.def")),
                 key=lambda p: (p.stem in TIMED, p.parent.name[-2:], p.stem, p.parent.name))
IDS = [f"{p.parent.name}/{p.stem}" for p in SCRIPTS]

# The session-level test cases a FIX acceptor can be driven through over one connection, by the
# ids the reference scripts use (every lettered sub-case): each must have a script in both
# versions.
CASES = ("1a", "1b", "1c", "1d", "1e", "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2i", "2k", "2m",
         "2o", "2q", "2r", "2t", "3b", "3c", "4a", "4b", "6", "7", "8", "10", "11a", "11b", "11c",
         "13b", "14a", "14b", "14c", "14d", "14e", "14f", "14g", "14h", "14i", "15", "19a", "19b",
         "20", "21")


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
    runs = {f"{p.parent.name}/{p.stem}": _Background(p, tmp_path_factory.mktemp(p.stem))
            for p in SCRIPTS if p.stem in TIMED}
    yield runs
    for r in runs.values():
        r.acc.stop()


@pytest.fixture(scope="module")
def acceptor(tmp_path_factory):
    acc = AcceptorThread(store_dir=tmp_path_factory.mktemp("acceptance-store")).start()
    yield acc
    acc.stop()


def test_suite_has_every_reference_script_and_every_case_in_both_versions():
    assert len(list((DATA / "fix44").glob("*.def"))) == 47
    for v in ("42", "44"):
        stems = {p.stem for p in SCRIPTS if p.parent.name.endswith(v)}
        missing = [c for c in CASES if not any(s.split("_")[0] == c for s in stems)]
        assert not missing, f"FIX 4.{v[1]}: no script for test cases {missing}"
        assert all(t in stems for t in TIMED)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_acceptance_script_passes(timed_runs, acceptor, script):
    key = f"{script.parent.name}/{script.stem}"
    if key in timed_runs:
        timed_runs[key].result(timeout=80)
    else:
        _run(acceptor, script)
