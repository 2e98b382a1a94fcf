"""Tests for dail.engine: the counter-based uniforms against a plain-Python splitmix64, the sampling
transforms against hand-computed sets, inverse-CDF sampling against exact multinomials, and the
batched engine against the slow reference (`reference_sample`) token for token on tiny random
float64 models, whatever the batch size, order, prompt lengths or prefill chunking."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import dail.engine as engine_mod
from dail.engine import (
    Engine,
    apply_temperature,
    bucket_sizes,
    inverse_cdf,
    problem_hash,
    reference_sample,
    row_key,
    sampler,
    top_k_filter,
    top_p_filter,
    transform,
    uniforms,
)

from conftest import TINY_VOCAB as VOCAB
from conftest import tiny_llama, tiny_qwen2, traced_graph_engine

F64 = torch.float64
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
# counter-based randomness

_MASK = (1 << 64) - 1


def splitmix64(state: int) -> int:
    """splitmix64's output function on Python ints, straight from its definition (Vigna)."""
    z = state & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def slow_uniform(key: int, t: int, draw: int, bits: int = 53) -> float:
    """The (t * 16 + draw + 1)-th splitmix64 output of the stream seeded with `key`, top bits as [0, 1)."""
    state = (key & _MASK) + (t * 16 + draw + 1) * 0x9E3779B97F4A7C15
    return (splitmix64(state) >> (64 - bits)) / 2.0**bits


def test_uniforms_match_plain_python_splitmix64():
    keys = [row_key(s, f"p{s % 7}", s % 3) for s in range(50)] + [0, -1, (1 << 63) - 1, -(1 << 63)]
    k = torch.tensor(keys, dtype=torch.long)
    for t, draw in [(0, 0), (0, 1), (1, 0), (977, 1), (10**6, 0), (3, 15)]:
        got64 = uniforms(k, t, draw, torch.float64).tolist()
        got32 = uniforms(k, t, draw, torch.float32).tolist()
        assert got64 == [slow_uniform(key, t, draw) for key in keys]
        assert got32 == [slow_uniform(key, t, draw, bits=24) for key in keys]
        # a step counter held in a tensor (for a future captured graph) gives the same numbers
        assert uniforms(k, torch.tensor(t), draw, torch.float64).tolist() == got64


def test_row_key_is_pinned_and_separates_its_fields():
    # Pinned: every stored trace depends on these numbers; changing them silently changes traces.
    assert row_key(0, "arith-train-00000", 0) == 4576102582898290705
    assert row_key(1, "x", 3) == -4981230295471002296
    assert problem_hash("x") == 2858720872202629029
    assert 0 <= problem_hash("any id") < 2**63
    keys = {row_key(seed, pid, s) for seed in (0, 1, -1) for pid in ("a", "b", "") for s in range(4)}
    assert len(keys) == 3 * 3 * 4


def test_stage_salts_separate_the_streams_of_select_expand_and_eval():
    # The same (seed, problem, sample) in two stages must not draw the same uniforms.
    stages = ["", "select", "expand", "eval", "eval-force"]
    keys = [row_key(0, "arith-train-00000", 0, stage) for stage in stages]
    assert len(set(keys)) == len(stages)
    assert keys[0] == row_key(0, "arith-train-00000", 0)  # no salt: the key of before
    assert keys[2] == 4452412516680341007  # pinned like the unsalted key
    u = uniforms(torch.tensor(keys), 0, 0)
    assert len(set(u.tolist())) == len(stages)


def test_uniforms_are_deterministic_and_independent_of_batch_composition():
    keys = torch.tensor([row_key(0, f"p{i}", i % 4) for i in range(64)])
    full = uniforms(keys, 5, 1)
    perm = torch.randperm(64)
    assert torch.equal(uniforms(keys[perm], 5, 1), full[perm])
    assert torch.equal(uniforms(keys[:3], 5, 1), full[:3])
    assert torch.equal(uniforms(keys, 5, 1), full)


def test_uniforms_look_independent_and_uniform():
    n = 20000
    keys = torch.tensor([row_key(7, f"problem-{i // 8}", i % 8) for i in range(n)])
    u = {(t, d): uniforms(keys, t, d) for t in (0, 1, 2) for d in (0, 1)}
    for x in u.values():
        assert 0.0 <= float(x.min()) and float(x.max()) < 1.0
        assert abs(float(x.mean()) - 0.5) < 0.01
        assert abs(float(x.var()) - 1 / 12) < 0.005
        # Kolmogorov-Smirnov distance to U(0, 1); 1.95 / sqrt(n) is the 0.1% critical value
        xs = x.sort().values
        grid = torch.arange(1, n + 1, dtype=F64) / n
        assert float((xs - grid).abs().max()) < 1.95 / math.sqrt(n)

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    bound = 4 / math.sqrt(n)
    assert abs(corr(u[0, 0], u[0, 1])) < bound  # draws of a step
    assert abs(corr(u[0, 0], u[1, 0])) < bound  # consecutive steps
    assert abs(corr(u[0, 0][:-1], u[0, 0][1:])) < bound  # neighbouring samples / problems
    # float32 uniforms never round up to 1
    assert float(uniforms(keys, 3, 0, torch.float32).max()) < 1.0


# --------------------------------------------------------------------------------------------------
# transforms


def test_temperature_divides_logits():
    logits = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    assert torch.allclose(transform(logits, temperature=0.5), torch.softmax(logits / 0.5, -1))
    assert torch.equal(apply_temperature(logits, 1.0), logits)
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)


def test_top_k_keeps_the_k_largest_and_ties():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]], dtype=F64)
    kept = top_k_filter(logits, 2)
    assert torch.isinf(kept[0, [0, 2, 4]]).all() and torch.equal(kept[0, [1, 3]], logits[0, [1, 3]])
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 5), logits)
    tied = torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=F64)
    assert torch.isfinite(top_k_filter(tied, 2)).tolist() == [True, True, True, False]
    q = transform(logits[0], top_k=2)
    assert torch.allclose(q, torch.tensor([0, math.e**3, 0, math.e**2, 0], dtype=F64) / (math.e**3 + math.e**2))


@pytest.mark.parametrize("p, kept", [(0.5, [1]), (0.51, [1, 0]), (0.8, [1, 0]), (0.81, [1, 0, 2]),
                                     (0.95, [1, 0, 2]), (0.96, [1, 0, 2, 3]), (1.0, [1, 0, 2, 3])])
def test_top_p_keeps_smallest_set_including_the_crossing_token(p, kept):
    probs = torch.tensor([0.3, 0.5, 0.15, 0.05], dtype=F64)
    q = top_p_filter(probs, p)
    assert sorted(torch.nonzero(q).flatten().tolist()) == sorted(kept)
    assert torch.allclose(q[kept], probs[kept] / probs[kept].sum())
    assert math.isclose(float(q.sum()), 1.0)


def test_top_p_keeps_every_token_tied_with_the_last_kept():
    probs = torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=F64)
    assert top_p_filter(probs, 0.5).gt(0).tolist() == [True, True, True, True]
    assert top_p_filter(probs, 0.4).gt(0).tolist() == [True, False, False, False]


def slow_top_p(probs: list[float], p: float) -> set[int]:
    """Tokens whose strictly-more-likely mass is < p, the rule written as a double loop."""
    return {v for v, pv in enumerate(probs) if sum(pu for pu in probs if pu > pv) < p}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=40), st.floats(0.05, 0.99),
       st.integers(1, 8))
def test_top_p_matches_the_rule_with_and_without_the_cpu_head(logits, p, head):
    probs = torch.softmax(torch.tensor(logits, dtype=F64), -1)
    want = slow_top_p(probs.tolist(), p)
    full = top_p_filter(probs[None].repeat(3, 1), p)
    old = engine_mod._TOP_P_HEAD
    engine_mod._TOP_P_HEAD = head  # exercise the head + fallback path on a small vocabulary
    try:
        partial = top_p_filter(probs[None].repeat(3, 1), p)
    finally:
        engine_mod._TOP_P_HEAD = old
    assert set(torch.nonzero(full[0]).flatten().tolist()) == want
    assert torch.allclose(partial, full)
    assert float(probs[sorted(want)].sum()) >= p - 1e-12


def test_transform_applies_temperature_then_top_k_then_top_p():
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64))
    q = transform(logits, temperature=2.0, top_p=0.6, top_k=3)
    # T=2: probs ~ sqrt(p) = [.632, .548, .447, .316]; top-3 renormalised: [.388, .337, .275];
    # top-p 0.6 keeps the first two (mass before the third is 0.725 >= 0.6)
    s = torch.sqrt(torch.tensor([0.4, 0.3], dtype=F64))
    assert torch.allclose(q, torch.cat([s / s.sum(), torch.zeros(2, dtype=F64)]))


# --------------------------------------------------------------------------------------------------
# inverse CDF


def test_inverse_cdf_on_a_grid_reproduces_the_multinomial_exactly():
    probs = torch.tensor([[0.1, 0.0, 0.25, 0.0, 0.65], [0.0, 0.0, 1.0, 0.0, 0.0]], dtype=F64)
    m = 10000
    u = (torch.arange(m, dtype=F64) + 0.5) / m  # [m] evenly spaced uniforms
    for row in probs:
        tokens = inverse_cdf(row.expand(m, -1), u)
        freq = torch.bincount(tokens, minlength=5).to(F64) / m
        assert (freq - row).abs().max() <= 1 / m


def test_inverse_cdf_with_counter_uniforms_matches_the_multinomial():
    probs = torch.softmax(torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=F64), -1)
    n = 20000
    keys = torch.tensor([row_key(0, "chi", i) for i in range(n)])
    tokens = inverse_cdf(probs.expand(n, -1), uniforms(keys, 0, 0))
    observed = torch.bincount(tokens, minlength=12).to(F64)
    expected = probs * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 35.0  # chi-square, 11 degrees of freedom: 0.1% critical value 31.3 (+ slack)


def test_inverse_cdf_never_picks_a_zero_probability_token():
    probs = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0, 0.0], dtype=F64)
    edges = torch.tensor([0.0, 1e-300, 0.3, 1 - 2.0**-53], dtype=F64)
    assert inverse_cdf(probs.expand(4, -1), edges).tolist() == [1, 1, 3, 3]
    unnormalised = torch.tensor([0.0, 3.0, 0.0, 7.0, 0.0], dtype=torch.float32)
    u = torch.tensor([0.0, 0.29, 0.31, 1 - 2.0**-24])
    assert inverse_cdf(unnormalised.expand(4, -1), u).tolist() == [1, 1, 3, 3]


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
    choose = sampler(**SAMPLING)
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
    from dail.expand import mixed_choose

    rows = 2 if mixed else 1
    choose = mixed_choose(**SAMPLING, tau=0.05) if mixed else sampler(**SAMPLING)
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
    monkeypatch.setattr(engine_mod, "_TOP_P_HEAD", 3)
    prompts, keys = prompts_of(5, seed=4), [row_key(1, "h", i) for i in range(5)]
    got = Engine(model, eos_token_ids=EOS).sample(prompts, keys, max_new_tokens=12, top_p=0.9)
    for i, gen in enumerate(got):
        check_equal(gen, reference_sample(model, prompts[i], keys[i], max_new_tokens=12, top_p=0.9,
                                          eos_token_ids=EOS))


def test_generate_checks_its_arguments():
    engine = Engine(tiny_llama(), eos_token_ids=EOS)
    choose = sampler()
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


@pytest.mark.parametrize("weights, temperature, top_p, top_k, want", [
    # logits = log([4, 3, 2, 1]), T = 0.5: probs ~ w^2 = [16, 9, 4, 1] / 30 = [.533, .3, .133, .033].
    # Mass before each token: 0, .533, .833 -> top-p 0.75 keeps 2 tokens: [16, 9] / 25.
    # (Top-p first, on [.4, .3, .2, .1]: mass before 0, .4, .7 -> it would keep 3: [16, 9, 4] / 29.)
    ([4, 3, 2, 1], 0.5, 0.75, 0, [16 / 25, 9 / 25, 0, 0]),
    # logits = log([16, 4, 1, 1]), T = 2: probs ~ sqrt(w) = [4, 2, 1, 1] / 8 = [.5, .25, .125, .125].
    # Mass before each: 0, .5, .75 -> top-p 0.7 keeps 2 tokens: [4, 2] / 6.
    # (Top-p first, on [16, 4, 1, 1] / 22 = [.727, ...]: the first token alone crosses 0.7: [1, 0, 0, 0].)
    ([16, 4, 1, 1], 2.0, 0.7, 0, [2 / 3, 1 / 3, 0, 0]),
    # logits = log([8, 6, 4, 2, 1]), T = 0.5, top-k 4: probs ~ [64, 36, 16, 4] / 120 = [.533, .3, .133, .033].
    # Mass before each: 0, .533, .833 -> top-p 0.75 keeps 2 tokens: [64, 36] / 100.
    # (Top-k and top-p first, on [8, 6, 4, 2] / 20 = [.4, .3, .2, .1]: 3 kept: [64, 36, 16] / 116.)
    ([8, 6, 4, 2, 1], 0.5, 0.75, 4, [64 / 100, 36 / 100, 0, 0, 0]),
])
def test_temperature_is_applied_before_top_p_decides_the_kept_set(weights, temperature, top_p, top_k, want):
    """Temperature first: the nucleus is taken on the tempered distribution, so T changes which
    tokens top-p keeps (here 2 kept, where the untempered distribution would keep 3, or 1).
    Expected probabilities are the hand-computed fractions of the derivation beside each case."""
    logits = torch.log(torch.tensor(weights, dtype=F64))
    q = transform(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    torch.testing.assert_close(q, torch.tensor(want, dtype=F64), rtol=0, atol=1e-12)
    # the same in a batch of rows ([G, R, V], as the mixed rollout calls it)
    batch = transform(logits.expand(2, 3, -1), temperature=temperature, top_p=top_p, top_k=top_k)
    torch.testing.assert_close(batch, torch.tensor(want, dtype=F64).expand(2, 3, -1), rtol=0, atol=1e-12)
