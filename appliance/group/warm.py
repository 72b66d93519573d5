"""Compile (or load from the cache) the one-process loop of every venue, with the live types.

``warm()`` runs :func:`appliance.group.run.warm_venue` for each venue of the registry: one call of
that venue's compiled loop on private rings, a scratch engine and a scratch FIX gateway, which
handles nothing. ``appliance group`` warms its own venue's loop before anything is live;
``appliance compile --all`` calls this through :data:`appliance.jit.OPTIONAL_WARMERS`.
"""
from __future__ import annotations

from appliance.group.run import warm_venue
from appliance.venues import registry


def warm() -> int:
    """Compile or load the group loop of every venue; returns how many loops were warmed."""
    for v in registry.VENUES:
        warm_venue(v)
    return len(registry.VENUES)
