"""Pull the final answer out of a teacher rationale or a student generation.

Every prompt asks the model to end with "The answer is <answer>.", but real
outputs add markdown, quotes, colons, units, \\boxed{...} or trailing chatter.
One extractor, shared by annotation (to check the teacher agrees with the gold
label), synthesis (to read the label of a synthetic row) and evaluation (to
score the student), keeps those three places from disagreeing.

The teacher side reads leniently: without an answer sentence it falls back to
the last label mentioned, a bare letter, the last "(X)" or the last \\boxed{}.
Evaluation reads with `strict=True`: only what follows the last answer
sentence counts, so a label the student merely echoes from the input is never
taken as its answer (student.answer_extraction asks it explicitly instead).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from baldistill.core.dataset_info import check_task

# Where a rationale states its final answer as the prompts ask ("The answer is X."): a long
# training target keeps this sentence when its middle is cut (student.encoding).
FINAL_ANSWER_SENTENCE = re.compile(r"the answer is\b", re.IGNORECASE)
# The words that open the answer sentence, as the prompts spell them: evaluation's second pass appends
# them after a student's reasoning and reads the answer from what the student writes next.
ANSWER_TRIGGER = "The answer is"
# Whether a rationale states its answer at all ("answer is", "Answer:"); one without gets the answer sentence appended.
ANSWER_SENTENCE = re.compile(r"answer\s*(?:is\b|:)", re.IGNORECASE)
# What extraction reads: "The answer is X", "the final answer is: X", "Answer: X", "**Answer:** X".
_ANSWER_IS = re.compile(r"answer\s*(?:\*\*|__)?\s*(?:is\b|:)\s*(?:\*\*|__)?\s*:?", re.IGNORECASE)
_MARKDOWN = str.maketrans(dict.fromkeys("*_`#", " "))
_QUOTES = "\"'“”‘’«»"
# The letters a multiple-choice answer can be.
CHOICE_LETTERS = "ABCDE"


def extract_answer(text: str, task: str, labels: Sequence[str] | None = None, *, strict: bool = False) -> str | None:
    """The final answer in `text` for a task type, or None if there is none.

    classification: one of `labels` (returned as spelled in `labels`), matched
    case-insensitively; the first label right after the last "answer is" wins,
    else the last label mentioned anywhere. Without `labels`, the cleaned text
    after the last "answer is". multiple_choice: the letter A-E (after the last
    "answer is", else an output that is just a letter, else a lone "(X)").
    math: the normalised final answer (last "answer is", or last \\boxed{}).
    abstractive_qa: the text after the last "answer is", stripped.

    strict=True reads only what follows the last answer sentence ("answer
    is", "Answer:"), read as above, and drops every fallback: no last label
    mentioned anywhere, no bare letter or "(X)" elsewhere, no \\boxed{} before
    it. Text without a readable answer sentence gives None.
    """
    check_task(task)
    if not text or not text.strip():
        return None
    if task == "classification":
        return _classification(text, labels, strict)
    if task == "multiple_choice":
        return _multiple_choice(text, strict)
    if task == "math":
        return _math(text, strict)
    return _free_text(text)


def answers_match(pred: str | None, gold: str, task: str) -> bool:
    """Whether an extracted answer equals the gold one for this task type.

    Classification and abstractive QA compare case-, punctuation- and
    article-insensitively; multiple choice compares letters; math compares
    normalised strings, then numeric values (so "0.5" matches "\\frac{1}{2}").
    """
    if pred is None or gold is None:
        return False
    if task == "multiple_choice":
        gold_letter = _letter_at_start(str(gold)) or str(gold).strip().upper()
        return _letter_at_start(pred) == gold_letter
    if task == "math":
        a, b = normalize_math(pred), normalize_math(str(gold))
        if a == b:
            return True
        x, y = _as_number(a), _as_number(b)
        return x is not None and y is not None and abs(x - y) <= 1e-6 * max(1.0, abs(y))
    return normalize_text(pred) == normalize_text(str(gold))


def normalize_text(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = re.sub(r"[^\w\s-]|_", " ", text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _after_last_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    return text[matches[-1].end() :] if matches else None


def _first_sentence(text: str) -> str:
    """Up to the first line break or sentence end (a period before a space)."""
    text = text.strip().split("\n", 1)[0]
    return re.split(r"(?<=[^\d\s])\.(?:\s|$)|(?<=\d)\.(?=\s|$)", text, maxsplit=1)[0]


def _clean(text: str) -> str:
    text = text.translate(_MARKDOWN).strip()
    text = text.strip(_QUOTES + " ").rstrip(".!;:, ").strip(_QUOTES + " ")
    return " ".join(text.split())


# ---- classification -------------------------------------------------------


def _label_pattern(labels: Sequence[str]) -> re.Pattern:
    # Longest first so "nat-gas" beats "gas"; hyphens and word chars bound a label.
    ordered = sorted({label for label in labels if label.strip()}, key=len, reverse=True)
    alternatives = "|".join(re.escape(label) for label in ordered)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def _classification(text: str, labels: Sequence[str] | None, strict: bool) -> str | None:
    tail = _after_last_answer_is(text)
    if not labels:
        return _clean(_first_sentence(tail)) or None if tail is not None else None
    canonical = {label.lower(): label for label in labels}
    pattern = _label_pattern(labels)
    if tail is not None:
        found = pattern.search(_first_sentence(tail.translate(_MARKDOWN)))
        if found:
            return canonical[found.group(0).lower()]
    if strict:
        return None
    mentions = list(pattern.finditer(text.translate(_MARKDOWN)))
    return canonical[mentions[-1].group(0).lower()] if mentions else None


# ---- multiple choice ------------------------------------------------------

_LEADING_LETTER = re.compile(
    r"^[\s\W]*(?:(?:option|choice)\s*)?\(?([A-Ea-e])(?:\)|\]|\.|:|,|\s|$)(?![\w'])|^[\s\W]*(?:(?:option|choice)\s*)?\(?([A-Ea-e])\)?$",
    re.IGNORECASE,
)
_PAREN_LETTER = re.compile(r"\(([A-E])\)")
_BARE_UPPER = re.compile(r"(?<![A-Za-z'])([A-E])(?![A-Za-z'])")


def _letter_at_start(text: str) -> str | None:
    found = _LEADING_LETTER.match(text.translate(_MARKDOWN).strip(_QUOTES + " "))
    if not found:
        return None
    return (found.group(1) or found.group(2)).upper()


def _multiple_choice(text: str, strict: bool) -> str | None:
    tail = _after_last_answer_is(text)
    if tail is not None:
        sentence = _first_sentence(tail) if not re.match(r"^\s*\(?[A-Ea-e][.)]", tail) else tail
        letter = _letter_at_start(sentence)
        if letter:
            return letter
        found = _PAREN_LETTER.search(sentence) or _BARE_UPPER.search(sentence)
        if found:
            return found.group(1)
    if strict:
        return None
    # No "answer is": accept an output that is just a letter, else the last "(X)".
    letter = _letter_at_start(text) if len(text.strip()) <= 40 else None
    if letter:
        return letter
    parens = _PAREN_LETTER.findall(text)
    return parens[-1] if parens and tail is None and len(set(parens)) == 1 else None


# ---- math -----------------------------------------------------------------


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces allowed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    return None


def _math(text: str, strict: bool) -> str | None:
    tail = _after_last_answer_is(text)
    if tail is not None:
        boxed = _last_boxed(tail)
        raw = boxed if boxed is not None else _math_tail(tail)
    else:
        raw = None if strict else _last_boxed(text)
    if raw is None:
        return None
    return normalize_math(raw) or None


def _math_tail(tail: str) -> str:
    """The answer part of 'The answer is ...': up to the line or sentence end,
    inside the $...$ if any, and a number without its trailing unit words."""
    line = tail.strip().split("\n", 1)[0]
    dollars = re.match(r"\s*\${1,2}(.+?)\${1,2}", line)
    if dollars:
        return dollars.group(1)
    sentence = _first_sentence(line)
    number = re.match(r"\s*(-?\$?[\d,]*\.?\d+%?)\s+[A-Za-z]", sentence)
    return number.group(1) if number else sentence


def normalize_math(answer: str) -> str:
    """Canonical text of a math answer: no $, spaces, markdown, \\text{},
    \\left/\\right, trailing period, thousands separators; \\dfrac -> \\frac."""
    s = answer.strip().translate(_MARKDOWN)
    s = s.replace("\\$", "").replace("$", "")
    boxed = _last_boxed(s)
    s = boxed if boxed is not None else s
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right|displaystyle|,|!|;)", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = "".join(s.split()).strip(_QUOTES).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _as_number(s: str) -> float | None:
    """The value of a plain, fractional or \\frac{a}{b} number; None otherwise."""
    s = s.rstrip("%")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?)\\frac(\d)(\d)", s)
    try:
        if frac:
            sign, num, den = (
                (frac.group(1), frac.group(2), frac.group(3))
                if frac.group(2)
                else (frac.group(4), frac.group(5), frac.group(6))
            )
            value = Fraction(int(num), int(den))
            return float(-value if sign else value)
        if re.fullmatch(r"-?\d+/\d+", s):
            return float(Fraction(s))
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
            return float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


# ---- abstractive QA -------------------------------------------------------


def _free_text(text: str) -> str | None:
    tail = _after_last_answer_is(text)
    if tail is None:
        return None
    line = tail.strip().split("\n", 1)[0]
    # Cut trailing chatter at a sentence end, but not after "Dr." or "U.S.".
    line = re.split(r"(?<=[a-z0-9)]{3})\.\s+(?=[A-Z])", line, maxsplit=1)[0]
    return _clean(line) or None


# ---- rationales that only restate the label ---------------------------------

# A rationale with fewer words than this, once its answer sentences and the label itself are taken
# out, only restates the label ("The correct topic is earn. The answer is earn." leaves 4 words).
# Twelve words is about one clause of reasoning ("the story reports quarterly net profit per share").
LABEL_ONLY_WORDS = 12
# An answer statement up to its sentence end ("the answer is earn.", "Answer: B").
_ANSWER_STATEMENT = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)[^.\n]*\.?", re.IGNORECASE)
_WORDS = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")


def reasoning_words(rationale: str, label: str) -> int:
    """Words of `rationale` outside its answer statements ("The answer is X.", "Answer: X"),
    not counting the label's own words."""
    kept = _ANSWER_STATEMENT.sub(" ", rationale or "")
    label_words = {w.lower() for w in _WORDS.findall(label or "")}
    return sum(1 for w in _WORDS.findall(kept) if w.lower() not in label_words)


def restates_label(rationale: str, label: str) -> bool:
    """Whether a rationale gives no reasoning beyond its label (LABEL_ONLY_WORDS)."""
    return reasoning_words(rationale, label) < LABEL_ONLY_WORDS
