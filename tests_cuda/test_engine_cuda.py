"""GPU checks of dail.engine. Not part of `make test` (CI has no GPU); on a CUDA machine:

    PYTHONPATH=src python -m pytest -q tests_cuda

What they hold: CUDA-graph replay gives exactly the tokens of the same engine run eagerly (bf16 and
float32, plain and mixed); in float64 the graphed engine gives the slow references' tokens; a decode
step makes no host synchronisation (torch's sync debug mode set to "error"); graphs are captured
once per (bucket, choose) and replayed by later calls. Without a GPU every test FAILS: a run here
that reports passes is a run on a GPU.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from dail.engine import Engine, reference_sample
from dail.expand import reference_rollout
from dail.sampling import Sampler, ThresholdChoose, row_key

VOCAB = 97
EOS = (5, 11)
SAMPLING = {"temperature": 1.2, "top_p": 0.9, "top_k": 40}


@pytest.fixture(autouse=True)
def cuda():
    assert torch.cuda.is_available(), "tests_cuda needs a CUDA device"


def tiny(kind: str, dtype: torch.dtype):
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    config = LlamaConfig(**shape) if kind == "llama" else Qwen2Config(**shape)
    config._attn_implementation = "sdpa"
    model = (LlamaForCausalLM if kind == "llama" else Qwen2ForCausalLM)(config)
    return model.to("cuda", dtype).eval()


def prompts_of(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    ids = [i for i in range(VOCAB) if i not in EOS]
    return [[rng.choice(ids) for _ in range(rng.randint(1, 40))] for _ in range(n)]


def groups_of(n: int, mixed: bool, seed: int = 0) -> list[list[list[int]]]:
    prompts = prompts_of(n, seed)
    return [[p, p + prompts[(i + 1) % n]] if mixed else [p] for i, p in enumerate(prompts)]


def decode(engine, groups, mixed: bool, max_new_tokens: int = 48):
    choose = ThresholdChoose(**SAMPLING, tau=0.05) if mixed else Sampler(**SAMPLING)
    keys = [row_key(7, f"p{i}", 0) for i in range(len(groups))]
    out = {g.index: g for g in engine.generate(groups, keys, choose, max_new_tokens=max_new_tokens)}
    return [out[i] for i in range(len(groups))]


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_graph_replay_equals_the_eager_engine(dtype, mixed):
    model = tiny("qwen2", dtype)
    groups = groups_of(40, mixed)
    graphed = Engine(model, eos_token_ids=EOS)  # CUDA defaults: graphs, windows of 16, buckets
    assert graphed.cuda_graphs and graphed.sync_every == 16 and graphed.bucketed
    eager = Engine(model, eos_token_ids=EOS, cuda_graphs=False)
    want, got = decode(eager, groups, mixed), decode(graphed, groups, mixed)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert [g.source for g in got] == [g.source for g in want]
    assert [g.finish for g in got] == [g.finish for g in want]
    assert {g.finish for g in got} == {"eos", "length"}  # the batch shrank through several buckets
    for a, b in zip(got, want):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_graphed_float64_equals_the_references(kind):
    model = tiny(kind, torch.float64)
    engine = Engine(model, eos_token_ids=EOS)
    prompts = prompts_of(12, seed=1)
    keys = [row_key(3, f"q{i}", 0) for i in range(12)]
    for i, gen in enumerate(engine.sample(prompts, keys, max_new_tokens=32, **SAMPLING)):
        want = reference_sample(model, prompts[i], keys[i], max_new_tokens=32, eos_token_ids=EOS, **SAMPLING)
        assert (gen.token_ids, gen.finish) == (want.token_ids, want.finish)
        torch.testing.assert_close(torch.tensor(gen.logprobs), torch.tensor(want.logprobs), rtol=1e-9, atol=1e-9)
    groups = groups_of(12, mixed=True, seed=2)
    for i, gen in enumerate(decode(engine, groups, mixed=True, max_new_tokens=32)):
        want = reference_rollout(model, *groups[i], row_key(7, f"p{i}", 0), max_new_tokens=32, tau=0.05,
                                 eos_token_ids=EOS, **SAMPLING)
        assert (gen.token_ids, gen.source, gen.finish) == (want.token_ids, want.source, want.finish)


@pytest.mark.parametrize("mixed", [False, True])
def test_a_decode_step_never_synchronises(mixed):
    model = tiny("llama", torch.bfloat16)
    engine = Engine(model, eos_token_ids=EOS, cuda_graphs=False, sync_every=16)
    groups = groups_of(5, mixed)
    choose = ThresholdChoose(**SAMPLING, tau=0.0) if mixed else Sampler(**SAMPLING)
    with torch.inference_mode():
        ws, logits = engine.prefill(groups, list(range(5)), max_new_tokens=8)
        size, _, rows = engine._arrange(ws, 5, [0, 1, 2, None, 4], 5)  # 4 live: a bucket of 4
        engine._choose(ws, size, choose, logits[rows])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                engine._step(ws, size, choose)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_graphs_are_captured_once_and_replayed_by_later_calls():
    model = tiny("qwen2", torch.bfloat16)
    engine = Engine(model, eos_token_ids=EOS)
    groups = groups_of(24, mixed=False)
    first = decode(engine, groups, mixed=False)
    captured = dict(engine._workspace.graphs)
    assert len(captured) >= 2 and {size for size, _ in captured} <= {1, 2, 4, 8, 16, 24}
    again = decode(engine, groups, mixed=False)
    assert engine._workspace.graphs == captured  # same objects: nothing recaptured
    assert [g.token_ids for g in again] == [g.token_ids for g in first]


def test_a_real_shape_in_bf16():
    # Qwen2.5-0.5B's architecture with random weights, 64 sequences: graphs equal eager, and fit in memory.
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 151936) for _ in range(rng.randint(64, 256))] for _ in range(64)]
    keys = [row_key(0, "shape", i) for i in range(64)]
    eos = list(range(100, 400))  # a few hundred EOS ids: rows end at scattered steps
    got = Engine(model, eos_token_ids=eos).sample(prompts, keys, max_new_tokens=64, temperature=1.0, top_p=0.95)
    want = Engine(model, eos_token_ids=eos, cuda_graphs=False).sample(prompts, keys, max_new_tokens=64,
                                                                       temperature=1.0, top_p=0.95)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
