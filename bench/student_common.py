"""Shared by the bench scripts: R52-like rows, model loading, timing, the command line.

The rows imitate R52 (Reuters news, lower-cased, digits stripped) at the
lengths the real pool has, without needing the data set installed.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from baldistill.prompts import load_prompts
from baldistill.student.encoding import build_prompt
from baldistill.student.model import load_student

# R52's 52 topics as Table 9 (a) of the paper lists them: the label set the student prompt shows.
R52_LABELS = (
    "copper, livestock, gold, money-fx, tea, ipi, trade, cocoa, iron-steel, reserves, zinc, nickel, ship, cotton, "
    "platinum, alum, strategic-metal, instal-debt, lead, housing, gnp, sugar, rubber, dlr, tin, interest, income, "
    "crude, coffee, jobs, meal-feed, lei, lumber, gas, nat-gas, veg-oil, orange, heat, wpi, cpi, earn, jet, potato, "
    "bop, money-supply, carcass, acq, pet-chem, grain, fuel, retail, cpu"
).split(", ")

R52_LIKE = [
    (
        "earn",
        "shr cts vs cts net mln vs mln revs mln vs mln note the company said results include a gain of mln dlrs from the sale of its consumer products unit",
    ),
    (
        "acq",
        "first union corp said it agreed to acquire florida national banks inc for about mln dlrs in cash and stock, subject to approval by regulators and shareholders of both companies",
    ),
    (
        "crude",
        "crude oil prices rose more than one dlr a barrel on the new york mercantile exchange after reports that opec members agreed to hold output at current levels through the end of the year, traders said",
    ),
    (
        "trade",
        "the united states trade deficit widened to bln dlrs in march from bln dlrs in february as imports of cars and oil rose faster than exports, the commerce department said",
    ),
    (
        "money-fx",
        "the bank of japan intervened in tokyo to buy dollars as the currency fell to a record low against the yen, dealers said, adding that the intervention had little lasting effect",
    ),
    (
        "interest",
        "citibank said it raised its prime lending rate to pct from pct, effective immediately, following similar moves by other major banks",
    ),
    (
        "grain",
        "the us agriculture department said it will offer export bonus wheat to algeria under the export enhancement program, the third such offer this year. the wheat is for shipment during the may to june period and bids are due on tuesday",
    ),
    (
        "ship",
        "dock workers in rotterdam extended their strike for a second week, leaving dozens of container vessels waiting outside the port and forcing shipping lines to divert cargo to antwerp and hamburg",
    ),
    (
        "coffee",
        "talks at the international coffee organization on reintroducing export quotas broke down without agreement, delegates said, sending robusta futures lower in london",
    ),
    ("gold", "gold fell two dlrs an ounce in quiet trading"),
    (
        "sugar",
        "the european community sold tonnes of white sugar at its weekly tender, traders said, at a maximum export rebate of european currency units per kilos, slightly above market expectations. brazil and cuba were expected to ship larger volumes next season",
    ),
    (
        "cocoa",
        "ivory coast cocoa arrivals at ports reached tonnes by the end of the week, up from a year ago, exporters said",
    ),
    (
        "tin",
        "the international tin council debt talks resumed in london with creditor banks and brokers seeking repayment of about mln stg owed since the collapse of the tin market, a council spokesman said. no progress was expected before the end of the month",
    ),
    (
        "copper",
        "phelps dodge corp said it raised its domestic refined copper price by one cent to cts a lb, effective immediately",
    ),
    (
        "jobs",
        "the us unemployment rate fell to pct in april from pct in march as employers added jobs in manufacturing and services, the labor department said in its monthly report",
    ),
    (
        "reserves",
        "taiwan foreign exchange reserves rose to a record bln us dlrs at the end of march, the central bank said, up from bln a month earlier on strong export earnings. economists expect pressure on the taiwan dollar to appreciate further",
    ),
]


def parser(description: str, repeat: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="smollm2-135m-instruct", help="student name or transformers path")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-input-tokens", type=int, default=256)
    p.add_argument(
        "--repeat", type=int, default=repeat, help="runs per method; the fastest counts (shared CPUs are noisy)"
    )
    return p


def setup(args: argparse.Namespace):
    """(model, tokenizer, prompts) for the first --rows R52-like rows (cycled)."""
    model, tokenizer = load_student(args.model)
    templates = load_prompts("classification", R52_LABELS)
    inputs = [R52_LIKE[i % len(R52_LIKE)][1] for i in range(args.rows)]
    prompts = [build_prompt(tokenizer, templates, x, args.max_input_tokens) for x in inputs]
    return model, tokenizer, prompts


@contextmanager
def timer(results: dict, name: str) -> Iterator[None]:
    """Keep the fastest of repeated timings of `name`: other jobs only ever add time."""
    start = time.perf_counter()
    yield
    results[name] = min(results.get(name, float("inf")), time.perf_counter() - start)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def machine() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
