"""Compile (or load from the cache) the exchange simulator's kernels with the production types.

``warm()`` runs :func:`appliance.sim.matching.warm`: every kernel the mock exchange
(``appliance fix exchange``) calls, on a throwaway simulator, so a live exchange never stalls its
FIX sessions on a first compile. ``appliance compile`` calls it through
:data:`appliance.jit.WARMERS`; the exchange actor calls it before it listens. The backtest loop
(``backtest_kernels.run_events``) is compiled by its first call in ``appliance backtest`` (before
its clock starts), not here: no live actor runs it.
"""
from __future__ import annotations

from appliance.sim import matching


def warm() -> int:
    """Compile or load the simulator's kernels; returns how many entry points were called."""
    matching.warm()
    return 8
