"""Whether a synthetic input is a real example or a copy of the prompt's scaffolding.

A small teacher asked to write "Input: <the news story>" sometimes writes the
slot itself (`<news story>`), repeats the instructions ("Please write a short
news story with the topic copper"), or writes a bare title or topic word with
no story. None of these is an example of the domain; synthesis drops them and
counts each by its reason (the first that applies):

- "placeholder": a template slot in brackets (`<news story>`, `[the question]`,
  `<insert a news story with the topic lead here>`) with fewer than
  MIN_INPUT_WORDS words outside brackets. A bracketed name inside a story
  stays: Reuters writes tickers so ("ENERGY GIANT <EGC> EXPANDS ...").
- "echoes_prompt": ECHO_NGRAM words in a row copied from the prompt's own
  instructions (demonstrations excluded: inputs are meant to resemble them,
  and copying one is counted apart as "copied_demonstration").
- "no_input": fewer than MIN_INPUT_WORDS words of its own once slots are
  removed (every one of R52's 6,401 pool inputs has 5 or more).
"""

from __future__ import annotations

import re

from baldistill.core.decontamination import index_ngrams, overlaps

MIN_INPUT_WORDS = 5
ECHO_NGRAM = 8
_SLOT = re.compile(r"<[^<>]{0,200}>|\[[^\[\]]{0,200}\]|\{[^{}]{0,200}\}")
_WORD = re.compile(r"[A-Za-z0-9]+")


def own_words(text: str) -> int:
    """Words of `text` outside brackets."""
    return len(_WORD.findall(_SLOT.sub(" ", text)))


def input_problem(text: str, instructions: str) -> str | None:
    """Why `text` is no real example ("placeholder", "echoes_prompt", "no_input"), or None.

    `instructions` is the synthesis prompt without its demonstrations."""
    words = own_words(text)
    if _SLOT.search(text) and words < MIN_INPUT_WORDS:
        return "placeholder"
    if overlaps(text, index_ngrams([instructions], ECHO_NGRAM), ECHO_NGRAM):
        return "echoes_prompt"
    if words < MIN_INPUT_WORDS:
        return "no_input"
    return None
