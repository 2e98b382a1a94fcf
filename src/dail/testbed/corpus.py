"""The test-bed's pretraining documents and the tokenizer trained on them.

A document is a problem in the task's schema written by one role (`style`: the learner alone, or a
reference in the prompt), rendered through the chat format the tokenizer carries (`document_text`).
"""

from __future__ import annotations

import random

from dail.config import PromptConfig
from dail.data import Problem
from dail.roles import Role
from dail import seeding
from dail.testbed.config import BuildConfig
from dail.testbed.task import Chain, Style, checkpoints, draw_chain, draw_tables, expert_steps, problem_row, write

__all__ = ["CHAT_TEMPLATE", "SPECIAL", "build_tokenizer", "document_text", "draw_document", "style"]

# A plain chat format; the generation prompt opens the assistant turn, `<|end|>` closes every turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


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
    every = rng.randint(*cfg.every)
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


def build_tokenizer(cfg: BuildConfig, prompts: PromptConfig):
    """A byte-level BPE tokenizer trained on documents of the corpus, wrapped for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = seeding.rng(cfg.seed, "tokenizer")
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
