"""The one instrument registry: every traded or watched instrument is one ``[[instruments]]``
entry of the config, and every part reads it from here.

    [[instruments]]
    venue = "binance"          # a [[venues]] entry
    symbol = "NKNUSDT"         # the venue's symbol
    tick = "0.00000001"        # price grid: prices on md records and orders are integers of it
    lot = "0.00000001"         # quantity grid
    base = "NKN"               # optional: assets (default: from the symbol, see split_symbol)
    quote = "USDT"
    maker_fee_bps = 1.0        # optional: fees (default: the venue's, else 0)
    taker_fee_bps = 1.0

An instrument's id on the rings is its position among its venue's entries (the md gateway
subscribes to them in this order, the FIX session of the venue encodes them by that position,
the engine's books are keyed by (venue id, id)). The md gateway checks at start that the venue's
own metadata agrees with ``tick`` / ``lot`` (a grid mismatch would misprice every order).

Also here: the symbol -> asset reference data (quote suffixes, aliases, USD-pegged quotes).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Quote assets recognised at the end of a venue symbol without a separator (longest first), and
# venue aliases. An unrecognised symbol needs base / quote in its [[instruments]] entry.
QUOTE_SUFFIXES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "GBP", "JPY", "AUD",
                  "CAD", "CHF", "TRY", "BRL", "DAI", "BTC", "XBT", "ETH", "BNB")
ASSET_ALIASES = {"XBT": "BTC", "XXBT": "BTC", "XDG": "DOGE", "ZUSD": "USD", "ZEUR": "EUR"}
# Quote assets pegged to the US dollar: one currency for the money limits of the breaker (a depeg
# is not modelled). Any other mix of quote assets cannot share max_loss / drawdown limits.
USD_PEGGED = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI"})


class InstrumentError(ValueError):
    """An [[instruments]] entry is invalid (the message names it)."""


def split_symbol(symbol: str) -> tuple[str, str] | None:
    """(base, quote) asset names of a venue symbol: "BTC-USD", "XBT/USD", "tBTCUSD", "tDOGE:USD",
    "btcusd", "NKNUSDT" -> ("NKN", "USDT"); None when no known quote ends it."""
    s = symbol
    if len(s) > 1 and s[0] == "t" and s[1:].upper() == s[1:]:
        s = s[1:]                              # Bitfinex trading pair prefix
    for sep in "-/:":
        if sep in s:
            a, b = s.split(sep, 1)
            if a and b:
                return ASSET_ALIASES.get(a.upper(), a.upper()), ASSET_ALIASES.get(b.upper(), b.upper())
    u = s.upper()
    for q in QUOTE_SUFFIXES:
        if u.endswith(q) and len(u) > len(q):
            b = u[:-len(q)]
            return ASSET_ALIASES.get(b, b), ASSET_ALIASES.get(q, q)
    return None


def _grid(where: str, key: str, text) -> Decimal:
    if not isinstance(text, str):
        raise InstrumentError(f"{where}.{key}: expected a decimal string such as \"0.01\", "
                              f"got {text!r}")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise InstrumentError(f"{where}.{key}: {text!r} is not a decimal number") from None
    if not d.is_finite() or d <= 0:
        raise InstrumentError(f"{where}.{key}: {text!r} must be a positive decimal")
    return d


def _e8(d: Decimal) -> int:
    """A grid step in 1e-8 units, 0 when it is finer than 1e-8 or not a whole number of them."""
    v = d * 100_000_000
    return int(v) if v == v.to_integral_value() else 0


@dataclass(frozen=True)
class Instrument:
    venue: str
    symbol: str
    id: int                    # position among the venue's instruments (the records' instrument)
    tick: str
    lot: str
    base: str
    quote: str
    maker_fee_bps: float
    taker_fee_bps: float

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    @property
    def tick_e8(self) -> int:
        """The tick in 1e-8 of the quote asset (0: finer than 1e-8)."""
        return _e8(Decimal(self.tick))

    @property
    def lot_e8(self) -> int:
        return _e8(Decimal(self.lot))


KEYS = ("venue", "symbol", "tick", "lot", "base", "quote", "maker_fee_bps", "taker_fee_bps")


def build(entries, venues) -> tuple[Instrument, ...]:
    """Validated instruments from the [[instruments]] tables; ``venues`` are the configured
    VenueSection objects (fee defaults, names)."""
    if not isinstance(entries, list):
        raise InstrumentError("instruments: expected an array of tables ([[instruments]])")
    by_venue = {v.name: v for v in venues}
    seen: dict[str, int] = {}
    per_venue: dict[str, int] = {}
    out = []
    for i, t in enumerate(entries):
        where = f"instruments[{i}]"
        if not isinstance(t, dict):
            raise InstrumentError(f"{where}: expected a table")
        for k in t:
            if k not in KEYS:
                raise InstrumentError(f"{where}.{k}: unknown key (known: {', '.join(KEYS)})")
        for k in ("venue", "symbol", "tick", "lot"):
            if k not in t:
                raise InstrumentError(f"{where}.{k}: required")
        venue, symbol = t["venue"], t["symbol"]
        if not isinstance(symbol, str) or not symbol.strip():
            raise InstrumentError(f"{where}.symbol: expected the venue's symbol, got {symbol!r}")
        if venue not in by_venue:
            raise InstrumentError(f"{where}.venue: {venue!r} is not a [[venues]] entry (have: "
                                  f"{', '.join(by_venue) or 'none'})")
        where = f"instruments.{venue}:{symbol}"
        key = f"{venue}:{symbol}"
        if key in seen:
            raise InstrumentError(f"{where}: listed twice (entries {seen[key]} and {i})")
        seen[key] = i
        _grid(where, "tick", t["tick"])
        _grid(where, "lot", t["lot"])
        guess = split_symbol(symbol)
        base, quote = t.get("base"), t.get("quote")
        for k, v in (("base", base), ("quote", quote)):
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise InstrumentError(f"{where}.{k}: expected an asset name, got {v!r}")
        if (base is None or quote is None) and guess is None:
            raise InstrumentError(f"{where}: cannot tell its assets from the symbol; set base "
                                  f"and quote")
        vs = by_venue[venue]
        fees = {}
        for k in ("maker_fee_bps", "taker_fee_bps"):
            v = t.get(k, getattr(vs, k))
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 1000:
                raise InstrumentError(f"{where}.{k}: expected basis points in -100..1000, "
                                      f"got {v!r}")
            fees[k] = float(v)
        idx = per_venue.get(venue, 0)
        per_venue[venue] = idx + 1
        out.append(Instrument(venue, symbol, idx, str(t["tick"]).strip(), str(t["lot"]).strip(),
                              (base or guess[0]).strip().upper(),
                              (quote or guess[1]).strip().upper(),
                              fees["maker_fee_bps"], fees["taker_fee_bps"]))
    return tuple(out)
