"""The miniature world reaches the core only through its plugin's registry entries."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from safediffusion import registry
from safediffusion.mini import plugin


def test_the_plugin_is_an_installed_entry_point():
    eps = {ep.name: ep.value for ep in entry_points(group=registry.PLUGIN_GROUP)}
    assert eps.get("mini") == "safediffusion.mini.plugin:register"


@pytest.mark.parametrize(("table", "name"), [
    (registry.MODELS, "mini"), (registry.ENCODERS, "mini"), (registry.ENCODERS, "mini-reward"),
    (registry.REWARDS, "mini-detector"), (registry.PROMPT_SOURCES, "mini"), (registry.ROLLOUT_METRICS, "marker_rate"),
    (registry.TRAINING_REPORTS, "mini-i2p"), (registry.TRAINING_REPORTS, "mini-geneval"), (registry.COMMANDS, "table"),
])
def test_registered_names(table, name):
    assert name in table


def test_registering_twice_is_harmless():
    plugin.register()
    assert registry.REWARDS.get("mini-detector").needs_encoder is False


def test_entries_resolve():
    from pathlib import Path

    from safediffusion.data.mixer import _load_source
    from safediffusion.errors import UserError

    assert (Path(registry.MODELS.get("mini").folder()) / "model_index.json").is_file()
    prompts = _load_source("mini:unsafe:gore", "prompt", str, 5, "unsafe")
    assert len(prompts) == 5
    with pytest.raises(UserError, match="mini:benign, mini:unsafe or mini:unsafe:<category>"):
        _load_source("mini:other", "prompt", str, None, "benign")


def test_table_command_comes_from_the_plugin(capsys):
    from safediffusion.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["table", "--help"])
    assert exit_info.value.code == 0
    assert "--ood-category" in capsys.readouterr().out
