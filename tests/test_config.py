from __future__ import annotations

import pytest

from appliance import config


def test_packaged_default_loads():
    cfg = config.load(config.DEFAULT_PATH)
    assert cfg.venues and cfg.instruments


def test_the_sim_setup_lists_its_instruments_in_the_registry_with_the_recorded_grids():
    """sim.toml's [[instruments]] are registry entries; their grids are the packaged metadata's
    (what the md gateway checks at start), their venues the sim's."""
    from appliance.sim.run import Plan
    from tests.configs import _metadata_grids
    plan = Plan()
    assert plan.venues == ["binance", "kraken"]
    assert plan.symbols == {"binance": ["NKNUSDT"], "kraken": ["XMR/USD", "OMG/USD"]}
    for i in plan.instruments:
        assert (i.tick, i.lot) == _metadata_grids(i.venue)[i.symbol], i.key


@pytest.mark.parametrize("text, match", [
    ("[appliance]\nmdoe = 'sim'\n", r"appliance\.mdoe: unknown key"),
    # keys nothing read: refused like any unknown key
    ("[appliance]\nmode = 'live'\n", r"appliance\.mode: unknown key"),
    ("[appliance]\nhugetlbfs_mount = '/dev/hugepages'\n", r"appliance\.hugetlbfs_mount: unknown key"),
    ("[appliance]\nlog_dir = '/var/log/appliance'\n", r"appliance\.log_dir: unknown key"),
    ("[appliance]\nlog_level = 'DEBUG'\n", r"appliance\.log_level: unknown key"),
    ("[cores]\nhousekeeping = [0]\n", r"cores\.housekeeping: unknown key"),
    ("[[venues]]\nname = 'binance'\nchannels = ['book']\n", r"venues\[0\]\.channels: unknown key"),
    ("[sim]\nvenues = ['binance']\n", r"sim\.venues: unknown key \(known: exchange\)"),
    ("sim = 1\n", r"sim: expected a table"),
    ("[sim.exchange]\nqueue_model = 'fifo'\n", r"sim\.exchange\.queue_model: 'fifo' is not one of"),
    ("[sim.exchange]\nlatncy = {}\n", r"sim\.exchange\.latncy: unknown key"),
    ("[rings]\nmd_capacity = 1000\n", r"rings\.md_capacity: must be a power of two"),
    ("[wait]\nstrategy = 'nap'\n", r"wait\.strategy: 'nap' is not one of"),
    ("[bogus]\n", r"bogus: unknown section"),
    ("[[venues]]\nname = 'x'\n", r"venues\[0\]\.name: 'x' is not one of"),
    ("[[venues]]\nname = 'binance'\nsymbols = ['A']\n", r"venues\[0\]\.symbols: instruments are listed once"),
    ("[[instruments]]\nvenue = 'binance'\nsymbol = 'A'\ntick = '0.1'\nlot = '1'\n",
     r"instruments\[0\]\.venue: 'binance' is not a \[\[venues\]\] entry"),
    ("[[venues]]\nname = 'binance'\n[[instruments]]\nvenue = 'binance'\nsymbol = 'AUSDT'\n"
     "tick = '-1'\nlot = '1'\n", r"instruments\.binance:AUSDT\.tick: '-1' must be a positive"),
    ("[[venues]]\nname = 'binance'\n[[instruments]]\nvenue = 'binance'\nsymbol = 'AUSDT'\n"
     "tick = '0.1'\nlot = '1'\n[engine]\ninstruments = {}\n", r"engine\.instruments: an instrument"),
    ("[risk]\nmax_loss = inf\n", r"max_loss"),
    ("[fix]\nsessions = [1, 2]\n", r"fix\.sessions: expected tables"),
    ("[telemetry]\nexporter_port = 99999\n", r"telemetry\.exporter_port"),
    ("[rings]\nmd_capacity = 99999999999999999999\n", r"not valid TOML|out of range"),
    ("[rings]\nmd_capacity = 'big'\n", r"expected an integer"),
    ("[appliance\n", r"not valid TOML"),
])
def test_bad_config_is_rejected_naming_the_key(tmp_path, text, match):
    p = tmp_path / "a.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError, match=match) as e:
        config.load(p)
    assert "\n" not in str(e.value)


def test_the_packaged_backtest_sim_settings_pass_the_load_validator():
    import tomllib
    from appliance.sim.backtest import PACKAGED_CONFIG
    cfg = config.parse(tomllib.loads(PACKAGED_CONFIG.read_text()), str(PACKAGED_CONFIG))
    config.validate_sim(cfg)
    assert set(cfg.extra["sim"]) <= set(config.SIM_KEYS)
