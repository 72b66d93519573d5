"""The appliance's one configuration file (TOML), loaded into frozen dataclasses.

Every process and the CLI read the same file: ``--config PATH`` overrides, else
``$APPLIANCE_CONFIG``, else ``/etc/appliance/appliance.toml`` if present, else the packaged
sim-mode default (``appliance/config/default.toml``). Unknown keys are rejected with a message
naming the key, so a typo never silently falls back to a default.

The transport sections are dataclasses below; ``[[instruments]]`` is the one instrument registry
(:mod:`appliance.config.instruments`); ``[risk]``, ``[[strategies]]``, ``[engine]``, ``[fix]``
and ``[sim]`` are kept as tables and checked by their parts' validators (``VALIDATORS``), which
``load`` runs on the whole file: an invalid value anywhere is refused before anything starts,
by every command that loads the file. A key is here only if something reads it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("default.toml")
SYSTEM_PATH = Path("/etc/appliance/appliance.toml")


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the offending key."""


@dataclass(frozen=True)
class ApplianceSection:
    # shared-memory regions; "" = auto: a hugetlbfs mount with free huge pages, else /dev/shm
    # (transport/shm.py resolve_dir). Provisioned hosts name their hugetlbfs mount here.
    shm_dir: str = ""
    journal_dir: str = "/var/lib/appliance/journal"
    state_dir: str = "/var/lib/appliance/state"


@dataclass(frozen=True)
class WaitSection:
    # spin | spin_yield | backoff ; "auto" = spin on an isolated core, spin_yield elsewhere
    strategy: str = "auto"
    spin_iterations: int = 2000               # busy polls before yielding / sleeping
    backoff_min_ns: int = 1_000
    backoff_max_ns: int = 1_000_000
    # a loop that spins (the one-process loop) keeps the kernel's TCP path in cache with a 64-byte
    # send and read-back on a private loopback connection this often while idle; 0 = off
    # (appliance.transport.netwarm)
    net_warm_us: float = 50.0

    def validate(self, where: str) -> None:
        _choice(where, "strategy", self.strategy, ("auto", "spin", "spin_yield", "backoff"))
        if self.spin_iterations < 0 or self.backoff_min_ns <= 0 or self.backoff_max_ns < self.backoff_min_ns:
            raise ConfigError(f"{where}: spin_iterations >= 0 and 0 < backoff_min_ns <= backoff_max_ns")
        if not 0 <= self.net_warm_us <= 1_000_000:
            raise ConfigError(f"{where}.net_warm_us: 0 (off) to 1000000 us, got {self.net_warm_us}")


@dataclass(frozen=True)
class RingsSection:
    md_capacity: int = 1 << 16                # records per md ring (one ring per md gateway)
    order_capacity: int = 1 << 14
    exec_capacity: int = 1 << 14

    def validate(self, where: str) -> None:
        for k in ("md_capacity", "order_capacity", "exec_capacity"):
            v = getattr(self, k)
            if v < 2 or v & (v - 1):
                raise ConfigError(f"{where}.{k}: must be a power of two >= 2, got {v}")


@dataclass(frozen=True)
class CoresSection:
    # actor name -> CPU core (e.g. {"md.binance" = 2, "engine" = 3}); missing = not pinned
    actors: dict = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for k, v in self.actors.items():
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"{where}.actors.{k}: core must be an integer >= 0")


@dataclass(frozen=True)
class VenueSection:
    name: str = ""                            # binance | coinbase | coinbase_advanced | kraken | bitstamp | bitfinex
    ws_url: str = ""
    rest_url: str = ""
    enabled: bool = True
    stale_after_ms: int = 30_000
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 30_000
    ack_after_us: float = 20.0                # md socket: the pump ACKs what it read once it is
                                              # handled and the socket was quiet this long; < 0:
                                              # the kernel ACKs inside recv() (venues/wsframe.py)
    maker_fee_bps: float = 0.0                # default fees of the venue's [[instruments]]
    taker_fee_bps: float = 0.0
    symbols: tuple = ()                       # derived: the venue's [[instruments]], in id order

    def validate(self, where: str) -> None:
        if not self.name:
            raise ConfigError(f"{where}.name: required")
        from appliance.venues.registry import VENUES
        if self.name not in VENUES:
            raise ConfigError(f"{where}.name: {self.name!r} is not one of {', '.join(VENUES)}")


@dataclass(frozen=True)
class JournalSection:
    rotate_bytes: int = 256 << 20             # start a new file after this many uncompressed bytes
    zstd_level: int = 3
    frame_records: int = 4096                 # records per compressed frame (seek granularity)

    def validate(self, where: str) -> None:
        if self.rotate_bytes < 1 << 16 or not 1 <= self.zstd_level <= 22 or self.frame_records < 1:
            raise ConfigError(f"{where}: rotate_bytes >= 65536, zstd_level 1..22, "
                              f"frame_records >= 1")


@dataclass(frozen=True)
class TelemetrySection:
    exporter_host: str = "127.0.0.1"          # `appliance exporter` binds here (loopback only)
    exporter_port: int = 9464
    refresh_hz: float = 5.0                   # `appliance top` refresh rate

    def validate(self, where: str) -> None:
        if not 0 < self.exporter_port < 65536:
            raise ConfigError(f"{where}.exporter_port: {self.exporter_port} is not a TCP port")
        if not 0.5 <= self.refresh_hz <= 50:
            raise ConfigError(f"{where}.refresh_hz: 0.5..50")


def _choice(where: str, key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{where}.{key}: {value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class Config:
    appliance: ApplianceSection = field(default_factory=ApplianceSection)
    wait: WaitSection = field(default_factory=WaitSection)
    rings: RingsSection = field(default_factory=RingsSection)
    cores: CoresSection = field(default_factory=CoresSection)
    journal: JournalSection = field(default_factory=JournalSection)
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)
    venues: tuple = ()                        # tuple[VenueSection]
    instruments: tuple = ()                   # tuple[instruments.Instrument]
    # tables checked by their parts' VALIDATORS: risk, strategies, engine, fix, sim
    extra: dict = field(default_factory=dict)
    path: str = ""

    def venue(self, name: str) -> VenueSection:
        for v in self.venues:
            if v.name == name:
                return v
        raise ConfigError(f"venues: no venue named {name!r} (have: {', '.join(v.name for v in self.venues)})")

    def instruments_of(self, venue: str) -> list:
        """The venue's instruments in id order."""
        return [i for i in self.instruments if i.venue == venue]

    def instrument(self, venue: str, symbol: str):
        for i in self.instruments:
            if i.venue == venue and i.symbol == symbol:
                return i
        raise ConfigError(f"instruments: no instrument {venue}:{symbol}")


_SECTIONS = {"appliance": ApplianceSection, "wait": WaitSection, "rings": RingsSection,
             "cores": CoresSection, "journal": JournalSection, "telemetry": TelemetrySection}
_LIST_SECTIONS = {"venues": VenueSection}
_EXTRA_SECTIONS = ("risk", "strategies", "fix", "engine", "sim")
# part validators run by ``load`` on the whole file ("module:function(cfg)"; ConfigError or
# ValueError with a message naming the key)
VALIDATORS = ("appliance.engine.state:validate_config", "appliance.fix.gateway:validate_config",
              "appliance.config:validate_sim")
# [sim] keys, each with its reader: exchange = the exchange simulator's settings
# (sim/matching.settings; `appliance fix exchange`, `appliance backtest`)
SIM_KEYS = ("exchange",)


def known_table(where: str, t, known) -> dict:
    """``t`` as a table of ``known`` keys only; else a ConfigError naming the first stray key
    (every section and sub-table of the file is checked this way)."""
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: expected a table, got {type(t).__name__}")
    for k in t:
        if k not in known:
            raise ConfigError(f"{where}.{k}: unknown key (known: {', '.join(sorted(known))})")
    return t


def _build(cls, table: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in known_table(where, table, names).items():
        want = hints[key]
        if want is tuple:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{key}: expected an array, got {value!r}")
            value = tuple(value)
        elif want is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected true/false, got {value!r}")
        elif want is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
        elif want is str and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
        elif want is dict and not isinstance(value, dict):
            raise ConfigError(f"{where}.{key}: expected a table, got {value!r}")
        elif want is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}")
            value = float(value)
        if want is int and not -(1 << 62) < value < 1 << 62:
            raise ConfigError(f"{where}.{key}: {value} is out of range")
        kwargs[key] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def parse(data: dict, path: str = "<string>") -> Config:
    """Typed sections and the instrument registry from a parsed TOML document (the part
    validators are run by ``load`` / ``check``)."""
    from appliance.config import instruments as instruments_mod
    kwargs: dict = {"path": path}
    extra = {}
    instrument_tables = []
    for key, value in data.items():
        if key == "instruments":
            instrument_tables = value
        elif key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, key)
        elif key in _LIST_SECTIONS:
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
            for i, v in enumerate(value):
                if isinstance(v, dict) and "symbols" in v:
                    raise ConfigError(f"{key}[{i}].symbols: instruments are listed once, as "
                                      f"[[instruments]] entries (venue, symbol, tick, lot)")
            kwargs[key] = tuple(_build(_LIST_SECTIONS[key], v, f"{key}[{i}]") for i, v in enumerate(value))
        elif key == "sim":
            extra[key] = _sim_table(value)
        elif key in _EXTRA_SECTIONS:
            extra[key] = value
        else:
            known = sorted([*_SECTIONS, *_LIST_SECTIONS, *_EXTRA_SECTIONS, "instruments"])
            raise ConfigError(f"{key}: unknown section (known: {', '.join(known)})")
    kwargs["extra"] = extra
    venues = kwargs.get("venues", ())
    names = [v.name for v in venues]
    if len(names) != len(set(names)):
        raise ConfigError(f"venues: duplicate venue names in {names}")
    try:
        instr = instruments_mod.build(instrument_tables, venues)
    except instruments_mod.InstrumentError as e:
        raise ConfigError(str(e)) from None
    kwargs["instruments"] = instr
    kwargs["venues"] = tuple(dataclasses.replace(v, symbols=tuple(i.symbol for i in instr
                                                                   if i.venue == v.name))
                             for v in venues)
    return Config(**kwargs)


def _sim_table(t) -> dict:
    """``[sim]`` holds only keys something reads (SIM_KEYS)."""
    return known_table("sim", t, SIM_KEYS)


def validate_sim(cfg: Config) -> None:
    """``[sim.exchange]`` as the exchange simulator reads it (unknown keys, wrong types and
    out-of-range values are refused naming the key)."""
    t = cfg.extra.get("sim") or {}
    if "exchange" in t:
        from appliance.sim import matching
        matching.settings(t["exchange"])       # SimConfigError (a ValueError) names the key


def check(cfg: Config) -> Config:
    """Run every part's validator on the whole configuration (see VALIDATORS)."""
    for spec in VALIDATORS:
        mod, _, fn = spec.partition(":")
        try:
            getattr(importlib.import_module(mod), fn)(cfg)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return cfg


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get("APPLIANCE_CONFIG")
    if env:
        return Path(env)
    if SYSTEM_PATH.exists():
        return SYSTEM_PATH
    return DEFAULT_PATH


def load(path: str | os.PathLike | None = None) -> Config:
    p = resolve_path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return check(parse(data, str(p)))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
