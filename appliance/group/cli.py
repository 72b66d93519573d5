"""``appliance group``: the one-process layout (appliance.group.run), registered without importing
numba (``appliance --help`` stays fast)."""
from __future__ import annotations


def run_from_args(args) -> int:
    from appliance import config as config_mod
    from appliance.actor import ActorError
    from appliance.group.run import ActorGroup
    cfg = config_mod.load(getattr(args, "config", None))
    try:
        actor = ActorGroup(cfg, args.venue, args.session, args.name, args.seconds, args.budget_us,
                           args.warm_ab)
    except ActorError as e:
        print(f"appliance group: {e}")
        return 2
    return actor.run()


def register(sub) -> None:
    from appliance.cli import positive_float
    p = sub.add_parser("group", help="md gateway + engine + FIX gateway in one process, one loop",
                       description="Run an md gateway, the engine and a FIX gateway of the config "
                       "in one process and one busy loop (the one-process layout). Pinned by "
                       "[cores] actors.<name>; idles with the [wait] strategy.")
    p.add_argument("--venue", required=True, help="the md gateway's venue ([[venues]] name)")
    p.add_argument("--session", required=True, help="the FIX session ([fix.sessions.NAME])")
    p.add_argument("--name", default="group", help="actor name of the group (default group)")
    p.add_argument("--seconds", type=positive_float, help="stop after this long")
    p.add_argument("--budget-us", type=positive_float, default=1000.0,
                   help="longest a compiled loop call runs before Python looks around (default 1000)")
    p.add_argument("--warm-ab", type=int, default=0, metavar="BIT",
                   help="for benchmarks: warm up (net warm-ups, dry runs of the order path) only "
                        "while bit BIT of the TSC is 0, so that one run has warm and cold periods "
                        "(28: about 0.1 s each at 2.6 GHz; default 0: always)")
    p.set_defaults(handler=run_from_args)
