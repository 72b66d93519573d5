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
    ("[[venues]]\nname = 'x'\nsymbols = 3\n", r"venues\[0\]\.symbols"),
    ("[rings]\nmd_capacity = 'big'\n", r"expected an integer"),
    ("[appliance\n", r"not valid TOML"),
])
def test_bad_config_is_rejected_naming_the_key(tmp_path, text, match):
    p = tmp_path / "a.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError, match=match):
        config.load(p)
