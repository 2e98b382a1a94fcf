"""The base of every config class, the configuration error, and the device check."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "StrictConfig", "DEFAULT_MODEL", "check_device", "require_device"]

# The model a stage loads when none is named: the embedded SmolLM2-135M (dail.models resolves the alias).
DEFAULT_MODEL = "smollm2-135m"


class ConfigError(ValueError):
    """A configuration defect, naming the file and the key."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# The base of every config: unknown keys are errors, assignments are validated. Public for the
# configs that live beside their commands (dail.study, dail.testbed.build).
StrictConfig = _Config


def check_device(device: str) -> str:
    """`device` if it is auto, cpu, cuda or cuda:N; else ValueError. Presence is `require_device`'s job."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {device!r}")
    return device


def require_device(device: str) -> None:
    """ConfigError unless `device` exists on this machine; called before a model loads.

    Not a validator: a config written for a GPU machine still loads (and is checked) on a laptop.
    """
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(device.partition(":")[2] or 0) >= count:
            raise ConfigError(f"key 'device': {device!r} asked for, but this machine has {count} CUDA device(s)")
