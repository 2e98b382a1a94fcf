"""The `dail` command: one subcommand per stage, each a thin shell over the stage's `run(config)`.

Flags override the `--config` TOML; flags left unset keep the file's values (or the defaults).
Errors a user can fix (bad data, bad config, a model that is not there) are printed as one line
and exit with code 1 -- never a traceback. Heavy imports (torch, transformers) happen inside the
commands, so `dail --help` is instant.

The package: `common` (the typer apps, the `--config` option, one-line errors, loading a config),
`stages` (one command per stage), `rl` (`dail rl`, `dail hints`), `runs` (`run`, `study`, `demo`), `groups` (`dail data`,
`dail testbed`).
"""

from __future__ import annotations

# Importing a module registers its commands, and --help lists them in that order: keep stages before runs.
from . import stages, rl, runs, groups  # noqa: F401
from .common import app
from .groups import _probe_expand  # noqa: F401 -- the shipped test-bed's tests read the probe's settings here

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `dail` script."""
    import warnings

    # peft reads a property transformers has deprecated: a warning no user of dail can act on
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    app()
