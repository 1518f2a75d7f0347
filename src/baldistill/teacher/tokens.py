"""Prompt tokens of a teacher request, counted the way the teacher counts them.

The local teacher (teacher.base_url == "local") is llama-cpp-python's server
on a GGUF, so its tokenizer is on this machine: `GgufCounter` renders the chat
messages with the GGUF's own chat template (as the server does when the
template is not one it knows by name) and tokenizes the result with special
tokens parsed, which is the `prompt_tokens` the server reports. A remote
teacher's tokenizer is not available offline (tiktoken is not a dependency),
so `approx_tokens` is a stated approximation.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from baldistill.core import assets
from baldistill.core.errors import BaldistillError
from baldistill.teacher.server import LOCAL

# OpenAI's published rule of thumb: about 4 characters of English text per
# token; its chat format adds about 3 tokens per message and 3 to prime the reply.
BYTES_PER_TOKEN = 4
PER_MESSAGE = 3
PER_REPLY = 3
APPROXIMATION = (
    f"approximation: ceil(UTF-8 bytes / {BYTES_PER_TOKEN}) per message + {PER_MESSAGE} per message "
    f"+ {PER_REPLY} per request"
)


class TokenCounter(Protocol):
    """Counts the prompt tokens of one request's chat messages."""

    description: str  # which counting this is, printed with every plan

    def count(self, messages: Sequence[dict]) -> int: ...


def approx_tokens(messages: Sequence[dict]) -> int:
    """Prompt tokens of `messages` by the approximation in APPROXIMATION."""
    body = sum(math.ceil(len(str(m.get("content", "")).encode("utf-8")) / BYTES_PER_TOKEN) for m in messages)
    return body + PER_MESSAGE * len(messages) + PER_REPLY


@dataclass(frozen=True)
class ApproxCounter:
    description: str = APPROXIMATION

    def count(self, messages: Sequence[dict]) -> int:
        return approx_tokens(messages)


class GgufCounter:
    """The GGUF's vocabulary only (loads in under a second) and its chat template."""

    def __init__(self, model_path: Path, name: str):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # llama.cpp logs a context-size warning on stderr even with verbose=False.
        with contextlib.redirect_stderr(io.StringIO()):
            self._llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        template = self._llama.metadata.get("tokenizer.chat_template")
        # llama_cpp renders a template it knows by name (chatml, llama-3...) its own way, not by Jinja.
        if not template or self._llama.chat_format != "chat_template.default":
            raise BaldistillError(f"{model_path}: the server would not render the GGUF's own chat template")
        # The same formatter, tokens and stop id the server builds from the GGUF's metadata.
        eos, bos = self._llama.token_eos(), self._llama.token_bos()
        self._format = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos),
            bos_token=self._token_text(bos),
            stop_token_ids=[eos],
        )
        self.description = f"tokenizer: {name} GGUF"

    def _token_text(self, token: int) -> str:
        return self._llama._model.token_get_text(token) if token != -1 else ""

    def count(self, messages: Sequence[dict]) -> int:
        rendered = self._format(messages=list(messages))
        # As llama_cpp's chat handler: add BOS only if the template did not, and parse
        # special tokens (<|im_start|> is one token, not eight).
        text = rendered.prompt.encode("utf-8")
        return len(self._llama.tokenize(text, add_bos=not rendered.added_special, special=True))


def counter_for(teacher) -> TokenCounter:
    """The counter for `teacher` (params.teacher): its GGUF when it is local and
    set up, else the approximation, which says why in its description."""
    if teacher.base_url != LOCAL:
        return ApproxCounter(f"{APPROXIMATION} (no offline tokenizer for {teacher.model})")
    try:
        return GgufCounter(assets.path_of(teacher.local.model_file), teacher.local.model_file)
    except BaldistillError as exc:
        return ApproxCounter(f"{APPROXIMATION} ({exc})")
    except ImportError:
        return ApproxCounter(f"{APPROXIMATION} (llama_cpp, which reads the local GGUF, is not installed)")
    except ValueError as exc:  # llama.cpp could not read the file
        return ApproxCounter(f"{APPROXIMATION} (cannot read the local GGUF: {exc})")
