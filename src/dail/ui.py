"""What the `dail` command draws: progress bars, the stages' summaries, the run's results table.

The CLI layer. Stages compute and return data (and report progress through a callback); this
module turns that into rich output on stderr, on rank 0 only. Nothing here computes a result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

__all__ = ["console", "progress", "expand_summary", "eval_summary", "run_table", "four_traces", "RunEvents",
           "Countdown", "announce", "progress_line", "clock"]

console = Console(stderr=True)


def _main() -> bool:
    # Imported late: dail.distributed imports torch when asked for the process state.
    from . import distributed as dist

    return dist.is_main()


@contextmanager
def progress(label: str) -> Iterator[Any]:
    """A progress bar for one stage; yields the `progress(done, total)` callback the stage calls."""
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not _main()) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int, **_: Any) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def expand_summary(summary: dict[str, Any]) -> Table:
    """The summary `dail.expand.run` returns, as a table."""
    rows: list[tuple[str, Any]] = [("traces", summary["traces"]), ("kept", summary["kept"])]
    rows += [(f"rejected: {reason}", count) for reason, count in summary["rejected"].items()]
    if summary.get("too_long"):
        rows.append(("skipped (too long for the context)", summary["too_long"]))
    rows += [("mean tokens", f"{summary['mean_tokens']:.1f}"),
             ("privileged share", f"{summary['privileged_share']:.1%}"),
             ("new traces (this run)", summary["new_traces"])]
    if summary["new_tokens"]:
        rows += [("acceptance (this run)", f"{summary['acceptance_rate']:.1%}"),
                 ("learner proposals per token", f"{summary['mean_proposals']:.2f}"),
                 ("tokens/s (this run)", f"{summary['tokens_per_s']:.1f}")]
    return _table(f"expand -> {summary['out']}", rows)


def eval_summary(metrics: dict[str, Any]) -> Table:
    """The metrics `dail.evaluate.run` returns, as a table."""
    what = metrics["model"] + (f" + {metrics['adapter']}" if metrics["adapter"] else "")
    rows: list[tuple[str, Any]] = [("problems × samples", f"{metrics['n_problems']} × {metrics['n_per_problem']}")]
    if metrics["n_skipped_unverifiable"]:
        rows.append(("skipped (no answer)", metrics["n_skipped_unverifiable"]))
    if metrics.get("n_too_long"):
        rows.append(("skipped (too long for the context)", metrics["n_too_long"]))
    rows += [(f"pass@{k}", f"{100 * v:.1f}%") for k, v in metrics["pass_at_k"].items()]
    rows.append(("accuracy", f"{100 * metrics['accuracy']:.1f}%"))
    rows.append(("mean tokens", f"{metrics['mean_tokens']:.1f}"))
    mtc = metrics["mean_tokens_correct"]
    rows.append(("mean tokens (correct)", "–" if mtc is None else f"{mtc:.1f}"))
    rows.append(("with an answer / forced / truncated",
                 f"{100 * metrics['answer_rate']:.1f}% / {100 * metrics['forced_rate']:.1f}% / "
                 f"{100 * metrics['truncated_rate']:.1f}%"))
    at_budget = metrics["accuracy_at_budget"]
    rows.append(("pass@1 at budget", "  ".join(f"{b}: {100 * v:.1f}%" for b, v in at_budget.items())))
    return _table(f"eval: {what} on {metrics['data']}", rows)


def four_traces(traces: dict[str, Any], tokenizer=None) -> Group:
    """One problem's expert solution and its privileged-only, mixed and negative-reference rollouts, side by side.

    In the mixed trace the privileged student's tokens are highlighted (needs the tokenizer to cut pieces).
    """
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.text import Text

    def body(key: str) -> Text:
        trace = traces[key]
        if key != "mixed" or tokenizer is None:
            return Text(trace["text"])
        from .grading import token_pieces

        text = Text()
        for piece, source in zip(token_pieces(tokenizer, trace["token_ids"]), trace["source"]):
            text.append(piece, style="bold black on yellow" if source == "P" else "")
        return text

    panels = [Panel(Text(traces["expert"]), title="expert solution", width=38)]
    for key, title in (("privileged_only", "privileged only (psd)"), ("mixed", "mixed (dail; privileged tokens marked)"),
                       ("negative", "negative reference")):
        if key in traces:
            verdict = traces[key]["reject_reason"] or "correct"
            panels.append(Panel(body(key), title=title, subtitle=verdict, width=38))
    return Group(Text("One training problem, four ways (sample 0):", style="bold"), Text(traces["problem"], style="dim"),
                 Columns(panels))


def run_table(name: str, results: dict[str, dict[str, Any]]) -> Table:
    """pass@k and mean tokens per method and split (`dail.results.results_table`), methods in config order."""
    # No rules and k alone as the header: seven k's, method, split and tokens fit 80 columns.
    table = Table(title=f"{name}: pass@k at each k, mean tokens", box=None, padding=(0, 1, 0, 0),
                  title_justify="left")
    table.add_column("method", no_wrap=True)
    table.add_column("split", no_wrap=True)
    ks: list[str] = []
    for method, splits in results.items():
        for split, row in splits.items():
            if not ks:
                ks = list(row["pass_at_k"])
                for k in ks:
                    table.add_column(f"k={k}", justify="right", min_width=5, no_wrap=True)
                table.add_column("tokens", justify="right", no_wrap=True)
            table.add_row(method, split, *(f"{row['pass_at_k'].get(k, float('nan')):.3f}" for k in ks),
                          f"{row['mean_tokens']:.0f}")
    return table


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(unit: str, k: int, n: int, name: str, elapsed: float, timed: Sequence[float]) -> str:
    """`[stage 7/31] train:dail · elapsed 4:12 · est. left ~9:30` as step k of n starts."""
    line = f"[{unit} {k}/{n}] {name} · elapsed {clock(elapsed)}"
    if timed:  # a rough guess: the steps differ, and those timed so far stand for all that are left
        line += f" · est. left ~{clock(statistics.fmean(timed) * (n - k + 1))}"
    return line


def announce(line: str) -> None:
    """A rule, then `line` in bold: where a stage or a run starts."""
    console.rule()
    console.print(Text(line, style="bold"))


class Countdown:
    """Where a sequence of n steps stands (a run's stages, a study's runs): step k of n, elapsed, an estimate.

    The estimate is the mean time of the steps that did work times the steps left, this one included;
    a step found complete and skipped counts as done but not in the mean.
    """

    def __init__(self, unit: str, n: int):
        self.unit, self.n, self.k, self.timed, self.started = unit, n, 0, [], time.monotonic()

    def begin(self, name: str) -> str:
        """The line for the next step, which starts now."""
        self.k += 1
        return progress_line(self.unit, self.k, self.n, name, time.monotonic() - self.started, self.timed)

    def skip(self, name: str) -> str:
        """The line for the next step, found complete."""
        self.k += 1
        return f"[{self.unit} {self.k}/{self.n}] {name}: complete, skipped"

    def took(self, seconds: float) -> None:
        """The step begun last did work for `seconds`."""
        self.timed.append(seconds)


class RunEvents:
    """The `on_event` of `dail.pipeline.run`: a rule per stage, a line per skip, a bar while one samples.

    Given the run's `plan` (`dail.pipeline.plan`), each stage's line says which of how many it is, with
    the time so far and a rough estimate of the time left.
    """

    def __init__(self, plan: Sequence[str] | None = None):
        self._bar = None
        self._countdown = Countdown("stage", len(plan)) if plan is not None else None
        self.worked = False  # whether any stage ran rather than being skipped

    def progress(self, done: int, total: int, **fields: Any) -> None:
        """The progress callback the pipeline hands its sampling stages."""
        if self._bar is not None:
            self._bar(done, total, **fields)

    def __call__(self, stage: str, event: str, fields: dict[str, Any]) -> None:
        if event == "skip":
            line = self._countdown.skip(stage) if self._countdown else f"{stage}: complete, skipped"
            console.print(Text(line, style="dim"))
        elif event == "start":
            self.worked = True
            if self._countdown:
                announce(self._countdown.begin(stage))
            else:
                console.rule(f"[bold]{stage}")
            self._open = progress(stage)
            self._bar = self._open.__enter__()
        elif event == "end":
            if self._countdown:
                self._countdown.took(fields["seconds"])
            self._close()
        elif event == "result" and stage.startswith("expand"):
            console.print(expand_summary(fields["value"]))
        elif event == "result" and stage.startswith("eval"):
            console.print(eval_summary(fields["value"]))
        elif event == "revision":
            console.print(Text(f"data {fields['spec']}: {fields['revision']}", style="dim"))
        elif event == "selected":
            console.print(f"select: kept {fields['selected']} of {fields['candidates']} problems "
                          f"({fields['unverifiable']} without an answer to check pass through)")

    def close(self) -> None:
        """Close a stage's bar left open (the stage failed)."""
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._open.__exit__(None, None, None)
            self._bar = None
