"""``appliance tuning plan|check``: the core plan and the read-only host audit (tuning/)."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("tuning", help="core plan and host tuning audit")
    tsub = p.add_subparsers(dest="tuning_command", metavar="{plan,check}")
    plan = tsub.add_parser("plan", help="derive housekeeping and isolated cores from the topology")
    plan.add_argument("--root", default="/", help="root of the /sys tree (default /)")
    plan.add_argument("--nic", default="", help="trading NIC (its NUMA node is preferred)")
    plan.add_argument("--housekeeping-per-node", type=int, default=1,
                      help="physical cores kept for housekeeping on every NUMA node (default 1)")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    plan.set_defaults(handler=_plan)
    check = tsub.add_parser("check", help="audit this host knob by knob (read-only); exit 0 = tuned")
    check.add_argument("--root", default="/", help="root of /proc, /sys and /etc (default /)")
    check.add_argument("--nic", default=None, help="trading NIC (default: from the tuning record)")
    check.add_argument("--only", default=None, help="only knobs with this ID or ID prefix (e.g. T-5)")
    check.add_argument("--json", action="store_true",
                       help='print {"checks": [{id, name, expected, actual, status}], "ok": bool}')
    check.set_defaults(handler=_check)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _plan(args) -> int:
    from appliance import config
    from tuning import coreplan
    try:
        cfg = config.load(args.config)
        topo = coreplan.read_topology(args.root, args.nic)
        plan = coreplan.make_plan(topo, coreplan.actors_from_config(cfg), args.housekeeping_per_node)
    except (config.ConfigError, coreplan.TopologyError, ValueError) as e:
        print(f"appliance tuning plan: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict(), sort_keys=True) if args.json else coreplan.format_plan(plan))
    return 0


def _check(args) -> int:
    from appliance import config
    from tuning import audit, coreplan
    try:
        expected = audit.expected_for(args.root, args.config, args.nic)
        checks = audit.audit(args.root, expected, only=args.only)
    except (config.ConfigError, coreplan.TopologyError, ValueError) as e:
        print(f"appliance tuning check: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(audit.to_json(checks)))
    else:
        print(f"expected values from: {expected.source}")
        print(audit.format_table(checks))
    return 0 if audit.ok(checks) else 1
