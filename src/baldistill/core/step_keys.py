"""The `teacher` keys each teacher step reads, and a view of the section that holds only them.

dvc.yaml lists a step's params leaf by leaf, so that a key the step never reads
re-runs nothing: synthesis never reads `teacher.on_mismatch`, annotation never
reads `teacher.synth_temperature`. The view keeps that list true at run time:
reading any other key through it raises, so library code that starts reading a
new key fails the step's tests at once instead of going stale in dvc.yaml
(tests/support/pipeline_contract.py reads these tuples).
"""

from __future__ import annotations

from collections.abc import Sequence

# How the client reaches and pays the teacher (teacher/options.py, endpoint.py, server.py).
CONNECTION = (
    "base_url",
    "model",
    "api_key_env",
    "concurrency",
    "timeout",
    "max_retries",
    "price",
    "local",
    "mode",
    "batch_poll_seconds",
    "rpm",
    "tpm",
)
ANNOTATE = (*CONNECTION, "max_tokens", "on_mismatch", "gold_in_prompt")
SYNTHESIZE = (*CONNECTION, "synth_max_tokens", "synth_temperature", "demonstrations")


class SectionView:
    """The keys `keys` of a params section, read like the section itself; any other key raises."""

    def __init__(self, section: object, keys: Sequence[str], name: str) -> None:
        object.__setattr__(self, "_values", {key: getattr(section, key) for key in keys})
        object.__setattr__(self, "_name", name)

    def __getattr__(self, key: str):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(
                f"{self._name}.{key} is not among the keys this step lists (core/step_keys.py, dvc.yaml)"
            ) from None

    def __setattr__(self, key: str, value) -> None:
        raise AttributeError(f"{self._name} is read-only")


def teacher_keys(section: object, keys: Sequence[str]) -> SectionView:
    """`section` (params' `teacher`) seen through `keys` only (ANNOTATE or SYNTHESIZE)."""
    return SectionView(section, keys, "teacher")
