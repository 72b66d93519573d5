#!/usr/bin/python
"""Ansible module: start a systemd unit unless its own start conditions fail on this host."""
from __future__ import annotations

DOCUMENTATION = r"""
module: unit_started
short_description: Start a systemd unit, idempotently, and accept a unit whose conditions fail here
description:
  - A unit with a start condition (ConditionPathExists=, ConditionCapability=, ...) that fails on
    this host is skipped by systemd: C(systemctl start) succeeds and the unit stays inactive. With
    C(ansible.builtin.systemd_service) that reads as "not started" on every run, so every run
    reports a change. This module starts the unit when it is not running, and reports the unit as
    not applicable (no change) when systemd has found its conditions unmet; the message names them.
  - Needs systemd as the service manager (the roles call it only then).
options:
  name:
    description: The unit (e.g. appliance-cstate.service).
    type: str
    required: true
  daemon_reload:
    description: Run C(systemctl daemon-reload) first (unit files may have changed in this run).
    type: bool
    default: false
author: appliance team
"""

EXAMPLES = r"""
- name: "T-3.3 | Start the C-state holder"
  unit_started:
    name: appliance-cstate.service
    daemon_reload: true
"""

RETURN = r"""
state:
  description: started (this run), running (already), or condition-failed (systemd skipped it).
  type: str
  returned: always
conditions:
  description: The unit's conditions as systemctl shows them (when they failed).
  type: str
  returned: when state is condition-failed
"""

from ansible.module_utils.basic import AnsibleModule

PROPS = ("LoadState", "ActiveState", "ConditionResult", "ConditionTimestampMonotonic", "Conditions")
RUNNING = ("active", "activating", "reloading")


def show(module, systemctl, name):
    rc, out, err = module.run_command([systemctl, "show", name] + [f"--property={p}" for p in PROPS])
    if rc != 0:
        module.fail_json(msg=f"systemctl show {name}: {err.strip() or out.strip()}")
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        module.fail_json(msg=f"{name}: unit not loaded ({props.get('LoadState')})")
    return props


def condition_failed(props):
    return props.get("ConditionResult") == "no" and props.get("ConditionTimestampMonotonic", "0") not in ("", "0")


def main():
    module = AnsibleModule(argument_spec=dict(
        name=dict(type="str", required=True),
        daemon_reload=dict(type="bool", default=False),
    ), supports_check_mode=True)
    name = module.params["name"]
    systemctl = module.get_bin_path("systemctl", required=True)
    if module.params["daemon_reload"] and not module.check_mode:
        rc, out, err = module.run_command([systemctl, "daemon-reload"])
        if rc != 0:
            module.fail_json(msg=f"systemctl daemon-reload: {err.strip()}")
    props = show(module, systemctl, name)
    if props["ActiveState"] in RUNNING:
        module.exit_json(changed=False, state="running")
    if condition_failed(props):
        module.exit_json(changed=False, state="condition-failed", conditions=props.get("Conditions", ""),
                         msg=f"{name} not started: systemd found its start conditions unmet on this host "
                             f"({props.get('Conditions', '')})")
    if module.check_mode:
        module.exit_json(changed=True, state="started")
    rc, out, err = module.run_command([systemctl, "start", name])
    if rc != 0:
        module.fail_json(msg=f"systemctl start {name}: {err.strip() or out.strip()}")
    props = show(module, systemctl, name)
    if props["ActiveState"] in RUNNING:
        module.exit_json(changed=True, state="started")
    if condition_failed(props):
        module.exit_json(changed=False, state="condition-failed", conditions=props.get("Conditions", ""),
                         msg=f"{name} not started: systemd found its start conditions unmet on this host "
                             f"({props.get('Conditions', '')})")
    module.fail_json(msg=f"{name}: started but {props['ActiveState']} (see journalctl -u {name})")


if __name__ == "__main__":
    main()
