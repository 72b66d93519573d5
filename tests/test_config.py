from __future__ import annotations

import pytest

from appliance import config


def test_packaged_default_loads():
    cfg = config.load(config.DEFAULT_PATH)
    assert cfg.appliance.mode == "sim" and cfg.venues


@pytest.mark.parametrize("text, match", [
    ("[appliance]\nmdoe = 'sim'\n", r"appliance\.mdoe: unknown key"),
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
    with pytest.raises(config.ConfigError, match=match):
        config.load(p)
