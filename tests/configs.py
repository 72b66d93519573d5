"""Config snippets for tests: [[instruments]] entries with the grids of the packaged recordings."""
from __future__ import annotations

import json
from functools import lru_cache

from appliance import data


@lru_cache(maxsize=None)
def _metadata_grids(venue: str) -> dict:
    from appliance.venues import registry
    mod = registry.module(venue)
    meta = (data.venues_dir() / f"{venue.upper()}.0").read_bytes()
    return {i.symbol: (i.tick, i.lot) for i in mod.load_instruments(meta, None)}


def instruments_toml(venue: str, symbols, tick: str | None = None, lot: str | None = None) -> str:
    """[[instruments]] tables for ``symbols`` of ``venue``: the grid of the packaged metadata
    (or ``tick`` / ``lot`` when given)."""
    out = []
    for s in symbols:
        t, lt = (tick, lot) if tick and lot else _metadata_grids(venue).get(s, ("0.00000001",
                                                                               "0.00000001"))
        out.append(f"[[instruments]]\nvenue = {json.dumps(venue)}\nsymbol = {json.dumps(s)}\n"
                   f"tick = {json.dumps(tick or t)}\nlot = {json.dumps(lot or lt)}\n")
    return "\n".join(out)


def instruments_tables(venue: str, symbols, tick: str | None = None,
                       lot: str | None = None) -> list:
    """The same as parsed tables (for ``config.parse``)."""
    import tomllib
    return tomllib.loads(instruments_toml(venue, symbols, tick, lot))["instruments"]
