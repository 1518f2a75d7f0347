"""How a TeacherClient talks to its teacher: one options object, built in one place from params' `teacher`."""

from __future__ import annotations

from dataclasses import dataclass, field

from baldistill.core.params import Teacher
from baldistill.teacher.spending import Price
from baldistill.teacher.transport import RetryPolicy


@dataclass(frozen=True)
class ClientOptions:
    """teacher.model, .concurrency, .timeout, .max_retries, .api_key_env, .price, .mode,
    .batch_poll_seconds, .rpm and .tpm; `backoff` and `max_backoff` are the retry delays
    (seconds: the first, doubling and jittered, and the most)."""

    model: str
    concurrency: int = 1
    timeout: float = 120.0
    max_retries: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    api_key_env: str = "OPENAI_API_KEY"
    price: Price = field(default_factory=Price)
    batch_factor: float = 0.5
    mode: str = "sync"
    batch_poll_seconds: float = 30.0
    rpm: int | None = None
    tpm: int | None = None

    @classmethod
    def from_teacher(cls, teacher: Teacher, backoff: float = 0.5) -> ClientOptions:
        return cls(
            model=teacher.model,
            concurrency=teacher.concurrency,
            timeout=teacher.timeout,
            max_retries=teacher.max_retries,
            backoff=backoff,
            api_key_env=teacher.api_key_env,
            price=Price(teacher.price.input_per_1m, teacher.price.output_per_1m),
            batch_factor=teacher.price.batch_factor,
            mode=teacher.mode,
            batch_poll_seconds=teacher.batch_poll_seconds,
            rpm=teacher.rpm,
            tpm=teacher.tpm,
        )

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff, self.max_backoff)

    @property
    def paid_price(self) -> Price:
        """What an answer costs: teacher.price, times batch_factor for every answer in Batch mode."""
        return self.price.scaled(self.batch_factor) if self.mode == "batch" else self.price

    @property
    def claim_lease(self) -> float:
        """How long a claim holds where liveness cannot be checked (a claimant on another
        host): as long as one request can take, every retry and its wait included."""
        return (self.timeout + self.max_backoff) * (self.max_retries + 1)
