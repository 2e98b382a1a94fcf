"""Provenance of traces and adapters: which model, tokenizer and prompts made them, in a sidecar file.

`record(model_spec, model, tokenizer, prompts)` is a small JSON-able dict:

    {"model": {"spec": "...", "fingerprint": "..."},          # weights_fingerprint
     "tokenizer": {"vocab_size": len(tokenizer), "hash": "..."},  # tokenizer_hash
     "prompts": {...}}                                          # the PromptConfig that rendered them

`expand` writes it beside its traces (`X.jsonl` -> `X.provenance.json`, `dail.rundir.provenance_path`)
and `train` in its adapter directory (`provenance.json`). `train` refuses traces whose record names
other weights or another tokenizer (`check_same_model`), `eval --adapter` an adapter made for
another base (`dail.models.load`), and a resumed expand or eval rows made by another model. A file
without a record is refused the same way (`require`): nothing then says which model made it, and
accepting it would let exactly the mix-up the record exists to catch through. The way out is to make
it again (`--fresh`, or rerunning the stage that writes it), which records it.

The weights fingerprint is cheap, not cryptographic proof: blake2b over the architecture config
(minus fields that change with how the model was loaded: dtype, path, versions, use_cache), every
parameter's name and shape, and its first and last `SAMPLE` elements rounded to bfloat16 -- so the
same weights loaded in float32 or bfloat16 agree, and a 7B model hashes in well under a second
(a few KB per tensor). This module knows nothing of stages; it does no I/O beyond the sidecar.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .config import ConfigError
from .data import atomic_write_text

__all__ = ["SAMPLE", "ProvenanceError", "weights_fingerprint", "tokenizer_hash", "record", "write", "read",
           "require", "differences", "describe", "check_same_model"]

SAMPLE = 1024  # elements hashed from each end of every parameter

# Config keys that depend on how (not what) a model was loaded.
_VOLATILE = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache", "_commit_hash"}


class ProvenanceError(ConfigError):
    """Inputs made by another model or tokenizer than the one a stage loads; the message names both."""


def _config_dict(config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _VOLATILE and not k.startswith("_")}


def weights_fingerprint(model) -> str:
    """A stable hash of a model's weights: config, parameter names and shapes, a sample of each tensor."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(_config_dict(model.config), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(f"{name}:{tuple(p.shape)};".encode())
            flat = p.detach().reshape(-1)
            part = flat if flat.numel() <= 2 * SAMPLE else torch.cat([flat[:SAMPLE], flat[-SAMPLE:]])
            # bfloat16: the same weights loaded in float32 or bfloat16 give the same bytes.
            h.update(part.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """A hash of a tokenizer's vocabulary (token -> id, sorted) and its special tokens."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items()}
    h.update(json.dumps(specials, sort_keys=True).encode())
    return h.hexdigest()


def record(model_spec: str, model, tokenizer, prompts: Any = None) -> dict[str, Any]:
    """The provenance of what `model` (loaded from `model_spec`) and `tokenizer` make with `prompts`."""
    if hasattr(prompts, "model_dump"):
        prompts = prompts.model_dump(mode="json")
    return {"model": {"spec": str(model_spec), "fingerprint": weights_fingerprint(model)},
            "tokenizer": {"vocab_size": len(tokenizer), "hash": tokenizer_hash(tokenizer)},
            "prompts": prompts}


def write(path: str | Path, rec: dict[str, Any]) -> None:
    """Write a record (atomically)."""
    atomic_write_text(path, json.dumps(rec, indent=1) + "\n")


def read(path: str | Path) -> dict[str, Any] | None:
    """The record at `path`; None when there is none. A broken one is an error."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec["model"]["fingerprint"], rec["tokenizer"]["hash"]  # noqa: B018 - the fields a comparison reads
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ProvenanceError(f"{path}: not a provenance record ({type(e).__name__}: {e})") from None
    return rec


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records: 'weights', 'tokenizer' (the prompts do not count)."""
    diff = []
    if old["model"]["fingerprint"] != new["model"]["fingerprint"]:
        diff.append("weights")
    if (old["tokenizer"]["hash"], old["tokenizer"].get("vocab_size")) != \
            (new["tokenizer"]["hash"], new["tokenizer"].get("vocab_size")):
        diff.append("tokenizer")
    return diff


def describe(rec: dict[str, Any]) -> str:
    """'model M (weights abcd1234, vocabulary 49152)' for messages."""
    return (f"model {rec['model']['spec']!r} (weights {rec['model']['fingerprint'][:12]}, "
            f"vocabulary {rec['tokenizer'].get('vocab_size')})")


def require(sidecar: str | Path, path: str | Path, what: str, remedy: str) -> dict[str, Any]:
    """The record at `sidecar` of `what` at `path`; ProvenanceError naming the way out (`remedy`) when there is none."""
    rec = read(sidecar)
    if rec is None:
        raise ProvenanceError(f"{path}: {what} without a provenance record ({sidecar} is missing), so nothing says "
                              f"which model made them; {remedy}")
    return rec


def check_same_model(path: str | Path, made_by: dict[str, Any], loaded: dict[str, Any], what: str,
                     remedy: str) -> None:
    """Refuse `what` at `path` when its record `made_by` names other weights or another tokenizer than `loaded`."""
    diff = differences(made_by, loaded)
    if diff:
        raise ProvenanceError(f"{path}: {what} made by {describe(made_by)}, but this run loads {describe(loaded)} "
                              f"(different {' and '.join(diff)}); {remedy}")
