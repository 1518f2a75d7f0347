"""13-gram decontamination: a pure rule, property-tested."""

from hypothesis import given
from hypothesis import strategies as st

from baldistill.core.decontamination import NGRAM, index_ngrams, overlaps

words = st.lists(st.sampled_from(["oil", "ship", "port", "rose", "fell", "pct", "the", "of", "in", "bank"]), min_size=0)


@given(words, words, st.integers(min_value=0, max_value=40))
def test_a_text_containing_13_test_words_in_a_row_overlaps(before, after, start):
    test = " ".join(f"w{i}" for i in range(40))
    copied = [f"w{i}" for i in range(start, start + NGRAM)] if start + NGRAM <= 40 else []
    text = " ".join([*before, *copied, *after])
    assert overlaps(text, index_ngrams([test])) == bool(copied)


@given(words)
def test_case_and_punctuation_do_not_hide_a_copy(extra):
    test = "The company said net profit rose 12 pct in the first quarter, helped by higher oil prices."
    copied = test.upper().replace(",", " ;").replace(" ", "  ")
    assert overlaps(" ".join([*extra, copied]), index_ngrams([test]))


def test_twelve_shared_words_are_not_a_copy():
    test = " ".join(f"w{i}" for i in range(30))
    assert not overlaps(" ".join(f"w{i}" for i in range(5, 5 + NGRAM - 1)), index_ngrams([test]))
    assert not overlaps("anything at all", index_ngrams([]))
