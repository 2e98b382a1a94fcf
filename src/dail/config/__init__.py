"""Typed configuration of every stage (pydantic), loaded from TOML and overridden by flags.

One config class per stage; every field carries its help text, and validation names the key and
the allowed range. Unknown keys are errors that name the key (a misspelt `tua` must not silently
become the default `tau`). The resolved config is saved beside every output (`save_config`).
This package reads no data and loads no model.

The classes live in `base` (the strict base, the error, the device check), `stages` (one config per
stage), `rl` (`dail rl`'s), `files` (TOML in and out, comparing a saved config) and `run` (`dail run`'s config); this
package is their one public face.
"""

from __future__ import annotations

from .base import DEFAULT_MODEL, ConfigError, StrictConfig, check_device, require_device
from .files import (PRESETS, check_same_settings, load_config, preset_names, resolve_config, save_config,
                    settings_changes, to_toml)
from .rl import HintConfig, RLConfig, RLSampling
from .run import EvalSection, EvalSplit, ExpandSection, HintSection, RLSection, RunConfig, TrainSection, section_values
from .stages import (EvalConfig, EvalSampling, ExpandConfig, ExpandSampling, LoraSettings, PromptConfig, SamplingConfig,
                     SelectConfig, TrainConfig, WaypointsConfig)

__all__ = ["ConfigError", "StrictConfig", "DEFAULT_MODEL", "check_device", "require_device", "SamplingConfig",
           "ExpandSampling", "EvalSampling", "PromptConfig", "LoraSettings", "ExpandConfig", "TrainConfig",
           "EvalConfig", "SelectConfig", "WaypointsConfig", "RLConfig", "RLSampling", "HintConfig", "RunConfig", "EvalSplit", "ExpandSection", "TrainSection",
           "EvalSection", "RLSection", "HintSection", "section_values", "load_config", "save_config", "to_toml", "settings_changes",
           "check_same_settings", "PRESETS", "preset_names", "resolve_config"]
