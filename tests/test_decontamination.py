"""13-gram decontamination and the synthetic-input checks: pure rules, property-tested."""

from hypothesis import given
from hypothesis import strategies as st

from baldistill.core.decontamination import NGRAM, index_ngrams, overlaps
from baldistill.core.synthetic_inputs import ECHO_NGRAM, MIN_INPUT_WORDS, input_problem

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


# ---- synthetic inputs that are no real example (core.synthetic_inputs) ----------

INSTRUCTIONS = (
    "You are provided with a dataset named R52. Please write a short news story with the topic copper and give "
    "the step-by-step rationale. Write it exactly in this format: Input: <the news story>"
)
STORY = "Phelps Dodge raised its refined copper price by one cent to 68 cents a pound, effective immediately."


@given(st.sampled_from(["<news story>", "<the news story>", "[news story]", "{input}", "<insert a story here>"]))
def test_a_template_slot_is_a_placeholder(slot):
    assert input_problem(slot, INSTRUCTIONS) == "placeholder"
    assert input_problem(f"Copper: {slot}", INSTRUCTIONS) == "placeholder"


def test_a_bracketed_ticker_inside_a_story_is_text():
    assert input_problem(f"ENERGY GIANT <EGC> EXPANDS. {STORY}", INSTRUCTIONS) is None
    assert input_problem(STORY, INSTRUCTIONS) is None


@given(st.integers(min_value=0, max_value=10))
def test_eight_words_of_the_instructions_in_a_row_echo_the_prompt(start):
    words = INSTRUCTIONS.split()[start : start + ECHO_NGRAM]
    assert input_problem(f"{STORY} {' '.join(words)}", INSTRUCTIONS) == "echoes_prompt"
    assert input_problem(f"{STORY} {' '.join(words[:-1])}", INSTRUCTIONS) is None


@given(st.lists(st.sampled_from(["copper", "prices", "rise", "news", "mine"]), max_size=MIN_INPUT_WORDS - 1))
def test_fewer_than_five_words_of_its_own_is_no_input(words):
    assert input_problem(" ".join(words), INSTRUCTIONS) == "no_input"
    assert input_problem(" ".join([*words, *"zambia output fell sharply today".split()]), INSTRUCTIONS) is None
