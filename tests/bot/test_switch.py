"""The global switch the bot writes is the one the controller reads (controller/pause.py)."""

from __future__ import annotations

from pathlib import Path

from bot.switch import FilePauseSwitch
from controller.pause import FilePause
from tests.bot.conftest import T0


def test_pause_all_written_by_the_bot_is_read_by_the_controller(tmp_path: Path) -> None:
    path = tmp_path / "global-pause.json"
    bot_side, controller_side = FilePauseSwitch(path), FilePause(path)
    assert not bot_side.get().paused and not controller_side.read().paused
    bot_side.set(True, "slack:U0OPS", T0)
    state = controller_side.read()
    assert state.paused and state.by == "slack:U0OPS"
    assert bot_side.get().at == T0
    bot_side.set(False, "slack:U0OPS", T0)
    assert not controller_side.read().paused


def test_a_corrupt_switch_means_not_paused(tmp_path: Path) -> None:
    path = tmp_path / "global-pause.json"
    path.write_text("{half")
    assert not FilePauseSwitch(path).get().paused
    assert not FilePause(path).read().paused
