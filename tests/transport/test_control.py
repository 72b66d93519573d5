from __future__ import annotations

import os

from appliance.transport import control, records


def test_kill_request_and_acknowledgement_through_the_block(shm_dir):
    cli = control.ControlBlock.open()
    engine = control.ControlBlock.open()           # a second mapping, as another process has
    assert not engine.killed
    epoch = cli.request_kill("test reason")
    assert engine.killed and engine.epoch == epoch == 1
    assert engine.rec["kill_reason"] == b"test reason"
    assert engine.rec["kill_source"] == control.SOURCE_CLI
    control.ack_kill(engine.words, epoch, 123)
    assert cli.ack_epoch == epoch
    cli.reset_kill()
    assert not engine.killed
    cli.close()
    engine.close()


def test_actors_register_and_heartbeat(shm_dir):
    cb = control.ControlBlock.open()
    i = cb.register_actor("engine", control.ACTOR_ENGINE, 3)
    control.heartbeat(cb.words, i, 42)
    control.heartbeat(cb.words, i, 43)
    (a,) = cb.actors()
    assert a["name"] == "engine" and a["pid"] == os.getpid() and a["loops"] == 2 and a["alive"]
    assert cb.register_actor("engine", control.ACTOR_ENGINE, 3) == i
    control.set_risk_state(cb.words, records.RISK_REDUCING)
    assert cb.rec["risk_state"] == records.RISK_REDUCING
    cb.close()


def test_a_control_block_of_another_layout_is_replaced(shm_dir):
    from appliance.transport import shm
    old = shm.create(control.NAME, shm.KIND_CONTROL, 64, 1, 4096, str(shm_dir), lock=False)
    old.close()
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        assert cb.rec.dtype == records.CONTROL_BLOCK and not cb.killed
        cb.register_actor("x", control.ACTOR_OTHER)
    finally:
        cb.close()
