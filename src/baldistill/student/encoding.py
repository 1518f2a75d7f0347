"""The exact prompt and target text the student sees, and their token ids.

One function builds the student prompt and one builds its training target, and
selection, training and evaluation all call them, so the student is scored,
trained and tested on byte-identical text. Token ids are made by
`encode_prompt` / `encode_target` for the same reason: the training sequence is
`encode_prompt(p) + encode_target(t)`, never the tokenisation of `p + t`.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from baldistill.core.answers import FINAL_ANSWER_SENTENCE
from baldistill.prompts import Prompts


def _truncate_tokens(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def build_prompt(tokenizer: PreTrainedTokenizerBase, prompts: Prompts, input_text: str, max_input_tokens: int) -> str:
    """The student prompt: prompts.student (bound to the data set's labels,
    Prompts.for_labels) with {input} cut to max_input_tokens tokens, wrapped
    as a user turn of the chat template with the assistant header appended
    (the raw prompt if the tokenizer has no template)."""
    return _wrap(tokenizer, prompts.render("student", input=_truncate_tokens(tokenizer, input_text, max_input_tokens)))


def _wrap(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_INPUT_MARK = "\x00input\x00"


def shared_prefix(tokenizer: PreTrainedTokenizerBase, prompts: Prompts) -> str:
    """The text every build_prompt string of these prompts begins with: the chat
    header and the instructions with the label set, up to the input (and the
    blanks before it, which the input's first token carries). The templates put
    the label list before {input} so that a batch can compute it once."""
    prompt = _wrap(tokenizer, prompts.render("student", input=_INPUT_MARK))
    return prompt[: prompt.index(_INPUT_MARK)].rstrip(" ")


def _count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _cut_head(tokenizer: PreTrainedTokenizerBase, head: str, budget: int) -> str:
    """The first `budget` tokens of `head`, backed off to the last sentence end if there is one."""
    if budget <= 0:
        return ""
    cut = tokenizer.decode(tokenizer(head, add_special_tokens=False).input_ids[:budget])
    end = max(cut.rfind(". "), cut.rfind(".\n"))
    return cut[: end + 1] if end > 0 else cut


def build_target(rationale: str, tokenizer: PreTrainedTokenizerBase, max_rationale_tokens: int) -> str:
    """The text the student is trained to produce: the rationale plus eos.

    A rationale longer than max_rationale_tokens keeps its beginning and its
    final answer sentence ("The answer is X.") and loses the middle, so the
    target still teaches the answer format the evaluation parses. The
    beginning is cut back to a sentence end when one is in reach. A rationale
    without an answer sentence is simply cut. The eos is not counted in
    max_rationale_tokens.
    """
    text = rationale.strip()
    if _count(tokenizer, text) > max_rationale_tokens:
        text = _shorten(tokenizer, text, max_rationale_tokens)
    return text + (tokenizer.eos_token or "")


def _shorten(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    matches = list(FINAL_ANSWER_SENTENCE.finditer(text))
    if not matches:
        return _truncate_tokens(tokenizer, text, max_tokens)
    head, tail = text[: matches[-1].start()].rstrip(), text[matches[-1].start() :]
    if _count(tokenizer, tail) >= max_tokens:
        return _truncate_tokens(tokenizer, tail, max_tokens)
    budget = max_tokens - _count(tokenizer, tail) - 1
    while True:  # re-tokenising the joined text can differ by a token at the seam
        kept = _cut_head(tokenizer, head, budget)
        joined = f"{kept} {tail}" if kept else tail
        if _count(tokenizer, joined) <= max_tokens or budget <= 0:
            return joined
        budget -= 1


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a `build_prompt` string. A chat-templated prompt already
    holds its start tokens, so special tokens are added only to a raw prompt."""
    return tokenizer(prompt, add_special_tokens=not getattr(tokenizer, "chat_template", None)).input_ids


def encode_target(tokenizer: PreTrainedTokenizerBase, target: str) -> list[int]:
    """Token ids of a `build_target` string (its eos text becomes the eos id)."""
    return tokenizer(target, add_special_tokens=False).input_ids
