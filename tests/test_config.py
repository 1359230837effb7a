import dataclasses
from pathlib import Path

import pytest

from safediffusion.config import Config, load_config, parse_override, save_config
from safediffusion.errors import UserError


def test_defaults_follow_the_paper():
    cfg = Config()
    assert cfg.reward.alpha == 0.5
    assert cfg.train.group_size == 16
    assert cfg.train.clip_range == 1e-4
    assert cfg.train.adv_clip_max == 2.5
    assert cfg.sampling.eta == 1.0
    assert len(cfg.reward.safe_anchors) == 5 and len(cfg.reward.unsafe_anchors) == 3


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\nreward:\n  alpha: 0.2\n")
    cfg = load_config(path, ["train.epochs=3", "reward.alpha=0.7", "reward.mode=projection",
                             "model.use_lora=true", "sampling.resolution=null",
                             "reward.safe_anchors=a b,c d"])
    assert cfg.train.epochs == 3
    assert cfg.reward.alpha == pytest.approx(0.7)
    assert cfg.reward.mode == "projection"
    assert cfg.model.use_lora is True
    assert cfg.sampling.resolution is None
    assert cfg.reward.safe_anchors == ["a b", "c d"]
    assert cfg.base_dir == str(tmp_path.resolve())


def test_round_trip(tmp_path):
    cfg = load_config(None, ["data.prompts=x.txt", "train.epochs=2"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert dataclasses.asdict(again) | {"base_dir": None} == dataclasses.asdict(cfg) | {"base_dir": None}


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epoch=3", ["unknown config key 'train.epoch'", "epochs"]),
        ("bogus=1", ["unknown config key 'bogus'"]),
        ("train.epochs=three", ["train.epochs", "int", "three"]),
        ("model.use_lora=maybe", ["model.use_lora", "bool"]),
        ("reward.mode=sideways", ["reward.mode", "'all'"]),
        ("reward.alpha=-0.1", ["reward.alpha", ">= 0"]),
        ("train.group_size=1", ["train.group_size", ">= 2"]),
        ("sampling.eta=0", ["sampling.eta", "> 0 for GRPO"]),
        ("noequals", ["key=value"]),
    ],
)
def test_bad_values_name_the_key(override, words):
    with pytest.raises(UserError) as info:
        load_config(None, ["data.prompts=x.txt", override])
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(listy)


def test_parse_override_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=1e-4") == ("a.b", 1e-4)
    assert parse_override("a.b=hello world") == ("a.b", "hello world")
    assert parse_override("a.b=") == ("a.b", "")


def test_shipped_configs_load():
    from safediffusion.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"tiny", "sd15-paper"} <= set(names)
    for name in names:
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        cfg.validate()
    paper = load_config(CONFIG_DIR / "sd15-paper.yaml")
    assert paper.train.timestep_fraction * paper.sampling.num_steps == pytest.approx(49)
    assert paper.train.learning_rate == 1e-5 and paper.train.kl_beta == 0
    # names that resolve and download on first use, no path to fetch by hand
    assert paper.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert paper.reward.encoder == "hpsv2.1" and paper.data.prompts == "coprov2"
    assert paper.reward.open_clip_pretrained is None and paper.reward.open_clip_finetuned is None


def test_the_miniature_recipe():
    """configs/mini.yaml is the recipe docs/research_log.md (2026-12-04) measured; mini-long only trains longer."""
    from safediffusion.config import CONFIG_DIR

    mini = load_config(CONFIG_DIR / "mini.yaml")
    t = mini.train
    assert (t.epochs, t.prompts_per_epoch, t.group_size, t.train_batch_size) == (60, 8, 8, 16)
    assert t.train_batch_size % t.group_size == 0  # minibatches of whole groups
    assert t.deterministic_after_window and t.timestep_window == 0.4 and t.kl_beta == 0.01
    assert (t.clip_range, t.adv_clip_max, mini.reward.alpha, mini.reward.name) == (1e-4, 2.5, 0.5, "steering")
    long = load_config(CONFIG_DIR / "mini-long.yaml")
    assert long.train.epochs == 150
    long.train.epochs, long.train.checkpoint_every, long.base_dir = t.epochs, t.checkpoint_every, mini.base_dir
    assert long == mini


def test_no_shipped_file_names_the_removed_sd15_repository():
    """``runwayml/stable-diffusion-v1-5`` was taken down from the Hub in 2024."""
    root = Path(__file__).resolve().parents[1]
    dead = "runwayml" + "/"
    files = [root / "README.md", *(p for d in ("src", "docs", "scripts", "benchmarks") for p in (root / d).rglob("*")
                                   if p.suffix in (".py", ".md", ".yaml", ".yml", ".txt", ".sh", ".json"))]
    assert len(files) > 20
    assert [str(p.relative_to(root)) for p in files if dead in p.read_text(encoding="utf-8", errors="ignore")] == []


def test_duplicate_keys_are_refused(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("seed: 0\nlogging:\n  marker_rate: true\n  progress: false\n  marker_rate: false\n")
    with pytest.raises(UserError, match="sets 'marker_rate' twice .*line 5"):
        load_config(p)


def test_inherit_merges_sections_recursively(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ntrain:\n  epochs: 7\n  group_size: 4\nreward:\n  alpha: 0.2\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "child.yaml", ["reward.alpha=0.4"])
    assert (cfg.seed, cfg.train.epochs, cfg.train.group_size, cfg.reward.alpha) == (3, 9, 4, 0.4)
    (tmp_path / "loop.yaml").write_text("inherit: loop.yaml\n")
    with pytest.raises(UserError, match="inherits itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("inherit: nowhere.yaml\n")
    with pytest.raises(UserError, match="inherited by"):
        load_config(tmp_path / "orphan.yaml")


def test_recipe_options_are_checked():
    """train.timestep_selection / adv_std take only their named choices; adv_eps must be > 0."""
    cfg = load_config(None, ["train.timestep_selection=first", "train.adv_std=unbiased", "train.shuffle_samples=false"])
    assert (cfg.train.timestep_selection, cfg.train.adv_std, cfg.train.shuffle_samples) == ("first", "unbiased", False)
    defaults = Config().train
    assert (defaults.timestep_selection, defaults.adv_std, defaults.shuffle_samples) == ("random", "population", True)
    for bad, key in (("train.timestep_selection=last", "train.timestep_selection"),
                     ("train.adv_std=sample", "train.adv_std"), ("train.adv_eps=0", "train.adv_eps")):
        with pytest.raises(UserError, match=key):
            load_config(None, [bad])
