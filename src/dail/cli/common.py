"""What every command shares: the typer apps, the error console, the `--config` option, one-line
user errors, and loading a stage's config before any work."""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console

from ..config import ConfigError, load_config
from ..data import DataError

__all__ = ["app", "data_app", "testbed_app", "console", "ConfigOpt", "fail", "user_errors", "stage_config",
           "find_demo_config"]

app = typer.Typer(
    name="dail",
    help="DAIL: expand expert solutions into in-distribution traces, train with a contrastive objective, measure pass@k.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Problem files: validate and generate.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The test-bed: a model trained from scratch and splits where the method's premise holds.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config; flags override it.")]


def fail(message: str) -> None:
    """Print `message` as one error line and exit with code 1."""
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
    missing = sorted({f for p in outputs for f in (Path(p), *Path(p).parents) if not f.exists()},
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


def stage_config(cls, path: Path | None, overrides: dict[str, Any], out: Literal["file", "dir"] | None = None):
    """The stage's config, its device present and its output writable: checked before any work."""
    from ..config import require_device
    from ..data import check_output

    with user_errors():
        cfg = load_config(cls, path, overrides)
        if hasattr(cfg, "device"):
            require_device(cfg.device)
        if out is not None:
            check_output(cfg.out, out)
        return cfg


def find_demo_config() -> Path | None:
    """configs/demo.toml of the checkout (the working directory's, else the one beside src/), or None."""
    # configs/ lives in the checkout; an editable install finds it beside src/.
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / "configs" / "demo.toml").exists():
            return base / "configs" / "demo.toml"
    return None
