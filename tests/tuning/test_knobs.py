"""tuning/knobs.json and provision/roles agree: same IDs, on/off variables, defaults and values,
and every role has the house shape (defaults, argument specs, preflight, one on/off variable)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tuning import audit

ROLES = Path(__file__).resolve().parents[2] / "provision/roles"
CATALOG = audit.load_knobs()
TUNING_ROLES = sorted({k["role"] for k in CATALOG["knobs"]})


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults/main.yml").read_text()) or {}


def _specs(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def _task_names(role: str) -> list[str]:
    names = []
    for f in sorted((ROLES / role / "tasks").glob("*.yml")):
        for task in yaml.safe_load(f.read_text()) or []:
            names.append(task.get("name", ""))
    return names


def test_knob_ids_are_unique_and_well_formed():
    ids = [k["id"] for k in CATALOG["knobs"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"T-\d+\.\d+", i) for i in ids)
    assert all(k["check"] in audit.CHECKS for k in CATALOG["knobs"]), "every knob has an audit check"


@pytest.mark.parametrize("knob", CATALOG["knobs"], ids=lambda k: k["id"])
def test_knob_on_off_variable_is_a_role_default_with_the_same_value(knob):
    defaults = _defaults(knob["role"])
    assert knob["var"] in defaults, f"{knob['var']} missing from roles/{knob['role']}/defaults"
    assert defaults[knob["var"]] is knob["default"]
    spec = _specs(knob["role"])[knob["var"]]
    assert spec["type"] == "bool" and spec["default"] is knob["default"]


@pytest.mark.parametrize("knob", CATALOG["knobs"], ids=lambda k: k["id"])
def test_knob_id_names_a_task_of_its_role(knob):
    pattern = re.compile(rf"(^|\s){re.escape(knob['id'])}(\s|$)")
    assert any(pattern.search(n.split("|")[0]) for n in _task_names(knob["role"])), \
        f"no task in roles/{knob['role']} is named '{knob['id']} | ...'"


@pytest.mark.parametrize("name", sorted(CATALOG["values"]))
def test_catalogue_values_equal_the_role_defaults(name):
    holders = [r for r in ROLES.iterdir() if name in _defaults(r.name)]
    assert holders, f"no role declares {name}"
    for role in holders:
        assert _defaults(role.name)[name] == CATALOG["values"][name], f"roles/{role.name}: {name}"


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir()))
def test_role_has_defaults_argument_specs_and_a_preflight_first(role):
    d = ROLES / role
    for f in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml",
              "tasks/preflight.yml"):
        assert (d / f).is_file(), f"roles/{role}/{f} missing"
    first = yaml.safe_load((d / "tasks/main.yml").read_text())[0]
    assert first.get("ansible.builtin.import_tasks") == "preflight.yml"
    pre = yaml.safe_load((d / "tasks/preflight.yml").read_text())
    assert all(set(t) & {"ansible.builtin.assert", "ansible.builtin.stat"} for t in pre), \
        "preflight holds asserts (and the stats they read) only"
    specs = _specs(role)
    assert set(_defaults(role)) <= set(specs), f"undocumented variables: {set(_defaults(role)) - set(specs)}"


@pytest.mark.parametrize("role", TUNING_ROLES)
def test_tuning_role_has_one_on_off_variable(role):
    assert _defaults(role)[f"{role}_enabled"] is True
