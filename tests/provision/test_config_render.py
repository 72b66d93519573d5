"""The appliance role's config template against this build's config loader, without a target:
ansible renders roles/appliance/templates/appliance.toml.j2 on this machine from the role
defaults (and from the example inventory's group vars), and `appliance.config.load` (every part's
validator) must accept the file; the role's preflight refuses the instrument forms the loader
refuses, with a message naming the variable to use instead. Seconds, no root."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from appliance import config
from tests.provision.ansible_run import PROVISION, REPO, playbook

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                                reason="ansible-playbook not installed (pip install ansible)")

DEFAULTS = [PROVISION / "roles/coreplan/defaults/main.yml", PROVISION / "roles/appliance/defaults/main.yml"]
PLAN = {"actors": {}, "housekeeping": [0], "housekeeping_list": "0", "isolated": [1, 2, 3],
        "isolated_list": "1-3", "degraded": False}


def _plan(venues, sessions) -> dict:
    actors = {f"md.{v['name']}": 1 + i for i, v in enumerate(venues)}
    actors["engine"] = len(actors) + 1
    actors.update({f"fix.{s['name']}": len(actors) + 1 + i for i, s in enumerate(sessions)})
    actors["recorder"] = len(actors) + 1
    return {**PLAN, "actors": actors}


def _render(tmp_path: Path, overrides: dict, tasks: str = "template") -> tuple:
    """Play on localhost with the role defaults (+ overrides): the preflight, then the template."""
    merged = {}
    for f in DEFAULTS:
        merged.update(yaml.safe_load(f.read_text()))
    merged.update(overrides)
    plan = _plan(merged["appliance_venues"], merged["appliance_fix_sessions"])
    out = tmp_path / "appliance.toml"
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(yaml.safe_dump({**overrides, "appliance_core_plan": plan,
                                         "appliance_repo_root": str(REPO), "out": str(out)}))
    play = tmp_path / "render.yml"
    play.write_text(f"""---
- name: Render the appliance config
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {DEFAULTS[0]}
    - {DEFAULTS[1]}
    - {vars_file}
  tasks:
    - name: Preflight
      ansible.builtin.import_tasks: {PROVISION}/roles/appliance/tasks/preflight.yml
    - name: Render
      ansible.builtin.template:
        src: {PROVISION}/roles/appliance/templates/appliance.toml.j2
        dest: "{{{{ out }}}}"
        mode: "0644"
""")
    r, _ = playbook(["-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                    timeout=300)
    return r, out, plan


def test_role_defaults_render_a_config_the_appliance_loads_with_the_packaged_sim_instruments(tmp_path):
    r, out, plan = _render(tmp_path, {})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    cfg = config.load(out)
    packaged = config.load(config.DEFAULT_PATH)
    assert [(i.venue, i.symbol, i.tick, i.lot) for i in cfg.instruments] == \
        [(i.venue, i.symbol, i.tick, i.lot) for i in packaged.instruments]
    assert [v.name for v in cfg.venues] == ["binance"] and cfg.venues[0].symbols == packaged.venues[0].symbols
    assert dict(cfg.cores.actors) == plan["actors"]
    assert cfg.telemetry.exporter_port == packaged.telemetry.exporter_port
    text = out.read_text()
    assert "symbols" not in text and "[engine.instruments]" not in text


def test_example_inventory_trading_vars_render_a_config_the_appliance_loads(tmp_path):
    trading = yaml.safe_load((PROVISION / "inventory/example/group_vars/trading.yml").read_text())
    keep = {k: v for k, v in trading.items() if k.startswith("appliance_")}
    r, out, _ = _render(tmp_path, keep)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    cfg = config.load(out)
    assert [i.key for i in cfg.instruments_of("coinbase")] == ["coinbase:BTC-USD", "coinbase:ETH-USD"]
    assert cfg.instrument("binance", "BTCUSDT").tick == "0.01"
    from appliance.fix.gateway import load_session_config
    g = load_session_config(cfg, "coinbase")
    assert g.venue == "coinbase" and [s for s, _, _ in g.instruments] == ["BTC-USD", "ETH-USD"]


@pytest.mark.parametrize("overrides, says", [
    ({"appliance_venues": [{"name": "binance", "ws_url": "ws://x", "symbols": ["BTCUSDT"]}]},
     "not as appliance_venues[].symbols (['binance'])"),
    ({"appliance_fix_sessions": [{"name": "s", "venue": "binance", "host": "h", "port": 1,
                                  "instruments": [{"symbol": "NKNUSDT"}]}]},
     "appliance_fix_sessions[].instruments (['s'])"),
    ({"appliance_engine": {"instruments": {"binance:NKNUSDT": {}}}}, "or appliance_engine.instruments"),
    ({"appliance_fix": {"sessions": {}}}, "leave appliance_fix unset"),
    ({"appliance_instruments": [{"venue": "binance", "symbol": "NKNUSDT", "tick": 1e-08, "lot": "0.00000001"}]},
     "tick and lot as quoted"),
    ({"appliance_instruments": [{"venue": "kraken", "symbol": "XBT/USD", "tick": "0.1", "lot": "0.1"}]},
     "needs venue (one of ['binance'])"),
    ({"appliance_mode": "live"}, "appliance_mode and appliance_log_dir are gone"),
])
def test_preflight_refuses_instruments_outside_the_registry_and_names_the_variable(tmp_path, overrides, says):
    r, out, _ = _render(tmp_path, overrides)
    assert r.returncode != 0 and not out.exists(), r.stdout[-3000:]
    assert says in r.stdout.replace("\\n", " ").replace("\n", " "), r.stdout[-3000:]


def test_a_config_the_loader_refuses_fails_the_render_through_the_validate_command(tmp_path):
    """The role's T-8.2 validate command, run here with this interpreter: a session whose venue
    has no instruments is refused by the FIX validator."""
    r, out, _ = _render(tmp_path, {"appliance_fix_sessions": [
        {"name": "s", "venue": "kraken", "host": "h", "port": 1, "sender_comp_id": "A", "target_comp_id": "B"}],
        "appliance_venues": [{"name": "binance", "ws_url": "ws://x"}, {"name": "kraken", "ws_url": "ws://y"}]})
    assert r.returncode == 0, r.stdout[-3000:]
    import subprocess
    tasks = yaml.safe_load((PROVISION / "roles/appliance/tasks/main.yml").read_text())
    validate = next(t for t in tasks if t.get("name") == "T-8.2 | Config")["ansible.builtin.template"]["validate"]
    argv = validate.replace("{{ appliance_venv }}/bin/python", sys.executable).replace("%s", str(out))
    v = subprocess.run(argv, shell=True, capture_output=True, text=True)
    assert v.returncode != 0 and "fix.sessions.s.instruments: at least one instrument is required" in v.stderr, \
        v.stderr[-2000:]
