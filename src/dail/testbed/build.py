"""`dail testbed build`: the test-bed's model and splits, made from a seed on this machine.

What it makes (all deterministic given the `BuildConfig`, on one machine and thread count):

* a tokenizer trained with `tokenizers` (byte-level BPE; digits and words are pieces of their own,
  so `37` never merges with the `=` before it) with a chat template, so prompts render through the
  same code path as any instruction-tuned model;
* a Llama-architecture model trained from scratch with transformers on a corpus drawn afresh every
  step: *learner* documents (the problem, then every step written out) for short chains only, and
  *reference* documents (the problem with the expert solution, or with the hint, or with the final
  answer, as the privileged / negative / rationalize prompts render them, then every step written
  out) for chains of any length. So the model can solve easy problems alone and read a reference
  on hard ones, as an instruction-tuned LLM can: a privileged student exists;
* JSONL splits in the problem schema: `train` (hard, with expert solutions), `val` and `test`
  (hard, disjoint, same difficulty) and `easy` (short chains, the RL-on-easier-data stand-in);
* `build.json`: the config, the package version, the loss curve and every file's sha256.

The model directory is an ordinary Hugging Face directory: every stage loads it by its path, and
the shipped copy by the alias `testbed`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from dail.config import PromptConfig, StrictConfig
from dail.data import Problem, atomic_write_text, write_jsonl
from dail.roles import Role
from dail.testbed.task import FUNCTIONS, Chain, Style, checkpoints, draw_chain, draw_tables, expert_steps, problem_row, write

__all__ = ["BuildConfig", "SPLIT_NAMES", "build", "build_tokenizer", "draw_document", "document_text", "make_splits",
           "new_model", "phases", "Phase", "split_tables", "style", "environment",
           "CHAT_TEMPLATE", "file_hashes"]

SPLIT_NAMES = ("train", "val", "test", "easy", "ood")
CHECKPOINT_EVERY = 200
LOG = "pretrain_log.jsonl"  # {step, loss, lr, tokens, elapsed_s} per step

# A plain chat format; the generation prompt opens the assistant turn, `<|end|>` closes every turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


class BuildConfig(StrictConfig):
    """Sizes of the test-bed: task, splits, how each role writes, model and pretraining."""

    seed: int = Field(0, description="Seed of the splits, the corpus and the weights.")
    learner_steps: tuple[int, int] = Field((1, 16), description="Chain lengths of learner documents: they cover "
                                           "the hard lengths, so the learner prompt is no handicap on routine steps.")
    reference_steps: tuple[int, int] = Field((1, 16), description="Chain lengths of documents with a reference in the prompt.")
    doc_hidden: tuple[int, int] = Field((0, 3), description="Function steps per pretraining document, each "
                                        "document with its own random tables.")
    end_on_function: float = Field(0.0, ge=0, le=1, description="Share of pretraining documents whose function "
                                   "steps may fall on the last step, as they do in the hard splits. At 0 (the "
                                   "shipped build) no document ends on one and rollouts of such problems "
                                   "sometimes run past the last step.")
    swap: float = Field(0.1, ge=0, le=1, description="Share of pretraining steps that swap the registers "
                                                     "(the train/val/test splits have none; the ood split has them).")
    hard_steps: tuple[int, int] = Field((8, 14), description="Chain lengths of the train/val/test/ood splits.")
    hidden: tuple[int, int] = Field((2, 2), description="Function steps per problem of the train/val/test splits, "
                                    "each reaching the answer through copies alone (one set of tables for all of "
                                    "them). At most 2: the answer holds two registers. With one fact a base "
                                    "model's 16 guesses find it 87% of the time; with two, about 13%.")
    easy_steps: tuple[int, int] = Field((3, 8), description="Chain lengths of the easy split (no function steps).")
    ood_swap: float = Field(0.25, ge=0, le=1, description="Share of swap steps in the ood split (at least one per "
                                                          "problem, no function steps): an operation no training problem uses.")
    every: tuple[int, int] = Field((2, 4), description="The expert solution names the state after every k-th step, k in this range.")
    learner_early: float = Field(0.02, ge=0, le=1, description="Per line, the rate at which a learner document answers "
                                                               "early with the state so far (a wrong shortcut of its own).")
    privileged_jump: float = Field(0.1, ge=0, le=1, description="Per line with a named state two or more steps ahead, "
                                                                "the rate at which a privileged document jumps to it.")
    negative_early: float = Field(0.5, ge=0, le=1, description="Per line, the rate at which a negative document "
                                                               "answers early with the hint's answer.")
    negative_jump: float = Field(0.5, ge=0, le=1, description="Per line with a hint checkpoint two or more steps "
                                                              "ahead, the rate at which a negative document jumps to it.")
    reference_share: float = Field(0.4, ge=0, le=1, description="Share of documents with a reference in the prompt.")
    curriculum: float = Field(0.4, ge=0, le=1, description="Share of phase 1 over which the longest chain grows "
                                                          "from 3 steps to its full length (0: no curriculum).")
    split_sizes: dict[str, int] = Field(
        default_factory=lambda: {"train": 400, "val": 200, "test": 500, "easy": 200, "ood": 200},
        description="Problems per split.")
    vocab_size: int = Field(512, ge=300, description="BPE vocabulary size (special tokens and bytes included).")
    tokenizer_docs: int = Field(2000, ge=10, description="Documents the tokenizer is trained on.")
    hidden_size: int = Field(128, ge=16)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_positions: int = Field(1024, ge=64, description="Context length of the model.")
    tie_embeddings: bool = Field(False, description="Tie input and output embeddings. Tied, '+' and '-' stayed "
                                                    "near-identical (cosine 0.99) through a whole build: as "
                                                    "targets they are 50/50, and the output gradient held them together.")
    steps: int = Field(1200, ge=1, description="Optimizer steps of phase 1.")
    batch_size: int = Field(32, ge=1, description="Documents per step.")
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0)
    phase2_steps: int = Field(400, ge=0, description="Steps of the second phase: a fresh AdamW from phase 1's "
                                                      "weights, long documents only, its own corpus stream.")
    phase2_lr: float = Field(5e-4, gt=0, description="Peak learning rate of phase 2 (50 warm-up steps, cosine to 10%).")
    phase2_reference_share: float = Field(0.5, ge=0, le=1, description="Share of reference documents in phase 2.")
    phase2_steps_range: tuple[int, int] = Field((6, 16), description="Chain lengths of phase 2's documents (both "
                                                "kinds): long chains are where per-line accuracy is lost.")
    threads: int = Field(2, ge=1, description="torch threads (the weights depend on it only through rounding).")


    @model_validator(mode="after")
    def _facts_fit(self) -> BuildConfig:
        if not 1 <= self.hidden[0] <= self.hidden[1] <= 2:
            raise ValueError(f"hidden must lie in 1..2 (low <= high), got {list(self.hidden)}: the answer holds two "
                             "registers, so at most two independent facts can reach it")
        return self

@dataclass(frozen=True)
class Phase:
    """One phase of pretraining: its own optimizer, schedule and corpus stream."""

    number: int
    steps: int
    lr: float
    warmup: int
    curriculum: float
    reference_share: float
    corpus: str  # the corpus stream's seed string
    lengths: tuple[int, int] | None = None  # None: the config's, per kind of document


def phases(cfg: BuildConfig) -> list[Phase]:
    """Phase 1 (curriculum, then every length), phase 2 (a fresh optimizer, long documents, more references)."""
    out = [Phase(1, cfg.steps, cfg.lr, cfg.warmup, cfg.curriculum, cfg.reference_share, f"{cfg.seed}:corpus")]
    if cfg.phase2_steps:
        out.append(Phase(2, cfg.phase2_steps, cfg.phase2_lr, min(50, cfg.phase2_steps), 0.0,
                         cfg.phase2_reference_share, f"{cfg.seed}:corpus:2", cfg.phase2_steps_range))
    return out


# --------------------------------------------------------------------------- the corpus

def _every(rng: random.Random, cfg: BuildConfig) -> int:
    return rng.randint(*cfg.every)


def style(role: Role, chain: Chain, every: int, cfg: BuildConfig) -> Style:
    """How a document of `role` is written (the rates of the config; see `task.write`)."""
    if role is Role.LEARNER:
        return Style(early=cfg.learner_early, early_answer="state")
    if role is Role.PRIVILEGED:
        return Style(jump=cfg.privileged_jump, targets=tuple(expert_steps(chain, every)))
    if role is Role.NEGATIVE:
        return Style(early=cfg.negative_early, early_answer="true", jump=cfg.negative_jump,
                     targets=tuple(checkpoints(chain, every)))
    return Style()  # rationalize: told the answer, writes every step


def draw_document(rng: random.Random, cfg: BuildConfig, cap: int = 26, reference_share: float | None = None,
                  lengths: tuple[int, int] | None = None) -> tuple[Role, Problem, str]:
    """One pretraining document: the role whose prompt it uses, the problem row, the completion.

    `cap` bounds the chain length (the curriculum); `reference_share` and `lengths` override the config's.
    Every document has its own random tables.
    """
    share = cfg.reference_share if reference_share is None else reference_share
    reference = rng.random() < share
    lo, hi = lengths or (cfg.reference_steps if reference else cfg.learner_steps)
    n = rng.randint(min(lo, cap), min(hi, cap))
    # no draw at 0: the corpus of a build without the option stays the one it always was
    last = cfg.end_on_function > 0 and rng.random() < cfg.end_on_function
    places = n if last else n - 1
    chain = draw_chain(rng, n, draw_tables(rng), rng.randint(min(cfg.doc_hidden[0], places), min(cfg.doc_hidden[1], places)),
                       cfg.swap, last=last)
    every = _every(rng, cfg)
    role = rng.choices([Role.PRIVILEGED, Role.NEGATIVE, Role.RATIONALIZE], weights=[6, 3, 1])[0] if reference else Role.LEARNER
    return role, problem_row(chain, every, "doc", "pretrain"), write(chain, style(role, chain, every, cfg), rng)


def document_text(role: Role, problem: Problem, completion: str, prompts: PromptConfig) -> tuple[str, str]:
    """A document as (prompt through the chat template with the generation prompt, completion + end token)."""
    from dail.prompts import prompt_text

    messages = [{"role": "user", "content": prompt_text(role, problem, prompts)}]
    if prompts.system is not None:
        messages.insert(0, {"role": "system", "content": prompts.system})
    prompt = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages) + "<|assistant|>\n"
    return prompt, completion + "<|end|>"


# --------------------------------------------------------------------------- tokenizer

def build_tokenizer(cfg: BuildConfig, prompts: PromptConfig):
    """A byte-level BPE tokenizer trained on documents of the corpus, wrapped for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(f"{cfg.seed}:tokenizer")
    texts = []
    for _ in range(cfg.tokenizer_docs):
        role, problem, completion = draw_document(rng, cfg)
        texts.append("".join(document_text(role, problem, completion, prompts)))
    tok = Tokenizer(models.BPE())
    # Pieces: \boxed{, a word with its leading space, one digit, one other character. BPE merges
    # only inside a piece, so numbers are digit by digit and never glued to an operator.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\\boxed\{| ?[A-Za-z]+| ?\d|\s|[^\sA-Za-z\d]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|end|>",
                                      chat_template=CHAT_TEMPLATE, model_max_length=cfg.max_positions)
    return wrapped


# --------------------------------------------------------------------------- splits

def split_tables(cfg: BuildConfig) -> tuple[tuple[int, ...], ...]:
    """The splits' F, G and H: permutations of the digits from the seed, used by every split problem."""
    return draw_tables(random.Random(f"{cfg.seed}:table"))


def _split_chain(rng: random.Random, cfg: BuildConfig, name: str, tables, hidden: int) -> Chain | None:
    """One candidate problem of split `name` with `hidden` function steps, or None when it breaks the split's rule."""
    if name == "easy":
        return draw_chain(rng, rng.randint(*cfg.easy_steps))
    n = rng.randint(*cfg.hard_steps)
    if name == "ood":
        chain = draw_chain(rng, n, swap=cfg.ood_swap)
        return chain if any(source == "swap" for _, source in chain.steps) else None
    chain = draw_chain(rng, n, tables, hidden, last=True)
    # Every fact must count: a function value that is overwritten, or one that reaches the answer only
    # as another function's input, would let a guess of fewer facts than the problem names be right.
    return chain if all(chain.direct(i) for i in chain.hidden_steps()) else None


def make_splits(cfg: BuildConfig) -> dict[str, list[Problem]]:
    """The splits; no problem text appears twice across them (pretraining documents are drawn apart and may repeat one)."""
    seen: set[str] = set()
    out: dict[str, list[Problem]] = {}
    tables = split_tables(cfg)
    for name in SPLIT_NAMES:
        rng = random.Random(f"{cfg.seed}:split:{name}")
        rows: list[Problem] = []
        hidden = None
        while len(rows) < cfg.split_sizes.get(name, 0):
            # the number of facts is drawn once per problem, before the rules reject chains: rejection
            # would otherwise favour problems with fewer facts
            hidden = rng.randint(*cfg.hidden) if hidden is None else hidden
            chain = _split_chain(rng, cfg, name, tables, hidden)
            if chain is None or chain.text in seen:
                continue
            hidden = None
            seen.add(chain.text)
            rows.append(problem_row(chain, _every(rng, cfg), f"testbed-{name}-{len(rows):04d}", name))
        out[name] = rows
    return out


# --------------------------------------------------------------------------- pretraining

def _batches(cfg: BuildConfig, phase: Phase, tokenizer, prompts: PromptConfig) -> Iterator[tuple[list[list[int]], list[int]]]:
    # Documents are drawn four batches at a time and batched by length: padding would otherwise
    # be over half of every batch (prompts with a reference are twice as long as the others).
    rng = random.Random(phase.corpus)
    longest = (phase.lengths or (1, max(cfg.learner_steps[1], cfg.reference_steps[1])))[1]
    grow = phase.curriculum * phase.steps
    step = 0
    while True:
        # The curriculum: induction (find step c in the prompt, copy it) forms on short chains in a
        # few hundred steps; on full-length documents it takes far longer.
        cap = longest if step >= grow else min(longest, 3 + int((longest - 3) * step / grow))
        step += 4
        docs = []
        for _ in range(4 * cfg.batch_size):
            prompt, completion = document_text(*draw_document(rng, cfg, cap, phase.reference_share, phase.lengths),
                                               prompts)
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            docs.append(((p + c)[: cfg.max_positions], len(p)))
        docs.sort(key=lambda d: len(d[0]))
        groups = [docs[i: i + cfg.batch_size] for i in range(0, len(docs), cfg.batch_size)]
        rng.shuffle(groups)
        for group in groups:
            yield [d[0] for d in group], [d[1] for d in group]


def _tensors(ids: list[list[int]], starts: list[int], pad: int):
    import torch

    width = max(map(len, ids))
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    labels = torch.full_like(x, -100)
    mask = torch.zeros_like(x)
    for i, (row, s) in enumerate(zip(ids, starts)):
        x[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, s: len(row)] = x[i, s: len(row)]  # loss on the completion only (and its <|end|>)
    return x, mask, labels


def new_model(cfg: BuildConfig, tokenizer):
    """A randomly initialised Llama of the config's shape over the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=cfg.tie_embeddings,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def pretrain(cfg: BuildConfig, tokenizer, prompts: PromptConfig, work: Path,
             on_step: Callable[[dict], None] | None = None):
    """A Llama trained from scratch on the corpus, phase by phase; returns (model, per-step records)."""
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = new_model(cfg, tokenizer)
    records: list[dict] = []
    offset = 0  # steps are numbered across phases
    for phase in phases(cfg):
        records += _phase(cfg, phase, model, tokenizer, prompts, work / f"phase-{phase.number}", offset, on_step)
        offset += phase.steps
    model.eval()
    return model, records


def _phase(cfg: BuildConfig, phase: Phase, model, tokenizer, prompts: PromptConfig, work: Path, offset: int,
           on_step: Callable[[dict], None] | None) -> list[dict]:
    """Train `model` in place through one phase.

    Every `CHECKPOINT_EVERY` steps the weights, optimizer and schedule go to `work/checkpoint.pt`
    and each step's record is appended to `work/log.jsonl`; a killed build resumes from the last
    checkpoint and ends with the same weights (the corpus iterator is replayed up to that step). A
    finished phase leaves `work/weights.pt`, so a later phase's resume does not repeat it.
    """
    import torch

    work.mkdir(parents=True, exist_ok=True)
    checkpoint, log, done = work / "checkpoint.pt", work / "log.jsonl", work / "weights.pt"
    if done.exists():
        model.load_state_dict(torch.load(done, weights_only=True))
        return [json.loads(line) for line in log.read_text().splitlines()]
    opt = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < phase.warmup:
            return (step + 1) / phase.warmup
        progress = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start, records = 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["step"]
        records = [json.loads(line) for line in log.read_text().splitlines()][:start]
        log.write_text("".join(json.dumps(r) + "\n" for r in records))  # drop steps after the checkpoint
    batches = _batches(cfg, phase, tokenizer, prompts)
    for _ in range(start):
        next(batches)
    model.train()
    t0 = time.perf_counter() - (records[-1]["elapsed_s"] if records else 0.0)
    with log.open("a") as sink:
        for step in range(start, phase.steps):
            x, mask, labels = _tensors(*next(batches), tokenizer.pad_token_id)
            loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            record = {"step": offset + step + 1, "phase": phase.number, "loss": round(loss.item(), 5),
                      "lr": sched.get_last_lr()[0], "tokens": int(mask.sum()),
                      "elapsed_s": round(time.perf_counter() - t0, 2)}
            records.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            if (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < phase.steps:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "step": step + 1}
                torch.save(state, work / "checkpoint.tmp")
                os.replace(work / "checkpoint.tmp", checkpoint)
            if on_step is not None:
                on_step(record)
    torch.save(model.state_dict(), work / "weights.tmp")
    os.replace(work / "weights.tmp", done)
    return records


# --------------------------------------------------------------------------- the whole build

def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative names, sorted), `build.json` and the timed log excluded."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in ("build.json", LOG):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def environment(threads: int) -> dict[str, str | int]:
    """What a reader needs to judge whether another machine would write the same weights: versions, CPU, commit."""
    import platform
    import subprocess
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                                  timeout=10).stdout.strip()

        commit = (git("rev-parse", "HEAD") or "unknown") + ("+dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"python": platform.python_version(), **{name: version(name) for name in ("torch", "transformers", "tokenizers")},
            "cpu": cpu, "threads": threads, "git_commit": commit}


def build(cfg: BuildConfig, out: str | os.PathLike, *, on_step: Callable[[dict], None] | None = None) -> Path:
    """Write the test-bed (model/, data/*.jsonl, build.json) to `out`; return `out`.

    Work goes to `.OUT.partial` beside `out` (a killed build resumes there when rerun with the same
    config) and is renamed to `out` when complete, so `out` is never half written.
    """
    from dail import __version__

    out = Path(out)
    work = out.parent / f".{out.name}.partial"
    settings = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    if work.exists() and (not (work / "settings.json").exists() or (work / "settings.json").read_text() != settings):
        shutil.rmtree(work)  # a build with other settings: nothing of it can be reused
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(settings)
    prompts = PromptConfig()
    tokenizer = build_tokenizer(cfg, prompts)
    model, records = pretrain(cfg, tokenizer, prompts, work, on_step)
    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    for name, rows in make_splits(cfg).items():
        write_jsonl(final / "data" / f"{name}.jsonl", rows)
    model.save_pretrained(final / "model")
    tokenizer.save_pretrained(final / "model")
    info = {"config": cfg.model_dump(mode="json"), "dail_version": __version__,
            "environment": environment(cfg.threads),  # not hashed: the weights match only on these kernels and threads
            "tables": {f: list(t) for f, t in zip(FUNCTIONS, split_tables(cfg))},
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_loss": records[-1]["loss"],  # no wall time: the files are identical build to build
            "loss_curve": [r["loss"] for r in records[:: max(1, len(records) // 200)]],
            "files": file_hashes(final)}
    (final / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    # the loss curve to plot; holds wall times, so not hashed
    atomic_write_text(final / LOG, "".join(json.dumps(r) + "\n" for r in records))
    if out.exists():
        shutil.rmtree(out)
    os.replace(final, out)
    shutil.rmtree(work)
    return out
