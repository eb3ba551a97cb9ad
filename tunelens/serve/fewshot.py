"""Few-shot examples per request: the server's default K, a request's own `few_shot`, retrieval, and where
the examples go (before the request in the model's chat format, or as earlier messages to an upstream)."""

from __future__ import annotations

from tunelens.errors import UserError
from tunelens.retrieval.fewshot import Example, injected, nearest_examples, require_responses
from tunelens.serve.schemas import APIError
from tunelens.inspect.context_check import check_context


class FewShotServing:
    """The examples a request is shown: K from the request (or the server's default) nearest training pairs."""

    def __init__(self, default_k: int = 0, gate=None):
        self.default_k, self.gate = default_k, gate
        # Why this server cannot show examples, for a 400.
        self.problem = "this server has no few-shot index: start it with --few-shot-index DIR (or --gate DIR)"
        if gate is not None:
            try:
                self.problem = require_responses(gate)  # None: it has examples to show
            except UserError as err:
                self.problem = str(err)
        if default_k > 0 and self.problem:
            raise UserError(f"--few-shot {default_k}: {self.problem}")

    def k_for(self, asked: int | None, chat: bool) -> int:
        """How many examples this request gets; a 400 when it asks for examples this server cannot show."""
        if not chat:
            if asked:  # a completion prompt is raw text: there is no chat turn to put an example in
                raise APIError(400, "few_shot: examples are shown as earlier chat turns; use /v1/chat/completions",
                               param="few_shot", code="invalid_value")
            return 0  # the server's default applies to chat requests only
        k = self.default_k if asked is None else asked
        if k > 0 and self.problem:
            raise APIError(400, f"few_shot: {self.problem}", param="few_shot", code="invalid_value")
        return k

    def retrieve(self, instruction: str, k: int) -> list[Example]:
        """The K nearest pairs, least similar first (runs on a worker thread: the embedder is CPU-bound)."""
        return nearest_examples(self.gate, instruction, k) if k > 0 else []

    def check(self, query: str, examples: list[Example]) -> dict:
        """tunelens.inspect.context_check's verdict on the examples about to be shown (a worker thread: it embeds)."""
        return check_context(query, examples, gate=self.gate).to_dict()


def reported(routing: dict, k: int, examples: list[Example], checked: dict | None = None) -> dict:
    """The response's `tunelens` field: the route, plus the examples shown when the request had any asked,
    plus the context check's verdict on them when the request asked for it."""
    found = {**routing, "few_shot": injected(examples)} if k > 0 else routing
    return {**found, "context_check": checked} if checked is not None else found


def with_example_messages(messages: list[dict], examples: list[Example]) -> list[dict]:
    """An upstream chat with the examples as earlier user/assistant messages, after any system messages."""
    first = next((i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")), len(messages))
    shown = [{"role": role, "content": text} for e in examples
             for role, text in (("user", e.instruction), ("assistant", e.response))]
    return messages[:first] + shown + messages[first:]
