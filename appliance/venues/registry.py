"""The one list of market-data venues.

Each venue is one module of this package with the same shape (see :mod:`appliance.venues.common`):
``VENUE_ID`` (its ``records.VENUE_*`` id on every md record), ``METADATA_PATHS`` (the REST
paths of its instrument metadata), ``load_instruments``, ``subscribe_messages``, ``stream_path``
and a ``Feed``. Adding a venue = a new module + its name here + its id in ``records.VENUE_IDS``.
"""
from __future__ import annotations

import importlib

VENUES = ("binance", "coinbase", "coinbase_advanced", "kraken", "bitstamp", "bitfinex")


class UnknownVenue(ValueError):
    """A venue name that is not in :data:`VENUES`."""


def module(name: str):
    """The venue's module (imported on first use: it compiles its parsers)."""
    if name not in VENUES:
        raise UnknownVenue(f"unknown venue {name!r}; one of: {', '.join(VENUES)}")
    return importlib.import_module(f"appliance.venues.{name}")
