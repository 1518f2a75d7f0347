"""Answer extraction on outputs shaped like what the teacher and student write."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldistill.core.answers import (
    ANSWER_TRIGGER,
    FINAL_ANSWER_SENTENCE,
    LABEL_ONLY_WORDS,
    answers_match,
    extract_answer,
    normalize_math,
    reasoning_words,
    restates_label,
)
from baldistill.core.errors import BaldistillError

R52 = ["earn", "acq", "crude", "nat-gas", "gas", "money-fx", "money-supply", "trade", "ship", "veg-oil", "cpi"]

CLASSIFICATION = [
    ("The story reports quarterly profits and dividends. The answer is earn.", "earn"),
    ("The answer is **Earn**.", "earn"),
    ('The story is about a takeover bid. The answer is "acq".', "acq"),
    ("... falls under the topic of 'nat-gas'. The answer is nat-gas.", "nat-gas"),
    ("It mentions gas prices but the answer is: nat-gas", "nat-gas"),
    ("It is about petrol. The answer is gas.", "gas"),
    ("Exchange rates moved sharply.\n\nThe answer is `money-fx`", "money-fx"),
    ("The answer is money-supply, since M1 grew.", "money-supply"),
    # The last "answer is" wins over an earlier one.
    ("One might think the answer is trade, but tankers dominate. The answer is ship.", "ship"),
    # No answer phrase: the last label mentioned.
    ("This story concerns crude oil output, so the topic is crude", "crude"),
    ("Topic: CPI", "cpi"),
    # Labels only as parts of longer words do not count.
    ("The shipment was delayed; traders waited.", None),
    ("The answer is unknown.", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CLASSIFICATION)
def test_classification(text, expected):
    assert extract_answer(text, "classification", R52) == expected


def test_classification_returns_label_spelling():
    assert extract_answer("The answer is NAT-GAS.", "classification", ["Nat-Gas", "Gas"]) == "Nat-Gas"


def test_classification_without_labels_returns_text():
    assert extract_answer("The answer is Sports.", "classification") == "Sports"


MULTIPLE_CHOICE = [
    ("Metals conduct heat well. The answer is B.", "B"),
    ("The answer is (C).", "C"),
    ("The answer is C) a magnet", "C"),
    ("The answer is: **D**", "D"),
    ("The answer is option E.", "E"),
    ("The answer is b.", "B"),
    ("The answer is A. The other choices are wrong.", "A"),
    ("The answer is a metal spoon (B).", "B"),
    ("Rocks are heavy. Answer: A", "A"),
    ("B", "B"),
    ("(D) the sun", "D"),
    ("A plant needs sunlight to grow, so it makes food.", None),
    ("The answer is none of them.", None),
]


@pytest.mark.parametrize("text,expected", MULTIPLE_CHOICE)
def test_multiple_choice(text, expected):
    assert extract_answer(text, "multiple_choice") == expected


MATH = [
    ("14^2 + 8^2 = 260, so d = 2\\sqrt{65}. The answer is: $2\\sqrt{65}$.", "2\\sqrt{65}"),
    ("The answer is 42.", "42"),
    ("So x = 3.5. The answer is 3.5.", "3.5"),
    ("The answer is -7", "-7"),
    ("The answer is 1,000 dollars.", "1000"),
    ("The answer is $\\dfrac{1}{2}$.", "\\frac{1}{2}"),
    ("Thus the result is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
    ("First \\boxed{1}, then corrected: \\boxed{x^{2}+1}", "x^{2}+1"),
    ("The answer is \\boxed{12}. This is because 3*4=12.", "12"),
    ("The answer is 5. Because 2+3=5.", "5"),
    ("The answer is (1, 2).", "(1,2)"),
    ("The answer is $90^\\circ$.", "90"),
    ("I could not solve it.", None),
]


@pytest.mark.parametrize("text,expected", MATH)
def test_math(text, expected):
    assert extract_answer(text, "math") == expected


ABSTRACTIVE = [
    ("The passage says she moved to Paris. The answer is Paris.", "Paris"),
    ('The answer is: "the old lighthouse"', "the old lighthouse"),
    ("The answer is Dr. Watson. He was there the whole time.", "Dr. Watson"),
    ("The answer is the U.S. Army", "the U.S. Army"),
    ("The answer is **three years**.\nExtra notes.", "three years"),
    ("No phrase here at all", None),
]


@pytest.mark.parametrize("text,expected", ABSTRACTIVE)
def test_abstractive_qa(text, expected):
    assert extract_answer(text, "abstractive_qa") == expected


MATCHES = [
    ("earn", "EARN", "classification", True),
    ("earn", "acq", "classification", False),
    ("B", "B", "multiple_choice", True),
    ("B", "(B)", "multiple_choice", True),
    ("B", "C", "multiple_choice", False),
    ("0.5", "\\frac{1}{2}", "math", True),
    ("\\frac12", "0.5", "math", True),
    ("2.0", "2", "math", True),
    ("1000", "1,000", "math", True),
    ("2\\sqrt{65}", "2 \\sqrt{65}", "math", True),
    ("3", "4", "math", False),
    ("The Old Lighthouse", "old lighthouse", "abstractive_qa", True),
    ("Paris", "London", "abstractive_qa", False),
    (None, "earn", "classification", False),
]


@pytest.mark.parametrize("pred,gold,task,expected", MATCHES)
def test_answers_match(pred, gold, task, expected):
    assert answers_match(pred, gold, task) is expected


def test_extract_then_match_round_trip():
    text = "Doubling 250 gives 500. The answer is $500$."
    assert answers_match(extract_answer(text, "math"), "500", "math")


def test_normalize_math_strips_text_units():
    assert normalize_math("\\text{ 5 } ") == "5"


def test_unknown_task_is_a_clear_error():
    with pytest.raises(BaldistillError, match="unknown task type"):
        extract_answer("The answer is 1.", "regression")


# ---- strict mode: only the answer sentence counts (evaluation) ----------------

STRICT = [
    # Read after the last answer sentence, as in lenient mode.
    ("Profits rose. The answer is earn.", "classification", R52, "earn"),
    ("One might think the answer is trade. The answer is **ship**.", "classification", R52, "ship"),
    ("It mentions gas prices but the answer is: nat-gas", "classification", R52, "nat-gas"),
    # No answer sentence: no "last label mentioned anywhere".
    ("This story concerns crude oil output, so the topic is crude", "classification", R52, None),
    ("Topic: CPI", "classification", R52, None),
    # An answer sentence without a label: not the label mentioned before it.
    ("The crude price fell. The answer is unknown.", "classification", R52, None),
    ("The answer is Sports.", "classification", None, "Sports"),
    ("The answer is (C).", "multiple_choice", None, "C"),
    ("The answer is a metal spoon (B).", "multiple_choice", None, "B"),
    ("Rocks are heavy. Answer: A", "multiple_choice", None, "A"),
    # No bare letter, no lone "(X)".
    ("B", "multiple_choice", None, None),
    ("(D) the sun", "multiple_choice", None, None),
    ("The answer is 42.", "math", None, "42"),
    ("The answer is \\boxed{12}. This is because 3*4=12.", "math", None, "12"),
    # No \boxed{} outside the answer sentence.
    ("Thus the result is $\\boxed{\\frac{3}{4}}$.", "math", None, None),
    ("The answer is Dr. Watson. He was there the whole time.", "abstractive_qa", None, "Dr. Watson"),
    ("No phrase here at all", "abstractive_qa", None, None),
    ("", "classification", R52, None),
]


@pytest.mark.parametrize("text,task,labels,expected", STRICT)
def test_strict_reads_only_the_answer_sentence(text, task, labels, expected):
    assert extract_answer(text, task, labels, strict=True) == expected


@pytest.mark.parametrize("text,task,labels,expected", STRICT)
def test_strict_agrees_with_lenient_whenever_it_answers(text, task, labels, expected):
    """Strict mode only takes answers away; what it reads, lenient mode reads the same."""
    if expected is not None:
        assert extract_answer(text, task, labels) == expected


def test_the_answer_trigger_is_the_answer_sentence():
    """What the second pass appends is what the extractors read: trigger + " label." is an answer."""
    assert FINAL_ANSWER_SENTENCE.fullmatch(ANSWER_TRIGGER)
    assert extract_answer(ANSWER_TRIGGER + " nat-gas.", "classification", R52, strict=True) == "nat-gas"
    assert extract_answer(ANSWER_TRIGGER + " C.", "multiple_choice", strict=True) == "C"
    assert extract_answer(ANSWER_TRIGGER + " 1,000.", "math", strict=True) == "1000"


# ---- rationales that only restate their label ---------------------------------

REASONING = st.lists(st.sampled_from(["oil", "output", "rose", "opec", "quota", "barrels", "prices", "cut"]))


@given(st.sampled_from(R52), st.sampled_from(["The correct topic is {}.", "The topic is {}.", "It is {}.", ""]))
def test_a_rationale_of_label_and_answer_sentences_restates_the_label(label, opening):
    rationale = f"{opening.format(label)} The answer is {label}.".strip()
    assert restates_label(rationale, label)
    assert reasoning_words(rationale, label) < LABEL_ONLY_WORDS


@given(st.sampled_from(R52), REASONING, REASONING)
def test_words_of_reasoning_count_and_answer_sentences_do_not(label, before, answer_words):
    reasoning = " ".join(before)
    rationale = f"{reasoning}. The answer is {label} {' '.join(answer_words)}."
    assert reasoning_words(rationale, label) == len(before)
    assert restates_label(rationale, label) == (len(before) < LABEL_ONLY_WORDS)


def test_the_smoke_teachers_echo_is_label_only_and_a_short_real_rationale_is_not():
    assert restates_label("The correct topic is earn. The answer is earn.", "earn")
    assert restates_label("The topic of this news story is nat-gas.\nThe answer is nat-gas.", "nat-gas")
    real = "The story reports quarterly net profit and revenue per share for the company. The answer is earn."
    assert not restates_label(real, "earn")
