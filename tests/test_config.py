"""Typed configs: TOML + flag overrides, unknown keys and bad values named by key."""

from __future__ import annotations

import pytest

from dail.config import ConfigError, EvalConfig, ExpandConfig, PromptConfig, TrainConfig, load_config, save_config


def test_toml_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "arith-train"\nout = "t.jsonl"\nn = 8\n[sampling]\ntop_p = 0.9\n')
    cfg = load_config(ExpandConfig, path, {"n": 2, "sampling.temperature": 0.7, "tau": None})
    assert (cfg.n, cfg.sampling.top_p, cfg.sampling.temperature, cfg.tau) == (2, 0.9, 0.7, 0.0)


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
