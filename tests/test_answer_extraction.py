"""The student's own answer (its answer sentence; Zero-shot CoT's generated answer extraction) and the
likelihood second pass as a side reading, on the tiny real-tokenizer student."""

from __future__ import annotations

import pytest
import torch

from baldistill.core.answers import ANSWER_TRIGGER, extract_answer
from baldistill.core.rows import Row
from baldistill.prompts import load_prompts
from baldistill.student import answer_extraction as ax
from baldistill.student import likelihood as lk
from baldistill.student.encoding import build_prompt, encode_prompt
from baldistill.student.generation import generate
from baldistill.student.model import load_student

LABELS = ["earn", "acq", "money-fx", "nat-gas", "copper", "copper-ore", "gold", "crude"]
PROMPTS = load_prompts("classification", LABELS)
# One-token and multi-token labels, and one that is a prefix of another.
STORIES = [
    "Shr profit 12 cts vs 10 cts net rev 4.5 mln",
    "The bank of england cut its base lending rate as sterling fell against the dollar " * 3,
]
REASONINGS = ["The company reported higher profits for the quarter.", "Step 1: the story is about rates and"]


@pytest.fixture(scope="module")
def tiny(tiny_student_dir):
    return load_student(tiny_student_dir)


def prompt_of(tokenizer, story: str) -> str:
    return build_prompt(tokenizer, PROMPTS, story, 64)


@torch.inference_mode()
def naive_logprobs(model, tokenizer, prefix: str, continuations: list[str]) -> list[float]:
    """The reference: one full forward pass over prefix + continuation per candidate."""
    prefix_ids = encode_prompt(tokenizer, prefix)
    scores = []
    for text in continuations:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        logits = model(input_ids=torch.tensor([prefix_ids + ids])).logits[0, len(prefix_ids) - 1 : -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores.append(sum(float(logp[k, t]) for k, t in enumerate(ids)))
    return scores


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


# ---- scoring: exact, whatever the batching ------------------------------------


@pytest.mark.parametrize("tree", [True, False], ids=["tree_mask", "repeated_cache"])
def test_cached_scores_equal_a_full_forward_pass(tiny, tree):
    model, tokenizer = tiny
    prefixes = [ax.second_pass_prompt(prompt_of(tokenizer, s), r) for s, r in zip(STORIES, REASONINGS)]
    candidates = [[lk.continuation(label) for label in LABELS], [" A.", " B.", " money-supply."]]
    got = lk.continuation_logprobs(model, tokenizer, prefixes, candidates, progress=False, tree=tree)
    for prefix, conts, scores in zip(prefixes, candidates, got):
        reference = naive_logprobs(model, tokenizer, prefix, conts)
        assert scores == pytest.approx(reference, abs=1e-4)
        assert argmax(scores) == argmax(reference)


@pytest.mark.parametrize("tree", [True, False], ids=["tree_mask", "repeated_cache"])
def test_chunked_scoring_is_exact_too(tiny, tree):
    """Chunks (each on its own copy of the prefix cache) give the same scores as one pass."""
    model, tokenizer = tiny
    prefix = ax.second_pass_prompt(prompt_of(tokenizer, STORIES[0]), REASONINGS[0])
    prefix_ids = encode_prompt(tokenizer, prefix)
    cands = [tokenizer(lk.continuation(label), add_special_tokens=False).input_ids for label in LABELS]
    whole = lk._row_logprobs(model, prefix_ids, cands, tree)
    chunked = lk._row_logprobs(model, prefix_ids, cands, tree, limit=2 if tree else len(prefix_ids) + 6)
    assert chunked == pytest.approx(whole, abs=1e-5)


def test_chunks_keep_order_and_limit():
    assert lk._chunks([1, 1, 3, 1, 5, 1], 3) == [[0, 1], [2], [3], [4], [5]]
    assert lk._chunks([2, 2, 2], 10) == [[0, 1, 2]]


def test_continuation_tokens_are_fixed_and_match_the_joined_text(tiny):
    """A leading space belongs to the continuation, and the ids are what the joined text would give."""
    _, tokenizer = tiny
    prefix = ax.second_pass_prompt(prompt_of(tokenizer, STORIES[0]), REASONINGS[0])
    assert prefix.endswith(" " + ANSWER_TRIGGER)
    ids = tokenizer(lk.continuation("earn"), add_special_tokens=False).input_ids
    assert [tokenizer.decode([i]) for i in ids] == [" earn", "."]
    for label in LABELS:
        text = lk.continuation(label)
        joined = encode_prompt(tokenizer, prefix + text)
        assert joined == encode_prompt(tokenizer, prefix) + tokenizer(text, add_special_tokens=False).input_ids


# ---- routing --------------------------------------------------------------------


def read(tiny, stories, outputs, task="classification", labels=LABELS, sets=None, **options):
    model, tokenizer = tiny
    prompts = [prompt_of(tokenizer, s) for s in stories]
    sets = sets if sets is not None else [ax.answer_set(task, labels)] * len(outputs)
    return ax.read_answers(model, tokenizer, prompts, outputs, task, labels, sets, 4, progress=False, **options)


def test_an_answer_sentence_is_taken_as_is(tiny):
    answers = read(tiny, STORIES, ["Profits rose. The answer is earn.", "Rates fell, so the answer is: **money-fx**"])
    assert answers == [ax.Answer("earn", "answer_sentence"), ax.Answer("money-fx", "answer_sentence")]


def test_without_an_answer_sentence_the_row_has_no_answer(tiny):
    outputs = ["I am not sure about this story", "The answer is unknown.", ""]
    answers = read(tiny, STORIES + STORIES[:1], outputs)
    assert answers == [ax.Answer(None, "none")] * 3


def test_the_second_pass_is_a_side_reading_of_the_likeliest_label_per_token(tiny):
    outputs = ["I am not sure about this story", "The answer is unknown.", ""]
    answers = read(tiny, STORIES + STORIES[:1], outputs, second_pass=True)
    assert [(a.pred, a.route) for a in answers] == [(None, "none")] * 3  # never the row's answer
    assert all(a.second_pass in LABELS for a in answers)
    model, tokenizer = tiny
    # The label with the highest mean log-prob per token after the reasoning and the trigger.
    prefix = ax.second_pass_prompt(prompt_of(tokenizer, STORIES[0]), outputs[0])
    conts = [lk.continuation(label) for label in LABELS]
    sums = naive_logprobs(model, tokenizer, prefix, conts)
    sizes = [len(tokenizer(c, add_special_tokens=False).input_ids) for c in conts]
    assert answers[0].second_pass == LABELS[argmax([s / n for s, n in zip(sums, sizes)])]
    summed = lk.pick_answers(model, tokenizer, [prefix], [LABELS], normalise=False, progress=False)
    assert summed == [LABELS[argmax(sums)]]


def test_an_echoed_label_is_not_credited(tiny):
    """A label the input and output mention is never the answer; the second pass, which must pick
    some label, picks another one for at least one such row, where the old fallback credited it."""
    for label in LABELS:
        story = f"Markets watched {label} closely today."
        output = f"The story talks about {label} and other things"
        (answer,) = read(tiny, [story], [output], second_pass=True)
        assert answer.pred is None and answer.route == "none"
        if answer.second_pass != label:
            break
    else:
        pytest.fail("the tiny student's second pass chose every echoed label")
    assert extract_answer(output, "classification", LABELS) == label  # what the old reading credited
    assert ax.from_answer_sentence(output, "classification", LABELS) is None
    assert answer.second_pass in LABELS


def test_multiple_choice_second_pass_picks_one_of_the_rows_letters(tiny):
    rows = [
        Row(id="q", domain="arc", input="Which is a metal? A. wood B. iron", label="B", meta={"choices": ["A", "B"]})
    ]
    sets = [ax.answer_set("multiple_choice", ["A", "B", "C", "D", "E"], rows[0])]
    assert sets == [["A", "B"]]
    letters = ["A", "B", "C", "D", "E"]
    answers = read(tiny, [rows[0].input], ["Iron conducts heat"], "multiple_choice", letters, sets, second_pass=True)
    assert answers[0].route == "none" and answers[0].second_pass in ("A", "B")


@pytest.mark.parametrize(
    "task,labels,stories", [("math", [], ["What is 2 + 3?", "What is 7 * 6?"]), ("classification", LABELS, STORIES)]
)
def test_zero_shot_cot_answer_extraction_is_generated_and_parsed(tiny, task, labels, stories):
    """Kojima et al.'s second step: after the reasoning and the trigger the student writes on, and
    what it writes is read like any answer sentence; no second pass runs again on those rows."""
    model, tokenizer = tiny
    outputs = ["It is clear. The answer is 5." if task == "math" else "The answer is earn.", "Seven sixes are"]
    sets = [ax.answer_set(task, labels)] * 2
    answers = read(tiny, stories, outputs, task, labels, sets, extraction=True, second_pass=task == "math")
    assert answers[0] == ax.Answer("5" if task == "math" else "earn", "answer_sentence")
    prefix = ax.second_pass_prompt(prompt_of(tokenizer, stories[1]), outputs[1])
    (more,) = generate(model, tokenizer, [prefix], ax.SECOND_PASS_MAX_NEW_TOKENS, 1, progress=False)
    expected = ax.from_answer_sentence(ANSWER_TRIGGER + more.text, task, labels)
    assert answers[1] == ax.Answer(expected, "answer_extraction" if expected is not None else "none")


# ---- pure parts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "output,expected",
    [
        ("It reports profits.", "P\nIt reports profits. The answer is"),
        ("  It reports profits  \n", "P\nIt reports profits. The answer is"),  # cut mid-sentence: closed
        ('He said "profits rose."', 'P\nHe said "profits rose." The answer is'),
        ("Profits rose. The answer is", "P\nProfits rose. The answer is"),  # cut right after its own trigger
        ("Profits rose. **Answer:**", "P\nProfits rose. The answer is"),
        ("Profits rose.<|im_end|>junk", "P\nProfits rose. The answer is"),
        ("", "P\nThe answer is"),
    ],
)
def test_second_pass_prompt(output, expected):
    assert ax.second_pass_prompt("P\n", output, "<|im_end|>") == expected


def test_answer_sets():
    row = Row(id="r", domain="d", input="x", label="A", meta={"choices": ["A", "B", "C"]})
    assert ax.answer_set("classification", LABELS) == LABELS
    assert ax.answer_set("classification", []) is None
    assert ax.answer_set("multiple_choice", ["A", "B", "C", "D"], row) == ["A", "B", "C"]
    assert ax.answer_set("multiple_choice", ["A", "B", "C", "D"]) == ["A", "B", "C", "D"]
    assert ax.answer_set("multiple_choice", ["x", "y"]) == ["A", "B", "C", "D", "E"]
    texts = Row(id="r", domain="d", input="x", label="B", meta={"choices": ["wood", "iron"]})
    assert ax.answer_set("multiple_choice", [], texts) == ["A", "B"]
    assert ax.answer_set("math", []) is None and ax.answer_set("abstractive_qa", []) is None


def test_from_answer_sentence_is_strict():
    assert ax.from_answer_sentence("It is about crude oil output", "classification", LABELS) is None
    assert ax.from_answer_sentence("Crude rose. The answer is crude.", "classification", LABELS) == "crude"
    assert ax.from_answer_sentence("(B) iron", "multiple_choice", LABELS) is None
    assert ax.from_answer_sentence("The answer is (B).", "multiple_choice", LABELS) == "B"
