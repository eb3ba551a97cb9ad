"""Stop strings, matched in time linear in the generated text, however long the stop strings are."""

from __future__ import annotations


class _PrefixMatcher:
    """Knuth-Morris-Pratt over one stop string, fed one character at a time. `state` is the longest prefix of
    the stop string that ends the text fed so far (all of it: a match). The failure table is built only as
    far as `state` has reached, so a 240 KB stop string costs nothing beyond the text generated."""

    def __init__(self, stop: str):
        self.stop, self.state, self.fail = stop, 0, [0]

    def _extend_fail(self, upto: int) -> None:
        stop, fail = self.stop, self.fail
        while len(fail) <= upto:
            i, k = len(fail), fail[-1]
            while k > 0 and stop[i] != stop[k]:
                k = fail[k - 1]
            fail.append(k + 1 if stop[i] == stop[k] else k)

    def feed(self, char: str) -> bool:
        """Advance by one character; True when the whole stop string has just been seen."""
        stop, q = self.stop, self.state
        if q == len(stop):  # already matched: only the first occurrence counts
            return False
        while q > 0 and stop[q] != char:
            q = self.fail[q - 1]
        self.state = q = q + (stop[q] == char)
        if q < len(stop):
            self._extend_fail(q)
        return q == len(stop)


class StopText:
    """Token ids in, safe text deltas out: text that could still begin a stop string is held back. Each new
    character is fed once to a matcher per stop string. Plain equivalent: decode all ids at the end and cut
    at the first stop string; the deltas always concatenate to exactly that text (a test checks it)."""

    def __init__(self, tokenizer, stops: tuple[str, ...]):
        self.tokenizer, self.stops = tokenizer, tuple(dict.fromkeys(s for s in stops if s))
        self.ids: list[int] = []
        self.sent, self.text = 0, ""
        self.cut: int | None = None  # where the earliest stop string found so far starts
        self._restart()

    def _restart(self) -> None:
        self.matchers = [_PrefixMatcher(s) for s in self.stops]
        self.fed = 0

    def push(self, token_id: int) -> tuple[str, bool]:
        """The new text that is safe to send, and whether a stop string has been reached."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return "", False
        if not text.startswith(self.text[:self.fed]):  # a decoder that rewrote earlier text: match again
            self._restart()
        self.text = text
        for position, char in enumerate(text[self.fed:], self.fed):
            for matcher in self.matchers:
                if matcher.feed(char):
                    start = position + 1 - len(matcher.stop)
                    self.cut = start if self.cut is None else min(self.cut, start)
        self.fed = len(text)
        if self.cut is not None:
            return self._advance(self.cut), True
        return self._advance(len(text) - max((m.state for m in self.matchers), default=0)), False

    def flush(self) -> str:
        return self._advance(len(self.text))

    def _advance(self, end: int) -> str:
        delta = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta
