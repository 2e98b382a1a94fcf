"""Shared fixtures: offline mode for every test, the embedded model's tokenizer, tiny models."""

from __future__ import annotations

import os

# Set before transformers is imported anywhere: tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


@pytest.fixture(scope="session")
def embedded_path() -> str:
    """Directory of the embedded model's converted weights and tokenizer (converted once)."""
    from dail.models import resolve

    return resolve("smollm2-135m").path


@pytest.fixture(scope="session")
def tokenizer(embedded_path):
    """The embedded model's tokenizer (SmolLM2 chat template)."""
    from dail.models import load_tokenizer

    return load_tokenizer(embedded_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_path) -> str:
    """A random-weight 2-layer Llama with the embedded tokenizer, saved like a real model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(embedded_path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny models gain nothing from intra-op threads, and on a busy
    machine every op of a 2-thread pool waits for the slower thread (~5x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
