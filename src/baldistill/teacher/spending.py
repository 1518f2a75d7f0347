"""The hard dollar cap (`budget.max_usd`): reserve each attempt's worst case, settle to its real cost.

A provider bills every attempt that reaches its model, so before each attempt
is sent (a retry included) its worst-case cost is reserved: an upper bound on
its prompt tokens plus its max_tokens, at teacher.price. An attempt whose
reservation would pass the cap waits while others are in flight (their
settlement may free room) and is refused, with one line, once nothing is in
flight. When the server answers with its usage the reservation becomes that
real cost (the server's own token counts); an error status frees it (nothing
billed); an attempt whose fate stays unknown (a timeout, a dropped connection)
keeps its worst case for good. So what the provider can bill never passes the
cap, and the cap binds what was paid, not guesses.

The prompt bound must hold for any teacher without knowing its tokenizer:
byte-level BPE tokenizers (GPT, Qwen, Llama 3) never make more tokens than the
text has UTF-8 bytes, and a chat template adds its role markers and, for some
models, a default system prompt (Qwen's is about 20 tokens); TEMPLATE_TOKENS
covers both generously. `baldistill plan` counts with the real tokenizer; the
cap only needs a bound that is never below the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from baldistill.core.errors import BaldistillError

TEMPLATE_TOKENS = 64  # chat-template markers and a default system prompt, per request
MESSAGE_TOKENS = 8  # role markers per message


@dataclass(frozen=True)
class Price:
    """USD per million prompt and completion tokens."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6

    def scaled(self, factor: float) -> Price:
        """This price times `factor` (the Batch API's discount)."""
        return Price(self.input_per_1m * factor, self.output_per_1m * factor)


def message_bytes(messages: Sequence[dict]) -> int:
    """UTF-8 bytes of a chat request's message contents (what token bounds and estimates start from)."""
    return sum(len(str(m.get("content", "")).encode("utf-8")) for m in messages)


def prompt_token_bound(messages: Sequence[dict]) -> int:
    """Tokens a chat request's prompt can take at most, for any byte-level BPE tokenizer."""
    return TEMPLATE_TOKENS + MESSAGE_TOKENS * len(messages) + message_bytes(messages)


def worst_case_usd(messages: Sequence[dict], max_tokens: int, price: Price) -> float:
    return price.cost(prompt_token_bound(messages), max_tokens)


class DollarCap:
    """What a step may still spend: `limit` less what the run spent before it
    (`spent`), less the reservations of requests in flight. `limit` None: no cap."""

    def __init__(self, limit: float | None, spent: float = 0.0):
        self.limit, self.spent, self.reserved = limit, spent, 0.0
        self.holding = 0  # reservations outstanding (counted, not read off a float sum)

    def fits(self, amount: float) -> bool:
        return self.limit is None or self.spent + self.reserved + amount <= self.limit + 1e-12

    def reserve(self, amount: float) -> bool:
        """Hold `amount` for a request about to be sent; False (nothing held) if it would pass the cap."""
        if not self.fits(amount):
            return False
        self.reserved += amount
        self.holding += 1
        return True

    def settle(self, reserved: float, actual: float) -> None:
        """The attempt's bill is known (`actual`), or will never be (`actual` = `reserved`)."""
        self.reserved = max(0.0, self.reserved - reserved) if self.holding > 1 else 0.0
        self.holding -= 1
        self.spent += actual

    def release(self, reserved: float) -> None:
        """The attempt was refused by the server (or never sent): nothing was billed."""
        self.reserved = max(0.0, self.reserved - reserved) if self.holding > 1 else 0.0
        self.holding -= 1

    def refusal(self, amount: float, paid: int, asked: int) -> BaldistillError:
        return BaldistillError(
            f"budget.max_usd: {asked - paid} of {asked} teacher request(s) not answered: the next may cost up to "
            f"${amount:.6f} and "
            f"${self.spent:.6f} of the ${self.limit:.6f} cap is spent; raise budget.max_usd "
            "(answers paid so far are kept)"
        )
