"""LoRA output folders remember which base weights they were trained on."""

import json
import warnings

import pytest


def test_lora_folder_warns_when_its_local_base_changed(tmp_path):
    from safediffusion.models.bundle import lora_metadata, weights_fingerprint
    from safediffusion.models.tiny import save_tiny_pipeline

    base = save_tiny_pipeline(tmp_path / "base")
    unet_file = next((base / "unet").glob("diffusion_pytorch_model.*"))
    meta = lora_metadata(str(base))
    assert meta["base_unet_fingerprint"] == weights_fingerprint(unet_file)
    assert "base_unet_fingerprint" not in lora_metadata("stable-diffusion-v1-5/stable-diffusion-v1-5")

    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (lora / "safediffusion.json").write_text(json.dumps(meta))
    from safediffusion.models.bundle import _lora_base

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _lora_base(str(lora)) == str(base)  # unchanged base: no warning
    data = bytearray(unet_file.read_bytes())
    data[-1] ^= 0xFF
    unet_file.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="trained on other weights"):
        assert _lora_base(str(lora)) == str(base)


def test_weights_fingerprint_samples_large_files(tmp_path):
    from safediffusion.models.bundle import weights_fingerprint

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(5_000_000))
    before = weights_fingerprint(big, chunks=8, chunk_size=1000)
    data = bytearray(big.read_bytes())
    data[-1] = 1  # the last chunk is always sampled
    big.write_bytes(bytes(data))
    assert weights_fingerprint(big, chunks=8, chunk_size=1000) != before


def test_corrupt_weights_are_one_clear_error(tmp_path):
    """A truncated or corrupt safetensors file is a UserError naming the folder, not a traceback."""
    from safediffusion.errors import UserError
    from safediffusion.eval.clip import ClipImageEncoder
    from safediffusion.models.bundle import load_bundle
    from safediffusion.models.tiny import save_tiny_clip, save_tiny_pipeline
    from safediffusion.rewards.encoders import load_state_dict_file

    pipe = save_tiny_pipeline(tmp_path / "pipe")
    (pipe / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="could not load model from .*pipe"):
        load_bundle(str(pipe))
    clip = save_tiny_clip(tmp_path / "clip")
    (clip / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not load the CLIP model from .*clip"):
        ClipImageEncoder(str(clip))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read .* as safetensors"):
        load_state_dict_file(weights)


def test_offline_hub_model_names_the_command_that_fetches_it(monkeypatch):
    from safediffusion.errors import UserError
    from safediffusion.models.bundle import load_bundle

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_bundle("no-such-org/no-such-sd", revision="abc123")
    message = str(e.value)
    assert "'no-such-org/no-such-sd' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in message
    assert ("run `hf download no-such-org/no-such-sd --revision abc123 --include model_index.json "
            "--include 'unet/*' --include 'scheduler/*'") in message
    assert message.endswith("or pass a local directory") and "\n" not in message
