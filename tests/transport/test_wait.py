from __future__ import annotations

from numba import njit

from appliance.transport import wait


@njit
def _idle_n(p, s, n):
    for _ in range(n):
        wait.idle(p, s)


def test_spin_never_yields_or_sleeps():
    p, s = wait.make("spin", spin_iterations=0), wait.new_state()
    _idle_n(p, s, 50)
    assert s[wait.S_YIELDS] == 0 and s[wait.S_SLEEPS] == 0


def test_spin_yield_yields_after_the_spin_budget():
    p, s = wait.make("spin_yield", spin_iterations=10), wait.new_state()
    _idle_n(p, s, 30)
    assert s[wait.S_YIELDS] == 20


def test_backoff_doubles_up_to_the_cap_and_resets_on_work():
    p, s = wait.make("backoff", spin_iterations=0, backoff_min_ns=1000, backoff_max_ns=8000), wait.new_state()
    _idle_n(p, s, 6)
    assert s[wait.S_SLEEP_NS] == 8000 and s[wait.S_SLEEPS] == 6
    wait.reset(s)
    assert s[wait.S_SLEEP_NS] == 0 and s[wait.S_IDLE] == 0


def test_auto_spins_only_on_an_isolated_core(monkeypatch):
    monkeypatch.setattr(wait, "isolated_cpus", lambda path=None: {3})
    assert wait.choose("auto", 3) == wait.SPIN
    assert wait.choose("auto", 1) == wait.SPIN_YIELD
    assert wait.choose("auto", None) == wait.SPIN_YIELD
    assert wait.parse_cpulist("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
