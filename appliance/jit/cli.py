"""Build every compiled kernel of the package into the numba cache, in parallel.

``appliance compile [--jobs N] [--all | --only MODULE...] [--list] [--prune] [--force] [--json]``.

Each module of :data:`appliance.jit.WARMERS` (with ``--all`` also
:data:`appliance.jit.OPTIONAL_WARMERS`: the one-process loops, the backtest loop) runs its
``warm()`` in a worker process (``--jobs``, default: one per CPU); a bar on stderr shows the
modules done and the kernels compiled so far (counted from numba's compile events in the
workers). Exit status 0 only when every module compiled; a failing module is reported on one line
with its error. Afterwards the actors' own warm-ups load machine code from the cache instead of
compiling. A successful run stamps the cache directory (``complete.json``: the modules compiled);
since the directory is keyed by the sources, a later run with the stamp in place has nothing to do
and returns at once (``--force`` runs the warm-ups anyway). ``--prune`` removes old cache
directories (from earlier source versions) of the cache root; see :mod:`appliance.jit`.
"""
from __future__ import annotations

import os
import sys
import time


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile every kernel into the numba cache (parallel)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--jobs", "-j", type=int, default=0,
                   help="worker processes (default: one per CPU)")
    p.add_argument("--all", action="store_true",
                   help="also the kernels of the one-process layout (appliance group) and of "
                        "appliance backtest")
    p.add_argument("--only", nargs="+", metavar="MODULE",
                   help="compile these warm-up modules only (see --list)")
    p.add_argument("--list", action="store_true", help="print the warm-up modules and exit")
    p.add_argument("--prune", action="store_true",
                   help="also remove cache directories of other source versions (keeps the "
                        "newest few)")
    p.add_argument("--force", action="store_true",
                   help="run the warm-ups even if this source version's cache is complete")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_main)


STAMP = "complete.json"


def _stamp_ok(cache, names: list[str]) -> bool:
    """Did an earlier ``appliance compile`` of this very source version (the cache directory is
    keyed by it) compile every one of ``names``?"""
    import json
    try:
        done = set(json.loads((cache / STAMP).read_text())["modules"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(names) <= done


# ------------------------------------------------------------------------------ worker process

def _worker(name: str, queue) -> dict:
    """Run one WARMERS module; report each compile to ``queue`` as it happens."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    import numba.core.event as ev

    class _Count(ev.Listener):
        depth = 0

        def on_start(self, event):
            self.depth += 1

        def on_end(self, event):
            self.depth -= 1
            d = event.data["dispatcher"].py_func
            queue.put((name, f"{d.__module__}.{d.__qualname__}"))

    listener = _Count()
    ev.register("numba:compile", listener)
    try:
        from appliance import jit
        jit.warm_module(name)
        err = None
    except BaseException as e:      # reported by the parent, one line per module
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        ev.unregister("numba:compile", listener)
    return {"module": name, "ok": err is None, "error": err,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


# ------------------------------------------------------------------------------------ parent

class _Bar:
    """One status line on stderr: a bar over the modules, kernels compiled, the latest one.
    Redrawn in place on a terminal; elsewhere one line per finished module."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.kernels, self.last = total, 0, 0, ""
        self.stream, self.tty = stream, stream.isatty()
        self.t0 = time.monotonic()

    def draw(self, final: bool = False) -> None:
        if not self.tty and not final:
            return
        width = 28
        fill = int(width * self.done / max(1, self.total))
        line = (f"compile [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} modules, "
                f"{self.kernels} kernels, {time.monotonic() - self.t0:5.1f} s")
        if not final and self.last:
            line += f"  {self.last[-40:]}"
        if self.tty:
            cols = 120
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except OSError:
                pass
            self.stream.write("\r" + line[:cols - 1].ljust(cols - 1) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def module_done(self, res: dict) -> None:
        self.done += 1
        status = "ok" if res["ok"] else f"FAILED: {res['error']}"
        msg = f"  {res['module']}: {status} ({res['seconds']:.1f} s)"
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.write(msg + "\n")
        self.draw()


def compile_all(names: list[str], jobs: int, bar: _Bar | None = None) -> list[dict]:
    """Run the warm-ups of ``names`` in ``jobs`` worker processes; returns one result each."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")        # fresh interpreters: nothing compiled is inherited
    manager = ctx.Manager()
    q = manager.Queue()
    results = []
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker, n, q): n for n in names}
            pending = set(futures)
            while pending:
                try:
                    while True:
                        _name, fn = q.get(timeout=0.1)
                        if bar:
                            bar.kernels += 1
                            bar.last = fn
                            bar.draw()
                except queue_mod.Empty:
                    pass
                for f in [f for f in pending if f.done()]:
                    pending.discard(f)
                    try:
                        res = f.result()
                    except BaseException as e:      # the worker itself died
                        res = {"module": futures[f], "ok": False, "seconds": 0.0,
                               "cpu_seconds": 0.0, "error": f"worker died: {e}"}
                    results.append(res)
                    if bar:
                        bar.module_done(res)
            while True:                              # compile events still queued
                try:
                    q.get_nowait()
                    if bar:
                        bar.kernels += 1
                except queue_mod.Empty:
                    break
    finally:
        manager.shutdown()
    return results


def _main(args) -> int:
    import json

    from appliance import jit

    known = list(jit.WARMERS) + list(jit.OPTIONAL_WARMERS)
    names = known if args.all else list(jit.WARMERS)
    if args.list:
        for n in known:
            print(n + ("  (--all)" if n in jit.OPTIONAL_WARMERS else ""))
        return 0
    if args.only:
        bad = [n for n in args.only if n not in known]
        if bad:
            print(f"compile: unknown module(s) {', '.join(bad)} (have: {', '.join(known)})",
                  file=sys.stderr)
            return 2
        names = [n for n in known if n in args.only]
    jobs = args.jobs or os.cpu_count() or 1
    if jobs < 1:
        print("compile: --jobs must be >= 1", file=sys.stderr)
        return 2
    cache = jit.cache_dir()
    if not args.force and not args.prune and _stamp_ok(cache, names):
        files = sum(1 for _ in cache.rglob("*.nbi"))
        if args.json:
            print(json.dumps({"ok": True, "seconds": 0.0, "kernels_compiled": 0,
                              "cache_dir": str(cache), "cache_index_files": files,
                              "modules": [], "pruned": [], "complete": True}))
        else:
            print(f"cache {cache} is complete for this source version ({files} functions); "
                  "nothing to compile (--force runs the warm-ups anyway)")
        return 0
    t0 = time.monotonic()
    bar = _Bar(len(names))
    bar.draw()
    results = compile_all(names, min(jobs, len(names)), bar)
    wall = time.monotonic() - t0
    bar.draw(final=True)
    pruned = [str(p) for p in jit.prune()] if args.prune else []
    failed = [r for r in results if not r["ok"]]
    files = sum(1 for _ in cache.rglob("*.nbi"))
    if not failed:
        from appliance import fsutil
        old = set()
        try:
            old = set(json.loads((cache / STAMP).read_text())["modules"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        fsutil.write_atomic(cache / STAMP, json.dumps(
            {"modules": sorted(old | set(names)), "seconds": round(wall, 1)}).encode())
    if args.json:
        print(json.dumps({"ok": not failed, "seconds": wall, "kernels_compiled": bar.kernels,
                          "cache_dir": str(cache), "cache_index_files": files,
                          "modules": sorted(results, key=lambda r: r["module"]),
                          "pruned": pruned}))
    else:
        print(f"compiled {bar.kernels} kernels of {len(names)} modules in {wall:.1f} s "
              f"with {min(jobs, len(names))} workers; cache {cache} ({files} functions)")
        for p in pruned:
            print(f"pruned {p}")
    for r in failed:
        print(f"compile: {r['module']} failed: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
