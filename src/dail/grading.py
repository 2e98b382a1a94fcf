"""Answer extraction and answer equivalence for sampled traces.

What it does: finds the final answer in a model's text (the last ``\\boxed{}``, or a closing
"the answer is ..." phrase when there is no box), reports where in the text that answer ends
(for token-budget evaluation), and decides whether it matches a reference answer under one of
three rules (docs/method.md, "Evaluation"):

* ``integer`` -- AIME-style: both sides must be integer literals; compared as Python ints.
* ``math``    -- symbolic/numeric equivalence by math-verify (fractions, decimals, LaTeX,
  sets, intervals, ...).
* ``choice``  -- multiple choice, compared by option letter (A-J) only.

Token pieces (``token_pieces``, ``prefix_texts``) say which token of a completion completes
which character, so that callers can map the character offset from ``extract_answer_span`` to a
token index, and what text a prefix of the tokens decodes to (budgets, the trace viewer).

What it deliberately does not do: no I/O, no pass@k (see ``metrics.py``), and no
matching of a prediction against the *text* of a multiple-choice option -- a model that
writes the option's content instead of its letter is graded wrong, so that grading never
depends on how fuzzy a text match is.

Thread safety: math-verify bounds its work with ``signal.alarm``, which only works on the
main thread. ``is_correct`` uses that timeout on the main thread and runs without one
elsewhere, so it never raises off the main thread; but without a timeout a pathological
answer (``9^{9^{9}}``) can run for a very long time. Grade many samples in worker
*processes* (each worker's main thread keeps the alarm), not worker threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Literal

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

from .data import ANSWER_TYPES

Kind = Literal["integer", "math", "choice"]
KINDS: tuple[str, ...] = ANSWER_TYPES

# Optional whitespace after the command is legal LaTeX (`\boxed {x}`).
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")

# "the answer is", "the final answer is", "final answer:", "Answer:" (markdown bold allowed
# around the keyword or the colon). A bare "answer" needs a colon: in running text the word
# is too common to mark an answer.
_ANSWER_PHRASE = re.compile(
    r"(?:\bthe\s+(?:final\s+)?answer\s+is\b"
    r"|\bfinal\s+answer\b(?:\s+is\b)?"
    r"|\banswer\b(?=\s*\**\s*:))"
    r"[ \t]*\**[ \t]*:?",
    re.IGNORECASE,
)
# A sentence ends at a period followed by whitespace or the end; "3.14" keeps its point.
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_LEAD_JUNK = ("$", "*", "\\(", "\\[")
_TRAIL_JUNK = ("$", "*", ".", "\\)", "\\]")

# Wrappers whose content is the answer: `\text{42}` is 42, `\textbf{B}` is B.
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|boxed|fbox)\s*\{([^{}]*)\}")
_INTEGER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)")
_CHOICE_PREFIX = re.compile(r"^(?:option|choice|answer)\b\s*:?\s*", re.IGNORECASE)
_CHOICE_ALONE = re.compile(r"\(?([A-J])\)?[.:)]?", re.IGNORECASE)
# "(B) 42", "B) 42", "B. 42", "B: 42": the letter, a delimiter, then the option's text.
_CHOICE_LEADING = re.compile(r"(?:\(([A-J])\)|([A-J])[.:)])\s", re.IGNORECASE)

_MATH_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())


def extract_answer(text: str) -> str | None:
    """Return the final answer in `text` (last box, else last "answer is" phrase), or None."""
    return extract_answer_span(text)[0]


def extract_answer_span(text: str) -> tuple[str | None, int | None]:
    """Return the final answer and the character offset just past where it ends in `text`.

    For a box the offset is just past its closing brace (the answer is complete only once the
    box closes); for a phrase, just past the answer's last character after trimming.
    """
    boxes = list(_BOX_OPEN.finditer(text))
    if boxes:
        # The last box decides. If it never closes the model was cut off mid-answer: no answer,
        # rather than crediting an earlier (intermediate) box.
        start = boxes[-1].end()
        close = matching_brace(text, start)
        if close is None:
            return None, None
        answer = text[start:close].strip()
        return (answer, close + 1) if answer else (None, None)
    return _phrase_answer(text)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{}` in `text` (nested braces kept whole); None without a box or when the last
    one never closes (an earlier box is not the answer). Boxes only: no "the answer is" phrases."""
    boxes = list(_BOX_OPEN.finditer(text))
    if not boxes:
        return None
    close = matching_brace(text, boxes[-1].end())
    answer = text[boxes[-1].end():close].strip() if close is not None else ""
    return answer or None


def matching_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing a group opened just before `start`, or None if unbalanced."""
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            # `\{` and `\}` are literal braces (set notation), not groups; `\\` is a line break.
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _phrase_answer(text: str) -> tuple[str | None, int | None]:
    # Scan from the last phrase backwards: a trailing "...the final answer." with nothing after
    # it should not hide an earlier "Answer: 42".
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        lo = match.end()
        while lo < len(text) and text[lo].isspace():
            lo += 1  # the answer may sit on the next line ("Final answer:\n42")
        line_end = text.find("\n", lo)
        hi = len(text) if line_end == -1 else line_end
        lo, hi = _trim(text, lo, hi)
        sentence_end = _SENTENCE_END.search(text, lo, hi)
        if sentence_end is not None:
            lo, hi = _trim(text, lo, sentence_end.start())
        if hi > lo:
            return text[lo:hi], hi
    return None, None


def _trim(text: str, lo: int, hi: int) -> tuple[int, int]:
    """Shrink [lo, hi) past whitespace, `$`, markdown `*`, `\\(`/`\\)` and trailing periods."""
    changed = True
    while changed and lo < hi:
        changed = False
        while lo < hi and text[lo].isspace():
            lo, changed = lo + 1, True
        while lo < hi and text[hi - 1].isspace():
            hi, changed = hi - 1, True
        for junk in _LEAD_JUNK:
            if text.startswith(junk, lo, hi):
                lo, changed = lo + len(junk), True
        for junk in _TRAIL_JUNK:
            if hi - len(junk) >= lo and text.startswith(junk, hi - len(junk), hi):
                hi, changed = hi - len(junk), True
    return lo, hi


def answer_kind(answer: str | None, choices: Sequence[str] | None) -> Kind | None:
    """Pick the grading rule for a reference answer: choice, integer or math (None: unverifiable)."""
    if answer is None:
        return None
    if choices:
        return "choice"
    return "integer" if _parse_integer(answer) is not None else "math"


def problem_kind(problem) -> Kind | None:
    """A problem's grading rule: the type its row declares (`meta.answer_type`), else `answer_kind`'s guess."""
    if problem.answer is None:
        return None
    # A declared type was checked when the row was read (`Problem`).
    return problem.meta.get("answer_type") or answer_kind(problem.answer, problem.choices)


def is_correct(
    predicted: str | None, reference: str, kind: str, timeout_s: int | None = 5
) -> bool:
    """Whether `predicted` matches `reference` under rule `kind`; garbage predictions are False.

    Raises ValueError for an unknown kind, or a reference that does not fit its kind (an
    integer/choice reference that is not an integer/letter): that is a data bug, not a wrong
    answer. `timeout_s` bounds math-verify on the main thread only (see module docstring).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "integer":
        ref_int = _parse_integer(reference)
        if ref_int is None:
            raise ValueError(f"integer reference {reference!r} is not an integer literal")
        return predicted is not None and _parse_integer(predicted) == ref_int
    if kind == "choice":
        ref_letter = _parse_choice(reference)
        if ref_letter is None:
            raise ValueError(f"choice reference {reference!r} is not a letter A-J")
        return predicted is not None and _parse_choice(predicted) == ref_letter
    return _math_equal(predicted, reference, timeout_s)


def grade(text: str, reference: str | None, kind: str | None) -> tuple[str | None, bool]:
    """Extract the answer from `text` and check it; no reference or kind means (answer, False)."""
    answer = extract_answer(text)
    if reference is None or kind is None:
        return answer, False
    return answer, is_correct(answer, reference, kind)


def _unwrap(s: str) -> str:
    """Strip `$`, `\\text{..}`-style wrappers, surrounding whitespace and a trailing period."""
    prev = None
    while prev != s:
        prev = s
        s = _WRAPPER.sub(r"\1", s)
        lo, hi = _trim(s, 0, len(s))
        s = s[lo:hi]
    return s


def _parse_integer(s: str) -> int | None:
    """Parse an integer literal leniently about wrapping, strictly about the number itself."""
    s = _unwrap(s)
    lhs, eq, rhs = s.rpartition("=")
    if eq and re.search(r"[A-Za-z]", lhs):
        s = _unwrap(rhs)  # "x = 42", "m + n = 42"
    # LaTeX thousands separators: `1{,}000`, `1\,000`; a Unicode minus from some tokenizers.
    s = s.replace("{,}", ",").replace("\\,", ",").replace("\u2212", "-")
    if not _INTEGER.fullmatch(s):
        return None
    return int(s.replace(",", ""))


def _parse_choice(s: str) -> str | None:
    """Return the upper-case option letter a prediction names, or None."""
    s = _CHOICE_PREFIX.sub("", _unwrap(s))
    s = _unwrap(s)  # "Option $\text{(B)}$"
    match = _CHOICE_ALONE.fullmatch(s) or _CHOICE_LEADING.match(s)
    if match is None:
        return None
    return next(g for g in match.groups() if g).upper()


def _math_equal(predicted: str | None, reference: str, timeout_s: int | None) -> bool:
    if predicted is None:
        return False
    pred, ref = _unwrap(predicted), _unwrap(reference)
    if not pred or not ref:
        return False
    if pred == ref:
        return True
    # signal.alarm raises off the main thread; there we must run without a timeout.
    if threading.current_thread() is not threading.main_thread():
        timeout_s = None
    try:
        # A box tells math-verify the whole string is the answer; `$...$` would let it pick
        # a sub-expression out of a malformed one ("2+" parses as 2).
        gold = parse(f"\\boxed{{{ref}}}", _MATH_CONFIG, parsing_timeout=timeout_s)
        target = parse(f"\\boxed{{{pred}}}", _MATH_CONFIG, parsing_timeout=timeout_s)
        if not gold or not target:
            return False
        # Not symmetric: the reference must come first (assignments like "x = 3" are unwrapped
        # on the prediction side only).
        return bool(verify(gold, target, timeout_seconds=timeout_s))
    # math-verify and sympy raise assorted errors on garbage; grading never fails. The timeout
    # is a BaseException, so it is named: an alarm landing outside math-verify's own handlers
    # would otherwise escape.
    except (Exception, TimeoutException):
        return False


# ---------------------------------------------------------------------------------------------
# where in the token stream a text ends (for answer_token, budgets and the trace viewer)


def pieces_and_prefixes(tokenizer, ids: list[int], cuts: Sequence[int] = ()) -> tuple[list[str], dict[int, str]]:
    """Per-token pieces of `ids`, and for each cut c the text `token_pieces(ids[:c])` joins to.

    Decoding ids one at a time breaks characters that span several byte-level tokens, so each
    piece is the growth of the decoded text over a short window. The walk over ids[:c] is the
    walk over ids up to step c, so a prefix's text is the pieces so far plus whatever a character
    torn at the cut shows.
    """

    def decode(a: int, b: int) -> str:
        return tokenizer.decode(ids[a:b], skip_special_tokens=True)

    def torn_tail(end: int) -> str:  # what the decode of a character cut at `end` adds
        return decode(start, end)[len(decode(start, read)):] if read < end else ""

    wanted, texts = set(cuts), {}
    pieces: list[str] = []
    start = read = 0  # window [start, read) has been emitted; start lags one emission for context
    for i in range(len(ids)):
        before, after = decode(start, read), decode(start, i + 1)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before):])
            start, read = read, i + 1
        else:
            pieces.append("")
        if i + 1 in wanted:
            texts[i + 1] = "".join(pieces) + torn_tail(i + 1)
    if read < len(ids):  # a torn character at the very end: the last token shows what there is
        pieces[-1] += torn_tail(len(ids))
    return pieces, texts


def token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str]:
    """The text each token adds; they join to the decoded completion (special tokens dropped).

    A token that ends inside a character adds "" and the token that completes the character carries it.
    """
    return pieces_and_prefixes(tokenizer, list(token_ids))[0]


def prefix_texts(tokenizer, token_ids: Sequence[int], cuts: Sequence[int]) -> dict[int, str]:
    """For each cut c < len(token_ids), the text of the first c tokens as `token_pieces` joins it."""
    return pieces_and_prefixes(tokenizer, list(token_ids), [c for c in cuts if 0 < c < len(token_ids)])[1]
