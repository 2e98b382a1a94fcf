"""Model resolution: the embedded GGUF (converted once, cached), local directories, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dail import models
from dail.models import ModelNotFoundError


def test_embedded_model_is_cached_as_safetensors(embedded_path):
    path = Path(embedded_path)
    assert (path / "model.safetensors").exists()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"


@pytest.mark.slow
def test_embedded_model_loads_from_cache_and_writes(monkeypatch, embedded_path):
    # The cache exists (fixture): a second resolve must not convert again.
    monkeypatch.setattr(models, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    model, tokenizer = models.load("smollm2-135m")
    assert model.dtype == torch.float32 and not model.training
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert "5" in tokenizer.decode(out[0, len(ids):])


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("DAIL_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


def test_local_directory_loads(tiny_model_dir):
    model, tokenizer = models.load(tiny_model_dir)
    assert model.config.hidden_size == 32 and tokenizer.pad_token_id is not None


@pytest.mark.parametrize(
    "name, words",
    [
        ("no-such-model", ["embedded alias (known: smollm2-135m, testbed)", "local directory", "not of the form owner/name"]),
        ("nobody/no-such-model", ["HF_HUB_OFFLINE=1", "not cached"]),
    ],
)
def test_unknown_model_says_what_was_tried(name, words):
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve(name)
    for w in words:
        assert w in str(info.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        models.resolve(str(tmp_path))


def test_lora_targets_and_attach(tiny_model_dir):
    model, _ = models.load(tiny_model_dir)
    assert models.default_target_modules(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = models.attach_lora(model, r=4, alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_unknown_architecture_needs_explicit_targets():
    with pytest.raises(ValueError, match="set lora.target_modules"):
        models.default_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))
