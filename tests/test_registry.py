"""The registries, and the core working with the miniature world unavailable."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import safediffusion
from safediffusion.errors import UserError
from safediffusion.registry import REWARDS, Registry, RewardEntry

SRC = Path(safediffusion.__file__).resolve().parent


def test_registry_lookup_and_errors():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]
    reg.register("a", 1)  # the same entry again is fine (a module imported twice)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", 2)
    reg.register("a", 2, replace=True)
    assert reg.get("a") == 2
    with pytest.raises(UserError, match="unknown widget 'b'; choose one of: a"):
        reg.get("b")


def test_a_registered_reward_is_built_by_name():
    from safediffusion.config import RewardConfig
    from safediffusion.rewards.base import Reward
    from safediffusion.rewards.build import build_reward

    class Constant(Reward):
        name = "constant"

        def score(self, images, prompts):
            return images.new_full((len(images),), 0.25)

    REWARDS.register("test-constant", RewardEntry(lambda ctx: Constant(), needs_encoder=False))
    try:
        import torch

        reward = build_reward(RewardConfig(name="test-constant"))
        assert reward(torch.zeros(3, 3, 8, 8), ["a", "b", "c"]).tolist() == [0.25] * 3
    finally:
        REWARDS.unregister("test-constant")
    with pytest.raises(UserError, match="unknown reward 'test-constant'.*choose one of: clip, "):
        build_reward(RewardConfig(name="test-constant"))


def _imports(path: Path) -> set[str]:
    """Every ``safediffusion`` module ``path`` imports, at module level or inside functions (not under
    ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("safediffusion")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safediffusion"):
            out |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return out


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_core_never_imports_the_miniature_world():
    graph = _module_graph()
    offenders = {m: sorted(t for t in targets if t.startswith("safediffusion.mini"))
                 for m, targets in graph.items() if not m.startswith("safediffusion.mini")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


BLOCK_MINI = textwrap.dedent("""
    import importlib, pkgutil, sys, warnings

    class BlockMini:
        def find_spec(self, name, path=None, target=None):
            if name == "safediffusion.mini" or name.startswith("safediffusion.mini."):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, BlockMini())
    import safediffusion
    for info in pkgutil.walk_packages(safediffusion.__path__, "safediffusion."):
        if not info.name.startswith(("safediffusion.mini", "safediffusion.__main__")):
            importlib.import_module(info.name)
    from safediffusion import registry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "mini" not in registry.MODELS and "mini-detector" not in registry.REWARDS
    assert any("plugin 'mini'" in str(w.message) for w in caught), [str(w.message) for w in caught]
    from safediffusion.cli import main
    rc = main(["train", "--config", "tiny", "--output-dir", sys.argv[1], "train.epochs=1",
               "logging.progress=false", "logging.tensorboard=false"])
    assert rc == 0, rc
    assert main(["train", "--config", "tiny", "--output-dir", sys.argv[1] + "-x", "model.pretrained=mini"]) == 2
    loaded = sorted(m for m in sys.modules if m.startswith("safediffusion.mini"))
    assert not loaded, loaded
    print("OK")
""")


@pytest.mark.slow
def test_core_imports_and_trains_without_the_miniature_world(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCK_MINI, str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "run" / "final").is_dir()
