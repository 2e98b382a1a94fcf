"""Typed configs: TOML + flag overrides, unknown keys and bad values named by key."""

from __future__ import annotations

import tomllib

import pytest

from dail.config import (PRESETS, ConfigError, EvalConfig, ExpandConfig, PromptConfig, RunConfig, TrainConfig,
                         load_config, section_values,
                         save_config)


def test_toml_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "arith-train"\nout = "t.jsonl"\nn = 8\n[sampling]\ntop_p = 0.9\n')
    cfg = load_config(ExpandConfig, path, {"n": 2, "sampling.temperature": 0.7, "tau": None})
    assert (cfg.n, cfg.sampling.top_p, cfg.sampling.temperature, cfg.tau) == (2, 0.9, 0.7, 0.8)
    assert (cfg.sampling.top_k, cfg.sampling.max_new_tokens) == (20, 2048)  # a partial table keeps expand's defaults


def test_an_error_names_the_flag_that_set_the_bad_value_not_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "arith-train"\nout = "t.jsonl"\nn = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(ExpandConfig, path, {"device": "tpu", "n": None})
    lines = str(err.value).splitlines()
    assert sorted(lines) == sorted([f"{path}: key 'n': Input should be greater than or equal to 1",
                                    "flags: key 'device': must be auto, cpu, cuda or cuda:N; got 'tpu'"])


@pytest.mark.parametrize(
    "text, words",
    [
        ('data = "x"\nout = "y"\ntua = 0.5\n', "unknown key 'tua'"),
        ('data = "x"\nout = "y"\n[sampling]\ntopp = 0.5\n', "unknown key 'sampling.topp'"),
        ('out = "y"\n', "missing required key 'data'"),
        ('data = "x"\nout = "y"\n[sampling]\ntop_p = 1.5\n', "key 'sampling.top_p'"),
        ('data = "x"\nout = "y"\nn = 0\n', "key 'n'"),
        ('data = "x"\nout = [\n', "invalid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(ExpandConfig, path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_range_checks():
    with pytest.raises(ConfigError, match="gamma"):
        load_config(TrainConfig, None, {"problems": "p", "out": "o", "gamma": 1.0})
    with pytest.raises(ConfigError, match=r"k must be in \[1, n=4\]"):
        load_config(EvalConfig, None, {"data": "d", "out": "o", "n": 4, "k": [1, 8]})
    with pytest.raises(ConfigError, match="prompts.learner must not contain"):
        load_config(ExpandConfig, None, {"data": "d", "out": "o", "prompts.learner": "{problem} {solution}"})
    with pytest.raises(ConfigError, match=r"prompts.privileged must contain \{solution\}"):
        load_config(ExpandConfig, None, {"data": "d", "out": "o", "prompts.privileged": "{problem}"})


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(TrainConfig, None, {"problems": "p", "out": "o", "lora.target_modules": ["q_proj"], "lr": 3e-5,
                                           "prompts.system": 'Say "hi"\n\\boxed{}'})
    save_config(cfg, tmp_path / "saved.toml")
    assert load_config(TrainConfig, tmp_path / "saved.toml") == cfg


def test_every_field_is_documented():
    def walk(cls):
        for name, field in cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                yield from walk(ann)
            else:
                yield cls.__name__, name, field.description

    for cls in (ExpandConfig, TrainConfig, EvalConfig, PromptConfig):
        missing = [f"{c}.{n}" for c, n, d in walk(cls) if not d]
        assert not missing, missing


CONFIGS = PRESETS  # the package's presets; the checkout's configs/ links here


def test_every_preset_validates_and_opens_with_its_command():
    from dail.study import StudyConfig

    presets = sorted(CONFIGS.glob("*.toml"))
    assert {p.name for p in presets} >= {"demo.toml", "smollm2-arith.toml", "testbed-study.toml",
                                         "paper-qwen2.5-7b.toml", "paper-qwen3-8b.toml"}
    for path in presets:
        study = "seeds" in tomllib.loads(path.read_text())
        load_config(StudyConfig if study else RunConfig, path)
        command = "dail study" if study else "dail run"
        assert path.read_text().startswith(f"# {command} --config configs/{path.name}") or path.name == "demo.toml"


@pytest.mark.parametrize("name, tau, n, tokens, keep, epochs, budgets", [
    ("paper-qwen2.5-7b", 0.8, 32, 2048, "first-correct", 5, [1024, 2048, 4096]),
    ("paper-qwen3-8b", 1.0, 32, 256, "one-random", 3, [512, 1024, 2048, 4096]),
])
def test_paper_presets_hold_the_authors_values(name, tau, n, tokens, keep, epochs, budgets):
    """The numbers of the authors' two settings (ethanm88/DAIL conf/*.yaml, dail_train.py, eval.py)."""
    run = load_config(RunConfig, CONFIGS / f"{name}.toml")
    common = {"model": run.model, "seed": run.seed, "device": run.device, "dtype": run.dtype}
    ex = ExpandConfig(**section_values(run.expand), **common, data="-", out="-")
    assert (ex.rule, ex.tau, ex.retries, ex.n, ex.sampling.max_new_tokens, ex.keep) == ("threshold", tau, 5, n, tokens, keep)
    assert (ex.sampling.temperature, ex.sampling.top_p, ex.sampling.top_k) == (1.0, 1.0, 20)
    tr = TrainConfig(**section_values(run.train), **common, problems="-", out="-")
    assert (tr.gamma, tr.lr, tr.weight_decay, tr.schedule, tr.warmup_steps, tr.epochs, tr.batch_size) == \
        (0.1, 2e-4, 0.01, "linear", 5, epochs, 16)
    assert (tr.lora.r, tr.lora.alpha, tr.lora.dropout, len(tr.lora.target_modules)) == (32, 32, 0.0, 7)
    ev = EvalConfig(**section_values(run.eval), **common, data="-", out="-")
    assert (ev.n, ev.sampling.temperature, ev.sampling.top_p, ev.presence_penalty, ev.force_answer,
            ev.force_answer_tokens) == (128, 0.6, 0.95, 1.5, True, 100)
    # The authors' budgets come first; ours run on to 16384 tokens (the long end, README "The paper's data").
    assert max(ev.k) == 128 and (budgets is None or ev.budgets[: len(budgets)] == budgets)
    assert ev.sampling.max_new_tokens == 16384 and max(ev.budgets) == 16384


def test_run_sections_are_typed_and_name_a_bad_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "x"\ntrain_data = "a"\neval_data = ["b"]\n[expand]\ntua = 0.5\n[eval]\nn = 2\nk = [4]\n')
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path)
    assert "unknown key 'expand.tua'" in str(info.value)
    path.write_text('name = "x"\ntrain_data = "a"\neval_data = ["b"]\n[expand]\nn = 3\n[expand.sampling]\n'
                    'max_new_tokens = 9\n[eval]\nn = 2\nk = [4]\n')
    with pytest.raises(ConfigError, match=r"\[eval\] k must be in \[1, n=2\]"):
        load_config(RunConfig, path)
    path.write_text('name = "x"\ntrain_data = "a"\neval_data = ["b"]\n[expand]\nn = 3\n[expand.sampling]\nmax_new_tokens = 9\n')
    run = load_config(RunConfig, path)
    assert (run.expand.n, run.expand.sampling.max_new_tokens, run.expand.sampling.top_k) == (3, 9, 20)
    assert section_values(run.expand) == {"n": 3, "sampling": {"max_new_tokens": 9}}  # the stage's defaults stand
