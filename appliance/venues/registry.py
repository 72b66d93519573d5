"""The one list of market-data venues.

Each venue is one module of this package with the same shape (see :mod:`appliance.venues.common`):
``VENUE_ID`` (its ``records.VENUE_*`` id on every md record), ``METADATA_PATHS`` (the REST
paths of its instrument metadata), ``load_instruments``, ``subscribe_messages``, ``stream_path``,
a ``Feed`` and ``warm``. The list is the schema's venue ids (``records.VENUE_IDS``) less the
order-only venue of the exchange simulator: adding a venue = a new module + its id there.
"""
from __future__ import annotations

import importlib

from appliance.transport import records

VENUES = tuple(name for name, vid in sorted(records.VENUE_IDS.items(), key=lambda kv: kv[1])
               if vid != records.VENUE_SIM)


class UnknownVenue(ValueError):
    """A venue name that is not in :data:`VENUES`."""


def module(name: str):
    """The venue's module (imported on first use: it compiles its parsers)."""
    if name not in VENUES:
        raise UnknownVenue(f"unknown venue {name!r}; one of: {', '.join(VENUES)}")
    return importlib.import_module(f"appliance.venues.{name}")
