"""Keep test text out of training data: 13-gram overlap (the GPT-3 paper's
decontamination rule, also used by the Llama and Tulu evaluations).

A teacher LLM may have seen the public test split of a benchmark and write a
"synthetic" tail example that is really a test story. Such a row would let the
student score on the test set by memory, so a synthetic row that shares any
run of 13 words (lower-cased, punctuation removed) with any test input is
dropped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NGRAM = 13
_WORD = re.compile(r"[a-z0-9]+")


def index_ngrams(texts: Iterable[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    """The n-grams of every test text, for repeated look-ups."""
    out: set[tuple[str, ...]] = set()
    for text in texts:
        words = _WORD.findall(text.lower())
        out.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return out


def overlaps(text: str, index: set[tuple[str, ...]], n: int = NGRAM) -> bool:
    """Whether `text` shares an n-gram with the indexed test texts (a text
    shorter than n words cannot, by this rule)."""
    words = _WORD.findall(text.lower())
    return any(tuple(words[i : i + n]) in index for i in range(len(words) - n + 1))
