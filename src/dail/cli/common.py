"""What every command shares: the typer apps, the error console, the `--config` option, one-line
user errors, and loading a stage's config before any work."""

from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..config import PRESETS, ConfigError, load_config
from ..data import DataError

__all__ = ["app", "data_app", "testbed_app", "console", "ConfigOpt", "ModelOpt", "DataOpt", "OutOpt", "OutDirOpt",
           "SeedOpt", "DeviceOpt", "DtypeOpt", "BatchSizeOpt", "FreshOpt", "LimitOpt", "fail", "user_errors",
           "stage_config", "find_demo_config"]

app = typer.Typer(
    name="dail",
    help="DAIL: expand expert solutions into in-distribution traces, train with a contrastive objective, measure pass@k.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Problem files: validate, generate, and import from the Hugging Face Hub.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The test-bed: a model trained from scratch and splits where the method's premise holds.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config, or a preset by name; flags "
                                                   "override it.")]

# One vocabulary for every command: an option of the same meaning has the same name, type and help
# wherever it appears (tests/test_cli.py reads every command's options to hold this). What a command
# writes or reads beyond that is said in its own description.
ModelOpt = Annotated[Optional[str], typer.Option(help="Model: Hugging Face id, local directory, or an alias "
                                                      "(smollm2-135m, testbed).")]
DataOpt = Annotated[Optional[str], typer.Option(help="Problems: a JSONL file, a bundled split or a known set by name.")]
OutOpt = Annotated[Optional[Path], typer.Option(help="Where the command writes (a file or a directory: see above).")]
OutDirOpt = Annotated[Optional[str], typer.Option(help="Parent directory of the run (or study) directories.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed of every random draw.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N, or auto (cuda when present).")]
DtypeOpt = Annotated[Optional[str], typer.Option(help="Weights dtype: auto (bf16 on a GPU that has it, else float32), "
                                                      "float32, bfloat16, float16 or float64.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(min=1, help="Rows per batch: samples decoded together, or rows "
                                                                 "per optimizer step in training.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Delete what an earlier run of this command wrote to its "
                                                        "output first, instead of resuming it.")]
LimitOpt = Annotated[Optional[int], typer.Option(min=1, help="Use only the first N problems.")]


def fail(message: str) -> None:
    """Print `message` as one error line (the first process of each machine in a launch) and exit with code 1."""
    # Every rank of an `accelerate launch` checks the same inputs and refuses them alike: one line per
    # machine, not per process, and a machine-specific refusal (its cache, its device) is still shown.
    # Read from the launcher's LOCAL_RANK: a refused config has not joined a process group.
    if os.environ.get("LOCAL_RANK", "0") == "0":
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def user_errors(*outputs: str | Path):
    """Turn the errors a user can fix into one line and exit code 1.

    `outputs`: directories a failed command must not leave behind; those it created and left empty
    (a lock's folder, an eval directory the model never reached) are removed again.
    """
    from ..models import ModelNotFoundError

    # Every folder of the outputs' paths that is not there yet, deepest first.
    missing = sorted({f for p in outputs for f in (Path(p), *Path(p).parents) if _absent(f)},
                     key=lambda f: len(f.parts), reverse=True)
    try:
        yield
    except (DataError, ConfigError, ModelNotFoundError, OSError) as e:
        for folder in missing:
            with contextlib.suppress(OSError):  # not empty: it holds something worth keeping
                folder.rmdir()
        if isinstance(e, OSError) and not isinstance(e, (DataError, ConfigError)):
            # a file the checks could not foresee (permissions, a full disk)
            fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        fail(str(e))


def _absent(path: Path) -> bool:
    try:
        return not path.exists()
    except OSError:  # a name the system refuses (too long): nothing was made there, the command says why
        return False


def stage_config(cls, path: Path | None, overrides: dict[str, Any]):
    """The stage's config from its file and flags; the stage itself checks its device and output (`dail.stage`)."""
    with user_errors():
        return load_config(cls, path, overrides)


def find_demo_config() -> Path | None:
    """The demo preset shipped in the package (configs/demo.toml of a checkout), or None."""
    path = PRESETS / "demo.toml"
    return path if path.is_file() else None  # None only for a broken install
