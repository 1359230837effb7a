import json

import pytest

from safediffusion.config import DataConfig
from safediffusion.data.mixer import PromptMixer, build_prompt_mixer
from safediffusion.data.prompts import load_prompts
from safediffusion.errors import UserError


def test_txt_csv_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n# comment\n  a dog  \n")
    assert load_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    (tmp_path / "p.csv").write_text('id,text\n1,"a, cat"\n2,\n3,a dog\n')
    assert load_prompts(tmp_path / "p.csv", column="text") == ["a, cat", "a dog"]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n\n" + json.dumps({"prompt": "y"}) + "\n")
    assert load_prompts(tmp_path / "p.jsonl") == ["x", "y"]


def test_shared_csv_column(shared_data):
    prompts = load_prompts(shared_data / "i2p_4703.csv", column="prompt")
    assert len(prompts) > 4000


@pytest.mark.parametrize(
    "name, content, column, words",
    [
        ("missing.txt", None, "prompt", ["does not exist"]),
        ("empty.txt", b"\n\n", "prompt", ["contains no prompts"]),
        ("bin.txt", b"\x00\x01\x02abc", "prompt", ["binary"]),
        ("latin.txt", "caf\xe9".encode("latin-1"), "prompt", ["not UTF-8"]),
        ("p.csv", b"a,b\n1,2\n", "prompt", ["no column 'prompt'", "columns: a, b"]),
        ("p.jsonl", b'{"prompt": "x"}\nnot json\n', "prompt", ["line 2", "not valid JSON"]),
        ("q.jsonl", b'{"text": "x"}\n', "prompt", ["line 1", "no key 'prompt'"]),
    ],
)
def test_bad_files(tmp_path, name, content, column, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_prompts(path, column=column)
    for w in words:
        assert w in str(info.value)
    assert str(path) in str(info.value)


def test_mixer_ratio_and_determinism():
    mixer = PromptMixer(benign=[f"b{i}" for i in range(10)], unsafe=[f"u{i}" for i in range(10)],
                        unsafe_ratio=0.25, seed=3)
    first = mixer.epoch_prompts(5, 400)
    assert first == mixer.epoch_prompts(5, 400)
    assert first != mixer.epoch_prompts(6, 400)
    assert first != mixer.epoch_prompts(5, 400, rank=1)
    frac = sum(name == "unsafe" for _, name in first) / len(first)
    assert 0.18 < frac < 0.32
    assert all(p.startswith("u") == (name == "unsafe") for p, name in first)


def test_mixer_single_set_and_builtin():
    mixer = build_prompt_mixer(DataConfig(prompts="tiny:benign", unsafe_prompts=None), seed=0)
    assert all(name == "benign" for _, name in mixer.epoch_prompts(0, 20))
    mixer = build_prompt_mixer(DataConfig(prompts=None, unsafe_prompts="tiny:unsafe"), seed=0)
    assert all(name == "unsafe" for _, name in mixer.epoch_prompts(0, 20))
