"""Tests for dail.engine: the batched engine against the slow reference (`reference_sample`) token for
token on tiny random float64 models, whatever the batch size, order, prompt lengths, prefill chunking
or decode mode (host-read windows, buckets, emulated CUDA graphs); a decode step reads nothing back to
the host; graphs are captured once per bucket. The sampling arithmetic itself is tested in
test_sampling.py."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dail.sampling as sampling_mod
from dail.engine import Engine, bucket_sizes, reference_sample
from dail.sampling import Sampler, ThresholdChoose, row_key

from conftest import TINY_VOCAB as VOCAB
from conftest import tiny_llama, tiny_qwen2, traced_graph_engine

EOS = (5, 11)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# tiny models (built in conftest.py, shared with test_expand.py)


MODELS = {"llama": tiny_llama, "llama-eager": lambda: tiny_llama("eager"), "qwen2": tiny_qwen2}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def prompts_of(n: int, seed: int = 0) -> list[list[int]]:
    """Prompts of different lengths (1 to 20 tokens) avoiding the EOS ids."""
    rng = random.Random(seed)
    ids = [i for i in range(VOCAB) if i not in EOS]
    return [[rng.choice(ids) for _ in range(rng.randint(1, 20))] for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# engine vs reference

SAMPLING = {"temperature": 0.9, "top_p": 0.85, "top_k": 40}


def check_equal(got, want):
    assert got.token_ids == want.token_ids
    assert got.finish == want.finish
    assert got.source == want.source
    # eager attention runs its softmax in float32 even for a float64 model: float32-sized slack
    torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_engine_sample_equals_reference(model, batch_size):
    prompts = prompts_of(8)
    keys = [row_key(3, f"p{i}", 0) for i in range(8)]
    engine = Engine(model, eos_token_ids=EOS)
    got = engine.sample(prompts, keys, max_new_tokens=24, batch_size=batch_size, **SAMPLING)
    finishes = set()
    for i, gen in enumerate(got):
        assert gen.index == i
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=24, eos_token_ids=EOS,
                                          **SAMPLING))
        finishes.add(gen.finish)
    assert finishes == {"eos", "length"}  # rows left the batch early (compaction) and ran to the end


@pytest.mark.parametrize("batch_size", [3, 8])
def test_every_decode_mode_equals_reference(model, engine_mode, batch_size):
    # Host reads every 4-16 steps (groups run on past EOS, unread), bucketed batches padded with
    # copies, and steps replayed from a trace as CUDA graphs replay them: the same tokens.
    prompts = prompts_of(8)
    keys = [row_key(3, f"p{i}", 0) for i in range(8)]
    got = engine_mode(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=24, batch_size=batch_size,
                                                       **SAMPLING)
    for i, gen in enumerate(got):
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=24, eos_token_ids=EOS,
                                          **SAMPLING))
    assert {gen.finish for gen in got} == {"eos", "length"}


def test_graphs_are_captured_once_per_bucket_and_reused_across_calls():
    model = tiny_llama()
    prompts, keys = prompts_of(12, seed=6), [row_key(6, "g", i) for i in range(12)]
    sampling = {"temperature": 1.5, "top_p": 1.0}  # hot: most rows hit EOS, so the batch shrinks
    engine = traced_graph_engine(model, eos_token_ids=EOS, sync_every=4, bucketed=True)
    first = engine.sample(prompts, keys, max_new_tokens=60, **sampling)
    assert engine.captures[0] == 12 and len(engine.captures) >= 3  # 12 groups start at 12, then buckets 8, 4, ...
    assert set(engine.captures[1:]) <= {1, 2, 4, 8}
    assert engine.captures == sorted(set(engine.captures), reverse=True)  # each bucket captured once
    captured = list(engine.captures)
    again = engine.sample(prompts, keys, max_new_tokens=60, **sampling)  # same workspace, same choose: replays
    assert engine.captures == captured
    assert [g.token_ids for g in again] == [g.token_ids for g in first]
    for i, gen in enumerate(first):
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=60, eos_token_ids=EOS,
                                          **sampling))
    # a decode that does not fit the workspace (prompts past its rounded-up width) gets a new one
    long = [p * 20 for p in prompts[:2]]
    engine.sample(long, keys[:2], max_new_tokens=60, **sampling)
    assert len(engine.captures) > len(captured)


def test_interleaved_generates_on_a_graph_engine_do_not_share_a_workspace():
    model = tiny_llama()
    prompts, keys = prompts_of(6, seed=8), [row_key(6, "i", i) for i in range(6)]
    engine = traced_graph_engine(model, eos_token_ids=EOS, sync_every=4, bucketed=True)
    choose = Sampler(**SAMPLING)
    outer = engine.generate([[p] for p in prompts[:3]], keys[:3], choose, max_new_tokens=20)
    first = next(outer)  # the outer decode is suspended mid-way on the kept workspace ...
    got = {g.index + 3: g for g in engine.generate([[p] for p in prompts[3:]], keys[3:], choose, max_new_tokens=20)}
    got.update({g.index: g for g in [first, *outer]})  # ... and resumes after the inner one ran elsewhere
    assert sorted(got) == list(range(6))
    for i, gen in got.items():
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=20, eos_token_ids=EOS,
                                          **SAMPLING))


class HostReads(TorchDispatchMode):
    """Records every op that would make a GPU wait for the host or give a data-dependent shape."""

    FORBIDDEN = ("_local_scalar_dense", "nonzero", "masked_select", "unique")

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        boolean_index = name.startswith("aten.index.Tensor") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if boolean_index or any(f in name for f in self.FORBIDDEN):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mixed", [False, True])
def test_a_decode_step_reads_nothing_back_to_the_host(model, mixed):
    # What a CUDA graph may capture. (The vocabulary of 97 < 256 keeps top-p on its full sort, the
    # GPU path; the CPU-only top-k head branch is the one deliberate host read in sampling.)
    rows = 2 if mixed else 1
    choose = ThresholdChoose(**SAMPLING, tau=0.05) if mixed else Sampler(**SAMPLING)
    engine = Engine(model, eos_token_ids=EOS, bucketed=True, sync_every=4)
    prompts = [[p] * rows for p in prompts_of(3, seed=7)]
    with torch.inference_mode():
        ws, logits = engine.prefill(prompts, [1, 2, 3], max_new_tokens=8)
        groups, _, gathered = engine._arrange(ws, 3, [0, 1, None], 4)  # 2 live groups of 3 -> a bucket of 2
        engine._choose(ws, groups, choose, logits[gathered])
        with HostReads() as trap:
            engine._step(ws, groups, choose)
            engine._step(ws, groups, choose)
    assert trap.seen == []
    probe = HostReads()
    with probe:  # and the trap does catch host reads
        x = torch.tensor([1.0, 2.0])
        bool(x.sum() > 1), x[x > 1]
    assert probe.seen


def test_bucket_sizes_and_settings():
    assert bucket_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256]
    engine = Engine(tiny_llama(), eos_token_ids=EOS, bucketed=True)
    assert [engine.bucket(n) for n in (1, 3, 5, 17, 33, 65, 250)] == [1, 4, 8, 32, 64, 96, 256]
    assert [engine.bucket(n, cap=40) for n in (3, 33, 40)] == [4, 40, 40]  # never above the batch's start
    assert Engine(tiny_llama(), eos_token_ids=EOS).bucket(5) == 5  # CPU default: exact sizes
    with pytest.raises(ValueError, match="CUDA graphs need a model on a CUDA device"):
        Engine(tiny_llama(), cuda_graphs=True)
    with pytest.raises(ValueError, match="sync_every"):
        Engine(tiny_llama(), sync_every=-1)


def test_engine_is_invariant_to_order_duplicates_and_prefill_chunking(model):
    base = prompts_of(6, seed=1)
    prompts = base + base[:3]  # repeated prompts with other sample indices share a prefill
    keys = [row_key(0, f"p{i % 6}", i // 6) for i in range(9)]
    want = Engine(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=16, **SAMPLING)
    order = list(range(9))
    random.Random(0).shuffle(order)
    small_chunks = Engine(model, eos_token_ids=EOS, prefill_tokens=16)
    got = small_chunks.sample([prompts[i] for i in order], [keys[i] for i in order], max_new_tokens=16, **SAMPLING)
    for j, i in enumerate(order):
        assert got[j].token_ids == want[i].token_ids and got[j].finish == want[i].finish


def test_engine_without_eos_stop_runs_to_max_new_tokens(model):
    prompts, keys = prompts_of(4, seed=2), [row_key(0, "x", i) for i in range(4)]
    out = Engine(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=30, stop_on_eos=False,
                                                  top_p=1.0, temperature=1.5)
    assert all(len(g.token_ids) == 30 and g.finish == "length" for g in out)
    assert any(set(g.token_ids) & set(EOS) for g in out)  # EOS was sampled and did not stop the row


def test_engine_draw_index_selects_an_independent_stream(model):
    prompts, keys = prompts_of(4, seed=3), [row_key(0, "y", i) for i in range(4)]
    engine = Engine(model, eos_token_ids=())
    a = engine.sample(prompts, keys, max_new_tokens=12, draw=0)
    b = engine.sample(prompts, keys, max_new_tokens=12, draw=1)
    assert [g.token_ids for g in a] != [g.token_ids for g in b]
    ref = reference_sample(model, prompts[0], keys[0], max_new_tokens=12, draw=1)
    assert b[0].token_ids == ref.token_ids


def test_engine_cpu_top_p_head_path_equals_reference(monkeypatch):
    model = tiny_llama()
    monkeypatch.setattr(sampling_mod, "_TOP_P_HEAD", 3)
    prompts, keys = prompts_of(5, seed=4), [row_key(1, "h", i) for i in range(5)]
    got = Engine(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=12, top_p=0.9)
    for i, gen in enumerate(got):
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=12, top_p=0.9,
                                          eos_token_ids=EOS))


def test_generate_checks_its_arguments():
    engine = Engine(tiny_llama(), eos_token_ids=EOS)
    choose = Sampler()
    with pytest.raises(ValueError, match="same number of rows"):
        list(engine.generate([[[1, 2]], [[3], [4]]], [0, 1], choose, max_new_tokens=2))
    with pytest.raises(ValueError, match="one key per group"):
        list(engine.generate([[[1, 2]]], [0, 1], choose, max_new_tokens=2))
    with pytest.raises(ValueError, match="empty prompt"):
        list(engine.generate([[[]]], [0], choose, max_new_tokens=2))
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(engine.generate([[[1, 2]]], [0], choose, max_new_tokens=0))
    assert list(engine.generate([], [], choose, max_new_tokens=2)) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_runs_in_low_precision(dtype):
    # bf16 is the GPU dtype; on CPU only a smoke test: sampling math is float32 whatever the weights.
    model = tiny_llama().to(dtype)
    prompts, keys = prompts_of(4, seed=5), [row_key(0, "bf", i) for i in range(4)]
    out = Engine(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=8, **SAMPLING)
    for gen in out:
        assert all(0 <= t < VOCAB for t in gen.token_ids) and 1 <= len(gen.token_ids) <= 8
        assert all(lp <= 0 and math.isfinite(lp) for lp in gen.logprobs[0])
