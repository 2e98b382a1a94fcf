"""`dail study`: one comparison run per seed, DAIL's tau / gamma sweeps, and the mean and spread across seeds.

A study config is a run config (`[run]`, every key of `dail run` but name, out_dir and seed) with the
seeds and sweeps around it:

    name = "testbed-study"
    seeds = [0, 1, 2]
    sweep_data = "testbed-val"      # the sweeps are scored here, never on the test split
    tau = [0.0, 0.5, 0.8, 1.0]      # expand.tau of `dail`, gamma held at the run's value
    gamma = [0.0, 0.1, 0.5]         # train.gamma of `dail`, tau held at the run's value
    lr = [1e-4, 3e-4, 1e-3]         # train.lr of every trained method (a size chosen on validation)
    [run]
    model = "testbed"
    ...

Per seed, `OUT/NAME/seed-S` is an ordinary `dail run` (every method on every eval split); each
sweep point other than the run's own setting is a run of its own (`seed-S-tau-0.5`): of `dail`
alone for tau and gamma, of every trained method for lr, evaluated on `sweep_data` only. A sweep
point starts from a copy of what the seed's run sampled that it would sample alike (selection,
waypoints, traces, NuRL's hints: `dail.pipeline.share_sampled`), so a gamma or lr point only
trains and evaluates. Each is resumable like any run, so a killed study picks up where it stopped. Outputs: `study.json` (every seed's
numbers, their mean and standard deviation), `study.md`, and `plots/` (pass@k with the spread
across seeds, the token-budget curves, the sweeps).
"""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from .config import RunConfig, StrictConfig
from .data import atomic_write_text
from .pipeline import run_dir, share_sampled

__all__ = ["StudyConfig", "Comparison", "run", "plan", "aggregate", "markdown", "compare", "comparisons_table", "fill_readme"]


class Comparison(StrictConfig):
    """One pre-registered paired comparison: `a` minus `b` on `metric`, over the problems of `split`."""

    a: str = Field(..., description="A method of the run, or a sweep point ('dail tau=0.5').")
    b: str = Field(..., description="The method it is compared against.")
    metric: str = Field(..., description="pass@K, or tokens (mean length of a problem's correct samples).")
    split: str = Field(..., description="The eval split's name in the run.")

    @model_validator(mode="after")
    def _metric(self) -> Comparison:
        from .stats import parse_metric

        parse_metric(self.metric)
        return self

    @property
    def label(self) -> str:
        """How tables name it."""
        return f"{self.a} − {self.b}, {self.metric}, {self.split}"


class StudyConfig(StrictConfig):
    """`dail study`: seeds and sweeps around one run config."""

    name: str = Field(..., description="Study name: the output goes to OUT_DIR/NAME.")
    out_dir: str = Field("runs", description="Parent directory of studies.")
    seeds: list[int] = Field(..., min_length=1, description="One full run per seed; the table gives mean and spread.")
    sweep_data: str | None = Field(None, description="Split the sweeps are scored on (one of run.eval_data).")
    tau: list[float] = Field(default_factory=list, description="expand.tau values of `dail` to sweep.")
    gamma: list[float] = Field(default_factory=list, description="train.gamma values of `dail` to sweep.")
    lr: list[float] = Field(default_factory=list, description="train.lr values to sweep, every trained method at each.")
    rl_lr: list[float] = Field(default_factory=list, description="rl.lr values to sweep, every RL method (grpo, nurl, "
                                                                 "rlvr) at each.")
    sweep_seeds: list[int] | None = Field(None, description="The seeds whose runs the sweeps accompany (default: all).")
    run: dict[str, Any] = Field(..., description="The run config of every seed (all `dail run` keys but name, "
                                                 "out_dir, seed).")
    comparisons: list[Comparison] = Field(default_factory=list, description="Paired comparisons, written down before "
                                          "the study runs: each a mean difference over problems with a bootstrap CI.")
    resamples: int = Field(10_000, ge=100, description="Bootstrap resamples of each comparison.")

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        own = {"name", "out_dir", "seed"} & set(self.run)
        if own:
            raise ValueError(f"run.{sorted(own)[0]} is set by the study, not in [run]")
        cfg = self.run_config(self.seeds[0])  # every key checked once, with the run's own messages
        if (self.tau or self.gamma or self.lr or self.rl_lr) and self.sweep_split(cfg) is None:
            raise ValueError(f"sweep_data {self.sweep_data!r} must name one of run.eval_data "
                             f"{[s.label for s in cfg.eval_splits()]}")
        if (self.tau or self.gamma) and "dail" not in cfg.methods:
            raise ValueError("the sweeps vary dail: run.methods must include 'dail'")
        if self.sweep_seeds is not None and not set(self.sweep_seeds) <= set(self.seeds):
            raise ValueError(f"sweep_seeds {self.sweep_seeds} must be among seeds {self.seeds}")
        known = set(cfg.methods) | set(self.sweep_labels())
        splits = {s.label for s in cfg.eval_splits()}
        for c in self.comparisons:
            for name in (c.a, c.b):
                if name not in known:
                    raise ValueError(f"comparison {c.label!r}: {name!r} is neither a method nor a sweep point "
                                     f"({sorted(known)})")
            if c.split not in splits:
                raise ValueError(f"comparison {c.label!r}: split {c.split!r} is not one of {sorted(splits)}")
            split = next(s for s in cfg.eval_splits() if s.label == c.split)
            for name in (c.a, c.b):
                if name in cfg.methods and not split.evaluates(name):
                    raise ValueError(f"comparison {c.label!r}: {name!r} is not evaluated on {c.split!r} "
                                     f"(its methods: {split.methods})")
        return self

    def sweep_split(self, cfg: RunConfig):
        """The run's eval split the sweeps are scored on (named by its name or its data), or None."""
        return next((s for s in cfg.eval_splits() if self.sweep_data in (s.label, s.data)), None)

    @property
    def root(self) -> Path:
        """Where the study writes."""
        return Path(self.out_dir) / self.name

    def run_config(self, seed: int) -> RunConfig:
        """The comparison run of one seed."""
        return RunConfig(**self.run, name=f"seed-{seed}", out_dir=str(self.root), seed=seed)

    def sweep_configs(self, seed: int) -> dict[str, tuple[list[str], RunConfig]]:
        """name -> (the methods it trains, the run of one sweep point); the run's own setting is left out."""
        from .methods import RL_TRAINED, TRAINED

        base = self.run_config(seed)
        # (name in the run's directory, section, key, value, the methods a point trains)
        points = [("tau", "expand", "tau", v, ["dail"]) for v in self.tau if v != base.expand.tau]
        points += [("gamma", "train", "gamma", v, ["dail"]) for v in self.gamma if v != base.train.gamma]
        trained = [m for m in base.methods if m in TRAINED]
        points += [("lr", "train", "lr", v, trained) for v in self.lr if v != base.train.lr]
        rl = [m for m in base.methods if m in RL_TRAINED]
        points += [("rl.lr", "rl", "lr", v, rl) for v in self.rl_lr if v != _rl_lr(base)]
        out = {}
        for name_key, section, key, value, methods in points:
            values = copy.deepcopy(self.run)
            values[section] = {**values.get(section, {}), key: value}
            # the point's own methods are evaluated on the sweep split, whichever the seed's run evaluates there
            values.update(methods=methods, eval_data=[self.sweep_split(base).model_dump(exclude_none=True,
                                                                                       exclude={"methods"})])
            name = f"seed-{seed}-{name_key}-{value:g}"
            out[name] = methods, RunConfig(**values, name=name, out_dir=str(self.root), seed=seed)
        return out

    def sweep_labels(self) -> list[str]:
        """Every sweep point's row label ('dail tau=0.5', 'rft lr=0.0003')."""
        return [f"{m} {_point(n)}"
                for n, (methods, _) in self.sweep_configs(self.seeds[0]).items() for m in methods]


def _rl_lr(run: RunConfig) -> float:
    """The learning rate a run's RL methods train at."""
    from .config import RLConfig

    return run.rl.lr if "lr" in run.rl.model_fields_set else RLConfig.model_fields["lr"].default


def _point(name: str) -> str:
    """A sweep run's setting as rows name it: 'seed-0-tau-0.5' -> 'tau=0.5'."""
    return name.split("-", 2)[2].replace("-", "=", 1)


OnRun = Callable[[str, RunConfig], dict]


def _points(cfg: StudyConfig, seed: int) -> dict[str, tuple[list[str], RunConfig]]:
    """The sweep points that accompany `seed`'s run (none where sweep_seeds leaves the seed out)."""
    return cfg.sweep_configs(seed) if cfg.sweep_seeds is None or seed in cfg.sweep_seeds else {}


def plan(cfg: StudyConfig) -> list[str]:
    """Every run of the study in order, labelled as `run` labels them: a seed's run, then its sweep points."""
    return [label for seed in cfg.seeds
            for label in (f"seed {seed}", *(f"seed {seed}: {_point(name)}" for name in _points(cfg, seed)))]


def run(cfg: StudyConfig, run_one: OnRun) -> dict[str, Any]:
    """Run (or resume) every seed and sweep point through `run_one(label, config)`; write and return the summary.

    `run_one` is `dail.pipeline.run` with the caller's event sinks (the CLI draws them).
    """
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    evals: dict[int, dict[str, Path]] = {}  # seed -> method or sweep label -> its run's eval root
    used: dict[int, dict[str, dict[str, int]]] = {}
    for seed in cfg.seeds:
        main = cfg.run_config(seed)
        result = run_one(f"seed {seed}", main)
        table = dict(result["table"])
        used[seed] = result.get("compute", {})
        root = Path(result["run_dir"])
        evals[seed] = {m: run_dir(main).root for m in main.methods}
        for name, (methods, sweep) in _points(cfg, seed).items():
            share_sampled(main, sweep)
            point = _point(name)
            rows = run_one(f"seed {seed}: {point}", sweep)["table"]
            for m in methods:
                table[f"{m} {point}"] = rows[m]
                evals[seed][f"{m} {point}"] = run_dir(sweep).root
        per_seed[seed] = _with_budgets(table, root)
    summary = {"name": cfg.name, "seeds": cfg.seeds, "sweep_data": cfg.sweep_data and cfg.sweep_split(main).label,
               "tau": cfg.tau, "gamma": cfg.gamma, "lr": cfg.lr, "base_tau": main.expand.tau,
               "base_gamma": main.train.gamma, "base_lr": main.train.lr, "rl_lr": cfg.rl_lr, "base_rl_lr": _rl_lr(main),
               "per_seed": {str(s): t for s, t in per_seed.items()}, "mean": aggregate(per_seed),
               "compute": {m: {k: statistics.fmean(used[s][m][k] for s in used) for k in used[cfg.seeds[0]][m]}
                           for m in used[cfg.seeds[0]]},
               "comparisons": [{**c.model_dump(), **compare(c, evals, cfg.resamples).as_dict()} for c in cfg.comparisons]}
    cfg.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.root / "study.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(cfg.root / "study.md", markdown(summary))
    plot(summary, cfg.root / "plots")
    return summary


def compare(c: Comparison, evals: dict[int, dict[str, Path]], resamples: int):
    """The paired difference of one comparison: per problem, each method's score averaged over seeds, then bootstrapped."""
    from .rundir import RunDir
    from .stats import mean_over_seeds, paired_bootstrap, problem_scores, read_samples

    def scores(method: str) -> dict[str, float]:
        # a sweep point ('rft lr=0.0003') is its method's eval directory in the point's own run
        name = method.split(" ")[0]
        return mean_over_seeds([problem_scores(read_samples(RunDir(evals[s][method]).eval_dir(name, c.split)), c.metric)
                                for s in seeds])

    # paired over the seeds that have both (a sweep may accompany only some seeds)
    seeds = [s for s, roots in evals.items() if c.a in roots and c.b in roots]
    return paired_bootstrap(scores(c.a), scores(c.b), resamples=resamples)


def _with_budgets(table: dict[str, Any], root: Path) -> dict[str, Any]:
    """The results table with each main method's pass@1 at each token budget (from its metrics.json)."""
    from .rundir import EvalDir, RunDir

    for method, splits in table.items():
        for split, row in splits.items():
            path = EvalDir(RunDir(root).eval_dir(method, split)).metrics
            if path.exists():
                m = json.loads(path.read_text())
                row["budget_pass_at_1"] = {b: v.get("1") for b, v in m.get("pass_at_k_budget", {}).items()}
    return table


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(per_seed: dict[int, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean, standard deviation, min and max across seeds of every number in the per-seed tables."""
    out: dict[str, dict[str, Any]] = {}
    tables = list(per_seed.values())
    methods = list(dict.fromkeys(m for t in tables for m in t))
    for method in methods:
        splits = list(dict.fromkeys(s for t in tables for s in t.get(method, {})))
        for split in splits:
            rows = [t[method][split] for t in tables if split in t.get(method, {})]
            entry: dict[str, Any] = {"pass_at_k": {}, "budget_pass_at_1": {}}
            for k in rows[0]["pass_at_k"]:
                entry["pass_at_k"][k] = _stats([r["pass_at_k"][k] for r in rows if k in r["pass_at_k"]])
            entry["mean_tokens"] = _stats([r["mean_tokens"] for r in rows])
            for b in rows[0].get("budget_pass_at_1", {}):
                entry["budget_pass_at_1"][b] = _stats([r["budget_pass_at_1"][b] for r in rows
                                                       if r.get("budget_pass_at_1", {}).get(b) is not None])
            out.setdefault(method, {})[split] = entry
    return out


def _cell(s: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """The study's tables: pass@k (%) and mean tokens as mean ± standard deviation across seeds."""
    lines = [f"# Study {summary['name']}", "",
             f"Seeds {summary['seeds']}; every cell is mean ± standard deviation across seeds (pass@k in %).", ""]
    mean = summary["mean"]
    splits = list(dict.fromkeys(s for m in mean.values() for s in m))
    for split in splits:
        rows = [(m, v[split]) for m, v in mean.items() if split in v]
        ks = list(rows[0][1]["pass_at_k"])
        lines += [f"## {split}", "", "| method | " + " | ".join(f"pass@{k}" for k in ks) + " | mean tokens |",
                  "|---" * (len(ks) + 2) + "|"]
        for method, e in rows:
            cells = [_cell(e["pass_at_k"][k]) if k in e["pass_at_k"] else "–" for k in ks]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {_cell(e['mean_tokens'], 1.0, 0)} |")
        lines.append("")
    if summary.get("comparisons"):
        lines += ["## Paired comparisons", "", comparisons_table(summary["comparisons"]), ""]
    return "\n".join(lines)


def comparisons_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each comparison's mean difference and 95% CI (points of pass@k, or tokens)."""
    out = ["| comparison (a − b) | metric | split | difference | 95% CI | problems |", "|---|---|---|---|---|---|"]
    for r in rows:
        scale, unit = (1.0, "") if r["metric"] == "tokens" else (100.0, " pts")
        out.append(f"| {r['a']} − {r['b']} | {r['metric']} | {r['split']} | {scale * r['mean']:+.1f}{unit} | "
                   f"[{scale * r['lo']:+.1f}, {scale * r['hi']:+.1f}] | {r['n']} |")
    return "\n".join(out)


def compute_table(used: dict[str, dict[str, float]]) -> str:
    """Markdown: the tokens each method sampled and trained on, mean over seeds (selection is shared by all)."""
    out = ["| method | sampled for its data | trained on | selection (shared) |", "|---|---|---|---|"]
    for method, c in used.items():
        out.append(f"| {method} | {c['sampled']:,.0f} | {c['trained']:,.0f} | {c['selection']:,.0f} |")
    return "\n".join(out)


def fill_readme(text: str, summary: dict[str, Any]) -> str:
    """`text` with every `<!-- study:KEY -->` ... `<!-- /study:KEY -->` block replaced by that table of `summary`.

    KEY is `comparisons`, `compute` or a split's name (its mean ± std table). A marker whose table the summary
    lacks is a ValueError, so a README never keeps a stale table silently.
    """
    import re

    def table(key: str) -> str:
        if key == "compute":
            if not summary.get("compute"):
                raise ValueError("the study has no compute record")
            return compute_table(summary["compute"])
        if key == "comparisons":
            if not summary.get("comparisons"):
                raise ValueError("the study has no comparisons")
            return comparisons_table(summary["comparisons"])
        section = markdown({**summary, "comparisons": [], "mean": {m: {key: v[key]} for m, v in summary["mean"].items()
                                                                   if key in v}})
        if f"## {key}" not in section:
            raise ValueError(f"the study has no split {key!r}")
        return section.split(f"## {key}\n\n", 1)[1].strip()

    pattern = re.compile(r"(<!-- study:([\w.-]+) -->\n)(?:.*?\n)??(<!-- /study:\2 -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table(m.group(2)) + "\n" + m.group(3), text)


def plot(summary: dict[str, Any], out: Path) -> None:
    """pass@k with the spread across seeds (main methods), pass@1 against token budget, and the sweeps."""
    out.mkdir(parents=True, exist_ok=True)
    _curves(summary, out)
    _sweeps(summary, out)


def _curves(summary: dict[str, Any], out: Path) -> None:
    """pass_at_k.png and token_budget.png: one panel per split, a line and a ± 1 std band per main method."""
    from matplotlib.figure import Figure

    from .report_plots import method_colours

    mean = summary["mean"]
    main = [m for m in mean if " " not in m]  # sweep points ('dail tau=0.5') have their own plot
    splits = list(dict.fromkeys(s for m in main for s in mean[m]))
    colours = method_colours(main)
    for name, key, xlabel in (("pass_at_k", "pass_at_k", "k (samples)"),
                              ("token_budget", "budget_pass_at_1", "token budget B (pass@1)")):
        fig = Figure(figsize=(0.5 + 4.6 * len(splits), 4.2), layout="constrained", dpi=110)
        for ax, split in zip(fig.subplots(1, len(splits), squeeze=False)[0], splits):
            for m in main:
                curve = mean[m].get(split, {}).get(key, {})
                if curve:
                    xs = [int(x) for x in curve]
                    mu = [100 * curve[x]["mean"] for x in curve]
                    sd = [100 * curve[x]["std"] for x in curve]
                    ax.plot(xs, mu, marker="o", ms=4, color=colours[m], label=m)
                    ax.fill_between(xs, [a - b for a, b in zip(mu, sd)], [a + b for a, b in zip(mu, sd)],
                                    color=colours[m], alpha=0.15, lw=0)
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.set(title=split, xlabel=xlabel, ylabel="%")
            if ax.lines:
                ax.legend(fontsize=8, loc="upper left")
        fig.suptitle(f"{summary['name']}: mean over seeds {summary['seeds']}, band = ± 1 std", fontsize=11)
        fig.savefig(out / f"{name}.png")


def _sweeps(summary: dict[str, Any], out: Path) -> None:
    """sweeps.png: one panel per swept setting, each swept method's pass@k against the setting (sweep split)."""
    from matplotlib.figure import Figure

    mean, split = summary["mean"], summary["sweep_data"]
    sweeps = [(p.replace("rl_", "rl."), summary[p], summary[f"base_{p}"]) for p in ("tau", "gamma", "lr", "rl_lr")
              if summary.get(p)]
    if not sweeps or split is None:
        return
    fig = Figure(figsize=(0.5 + 4.6 * len(sweeps), 4.2), layout="constrained", dpi=110)
    for ax, (param, values, base) in zip(fig.subplots(1, len(sweeps), squeeze=False)[0], sweeps):
        methods = sorted({m.split(" ")[0] for m in mean for v in values if m.endswith(f" {param}={v:g}")})
        for method in methods:
            points = [(v, mean.get(method if v == base else f"{method} {param}={v:g}", {}).get(split)) for v in values]
            ks = list(next((e for _, e in points if e), {}).get("pass_at_k", {}))
            # one curve per method at the largest k, or pass@1 and pass@K when one method is swept
            for k in ([ks[-1]] if len(methods) > 1 else [ks[0], ks[-1]] if len(ks) > 1 else ks):
                xs = [v for v, e in points if e]
                mu = [100 * e["pass_at_k"][k]["mean"] for _, e in points if e]
                sd = [100 * e["pass_at_k"][k]["std"] for _, e in points if e]
                ax.errorbar(xs, mu, yerr=sd, marker="o", capsize=3, label=f"{method} pass@{k}")
        if param in ("lr", "rl.lr"):
            ax.set_xscale("log")
        ax.set(title=f"{param} ({split})", xlabel=param, ylabel="%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(out / "sweeps.png")
