"""Compile (or load from the cache) the kernels of every venue module (``appliance compile``;
each md gateway warms only its own venue before it connects)."""
from __future__ import annotations

from appliance.venues import registry


def warm() -> int:
    for name in registry.VENUES:
        registry.module(name).warm()
    return len(registry.VENUES)
