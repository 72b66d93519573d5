"""`appliance top`: headless (textual's Pilot, the screen read back from its SVG export) and in a
real pseudo-terminal (the process drawn into a pyte screen), against regions written by feeder
processes; q quits, k asks and then pulls the kill switch."""
from __future__ import annotations

import asyncio
import html
import os
import re
import select
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from appliance import config
from appliance.ops import books, source, top
from tests.ops.conftest import REPO, wait_until

CELL = 12.2          # px per column in textual's SVG export


def screen_lines(app) -> list[str]:
    """The app's screen as text lines (from textual's SVG screenshot)."""
    svg = app.export_screenshot()
    rows: dict[int, dict[int, str]] = defaultdict(dict)
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
                         r'clip-path="url\(#[^)]*-line-(\d+)\)">([^<]*)</text>', svg):
        x, line, txt = float(m.group(1)), int(m.group(2)), html.unescape(m.group(3))
        rows[line][round(x / CELL)] = txt.replace("\xa0", " ")
    out = []
    for line in range(max(rows) + 1 if rows else 0):
        s = ""
        for col in sorted(rows.get(line, {})):
            s = s.ljust(col) + rows[line][col]
        out.append(s.rstrip())
    return out


def run_app(cfg_path, script, size=(180, 90), books_on=True, kill_timeout_s=60.0):
    """Run TopApp headless; ``script(app, pilot)`` is an async function doing the test."""
    cfg = config.load(cfg_path)
    obs = source.Observer(cfg)
    w = None
    if books_on:
        w = books.BookWatcher(cfg, str(obs.dir))
        w.warm()

    async def main():
        app = top.TopApp(obs, w, 10.0, kill_timeout_s=kill_timeout_s)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            await script(app, pilot)
        return app
    try:
        return asyncio.run(main())
    finally:
        if w is not None:
            w.close()


async def wait_screen(app, pilot, pred, timeout=60.0):
    end = time.monotonic() + timeout
    while True:
        lines = screen_lines(app)
        if pred("\n".join(lines)):
            return lines
        if time.monotonic() > end:
            raise AssertionError("screen never matched:\n" + "\n".join(lines))
        await pilot.pause(0.2)


def row_of(lines, *words):
    """The first screen line holding every word."""
    for line in lines:
        if all(w in line for w in words):
            return line.split()
    raise AssertionError(f"no line with {words}:\n" + "\n".join(lines))


def test_view_shows_actors_rings_latency_books_trading_and_counters(ops_cfg, shm_dir, feeders):
    md = feeders(ops_cfg, "md", "binance", "1024")
    eng = feeders(ops_cfg, "engine")
    md.do("snapshot 0 1000 1001 8", "trade 0 buy 1001 3", "hist frame_to_publish 900 3",
          "hist frame_to_publish 40000", "counter frames 42")
    eng.do("hist md_to_order 2500", "counter fills 3")
    cfg = config.load(ops_cfg)
    tick = cfg.instrument("binance", "NKNUSDT").tick

    async def script(app, pilot):
        lines = await wait_screen(app, pilot, lambda s: "synced" in s and "md_to_order" in s)
        assert row_of(lines, "md.binance", "md", "alive")[2] == str(md.p.pid)
        assert row_of(lines, "engine", "engine", "alive")[2] == str(eng.p.pid)
        r = row_of(lines, "md.binance", "1024", f"pid {md.p.pid}")
        assert r[1] == "19" and "top" in r       # head: 16 levels, BATCH_END, BOOK_STATUS, TRADE
        h = row_of(lines, "md.binance", "frame_to_publish")
        assert h[2] == "4" and h[-2:] == ["40.0", "µs"]          # count 4, max 40 µs
        assert row_of(lines, "engine", "md_to_order")[3:5] == ["2.5", "µs"]
        assert any("binance:NKNUSDT" in line and "synced" in line for line in lines)
        best = books.decimal_str(1000, tick)
        ask = books.decimal_str(1001, tick)
        assert any(line.split()[1:3] == [best, ask] for line in lines)   # bid qty, bid, ask
        assert any("mm-nknusdt" in line and "USDT" in line for line in lines)
        assert any("(no open orders)" in line for line in lines)
        assert any(line.startswith("md.binance: frames 42") for line in lines)
        assert any(line.startswith("engine: fills 3") for line in lines)
        assert any("kill switch: clear" in line for line in lines)
        assert any("risk state: RUNNING" in line for line in lines)
        # it is live: a change in shm shows up on the next refreshes
        md.do("remove 0 buy 1000")
        nb = books.decimal_str(999, tick)
        lines = await wait_screen(app, pilot, lambda s: any(
            line.split()[1:3] == [nb, ask] for line in s.splitlines()))
        await pilot.press("q")

    app = run_app(ops_cfg, script)
    assert app.refreshes >= 2 and not app.is_running


def test_k_then_n_does_not_kill(ops_cfg, shm_dir, feeders):
    feeders(ops_cfg, "engine")
    from appliance.transport import control

    async def script(app, pilot):
        await pilot.press("k")
        await pilot.pause(0.3)
        assert isinstance(app.screen, top.ConfirmKill)
        assert any("Pull the kill switch?" in line for line in screen_lines(app))
        await pilot.press("n")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, top.ConfirmKill)
        await wait_screen(app, pilot, lambda s: "not pulled" in s)
        await pilot.press("k")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, top.ConfirmKill)
        await pilot.press("q")

    run_app(ops_cfg, script, books_on=False)
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        assert not cb.killed and cb.epoch == 0
    finally:
        cb.close()
    state_dir = config.load(ops_cfg).appliance.state_dir
    assert not os.path.exists(os.path.join(state_dir, "killswitch.json"))


def test_k_then_y_pulls_the_kill_switch_and_shows_the_engines_ack(ops_cfg, shm_dir, feeders):
    eng = feeders(ops_cfg, "engine")
    from appliance.engine import killswitch
    from appliance.transport import control

    async def script(app, pilot):
        await pilot.press("k")
        await pilot.pause(0.3)
        await pilot.press("k")                 # a second k does not stack a second question
        await pilot.pause(0.3)
        await pilot.press("y")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, top.ConfirmKill)
        lines = await wait_screen(app, pilot, lambda s: "HALTED (epoch 1): engine pid" in s)
        assert any(f"HALTED (epoch 1): engine pid {eng.p.pid} acknowledged in" in line
                   for line in lines)
        lines = await wait_screen(app, pilot, lambda s: "KILL SWITCH SET" in s
                                  and "acknowledged by the engine" in s)
        assert any("risk state: HALTED" in line for line in lines)
        assert any("persisted HALT" in line for line in lines)
        await pilot.press("q")

    app = run_app(ops_cfg, script, books_on=False)
    assert app.kill_result["confirmed"] is True and app.kill_result["engine_pid"] == eng.p.pid
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        assert cb.killed and cb.epoch == 1 and cb.ack_epoch == 1
        assert cb.rec["kill_reason"].decode().startswith("kill from appliance top")
    finally:
        cb.close()
    st = killswitch.read_state(config.load(ops_cfg).appliance.state_dir)
    assert st["halted"] is True and st["source"] == "cli"


def test_nothing_running_is_said_on_screen(tmp_path):
    from tests.ops.conftest import config_text
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(config_text(tmp_path / "no-shm", tmp_path / "state"))

    async def script(app, pilot):
        lines = await wait_screen(app, pilot, lambda s: "nothing is running" in s)
        assert any("(none registered)" in line for line in lines)
        assert any("no md ring" in line for line in lines)
        assert any("no engine status file" in line for line in lines)
        await pilot.press("q")

    run_app(cfg, script)
    assert not (tmp_path / "no-shm").exists()


# --- in a real terminal ------------------------------------------------------------------------

class Pty:
    """A process on a pseudo-terminal, its output drawn into a pyte screen."""

    def __init__(self, argv, cols=180, rows=70, env=None):
        import fcntl
        import pty
        import struct
        import termios

        import pyte
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(env or os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        self.p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                  env=env, start_new_session=True)
        os.close(slave)

    def pump(self, seconds=0.1) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            r, _, _ = select.select([self.master], [], [], max(0.0, left))
            if r:
                try:
                    data = os.read(self.master, 1 << 16)
                except OSError:
                    return
                if not data:
                    return
                self.stream.feed(data)
            elif left <= 0:
                return

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait(self, pred, timeout=120.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.2)
            if pred(self.text()):
                return self.text()
            if self.p.poll() is not None:
                self.pump(0.2)
                break
        raise AssertionError("terminal never matched:\n" + self.text())

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        os.close(self.master)


def test_appliance_top_in_a_terminal_draws_the_view_and_q_quits(ops_cfg, shm_dir, feeders):
    md = feeders(ops_cfg, "md", "binance", "1024")
    md.do("snapshot 0 1000 1001 5", "hist frame_to_publish 1200", "counter frames 7")
    t = Pty([sys.executable, "-m", "appliance.cli", "--config", str(ops_cfg), "top"])
    try:
        s = t.wait(lambda s: "frame_to_publish" in s and "synced" in s and "q quit" in s)
        assert "kill switch: clear" in s and "md.binance" in s
        t.send("q")
        wait_until(lambda: (t.pump(0.1), t.p.poll() is not None)[1], timeout=30)
        assert t.p.returncode == 0
    finally:
        t.close()


def test_top_without_a_terminal_is_one_line_and_exit_2(ops_cfg):
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(ops_cfg), "top"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "needs a terminal" in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("hz", ["0.1", "100"])
def test_refresh_rate_out_of_range_is_exit_2(ops_cfg, hz):
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(ops_cfg), "top",
                        "--refresh-hz", hz], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--refresh-hz" in r.stderr


def test_kill_with_nothing_running_sets_and_persists_the_halt_and_says_nobody_confirmed(ops_cfg,
                                                                                      shm_dir):
    from appliance.engine import killswitch

    async def script(app, pilot):
        await pilot.press("k")
        await pilot.pause(0.3)
        await pilot.press("y")
        lines = await wait_screen(app, pilot, lambda s: "nobody confirmed" in s)
        assert any("KILL SWITCH SET" in line and "NOT acknowledged" in line for line in lines)
        assert any("risk state: HALTED (no engine)" in line for line in lines)
        await pilot.press("q")

    app = run_app(ops_cfg, script, books_on=False)
    assert app.kill_result["confirmed"] is False and app.kill_result["engine_pid"] == 0
    assert killswitch.read_state(config.load(ops_cfg).appliance.state_dir)["halted"] is True
