"""How tokens are shown: their text in context, their exact bytes, and probabilities as people read them.

Shared by `trace`, `compare` (tables, HTML) and `serve` (OpenAI's `token`/`bytes` logprob fields).
"""

from __future__ import annotations

import os
from functools import lru_cache

# Stored probabilities keep 6 significant digits: enough for any display, and files stay small.
_DIGITS = 6


def round_prob(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


def token_pieces(tokenizer, ids: list[int], context: int = 4) -> list[str]:
    """The text each token adds, so that the pieces join to the decoded sequence.

    Decoding a token alone can differ from its contribution in context (a leading-space marker, a
    multi-byte character split over tokens), so a piece is the difference of two decodings that start
    `context` tokens earlier. A token that ends inside a character adds "" and the token completing the
    character carries it. Plain equivalent: decode(ids[:i+1])[len(decode(ids[:i])):], which is quadratic.
    """
    pieces, emitted = [], 0  # tokens before `emitted` have had their text handed out
    for end in range(1, len(ids) + 1):
        start = max(0, emitted - context)
        before = tokenizer.decode(ids[start:emitted], skip_special_tokens=False)
        now = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        if now.endswith("\ufffd") and end < len(ids):
            pieces.append("")
            continue
        # A decoder that rewrites earlier text (space clean-up) still advances by what is new.
        pieces.append(now[len(os.path.commonprefix([before, now])):])
        emitted = end
    return pieces


def decoded_tokens(tokenizer, ids) -> dict[int, str]:
    """Each distinct id decoded on its own, in one batch call."""
    unique = sorted(set(int(i) for i in ids))
    return dict(zip(unique, tokenizer.batch_decode([[i] for i in unique], skip_special_tokens=False)))


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted: byte-level BPE pieces are spelt in it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def _is_byte_level(tokenizer) -> bool:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    return "ByteLevel" in type(decoder).__name__ or "ByteLevel" in repr(decoder)


def token_bytes(tokenizer, token_id: int, text: str) -> list[int]:
    """The token's exact UTF-8 bytes (OpenAI's `bytes`): a token can hold part of a character."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str):
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # sentencepiece byte fallback
            return [int(piece[3:5], 16)]
        if "\ufffd" in text and _is_byte_level(tokenizer):
            alphabet = _byte_level_alphabet()
            if all(ch in alphabet for ch in piece):
                return [alphabet[ch] for ch in piece]
    return list(text.encode("utf-8"))


def prob_color(prob: float) -> str:
    """Background colour of a token by its probability: red (unlikely) through yellow to green (sure)."""
    hue = 120 * max(0.0, min(1.0, prob))
    return f"hsl({hue:.0f}, 75%, 82%)"


def show_token(text: str) -> str:
    """A token as it reads in a table: newlines, tabs and other invisible characters escaped."""
    if text == "":
        return "∅"
    escapes = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(escapes.get(ch, ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in text)


def pct(prob: float) -> str:
    """55%, 3.2%, 0.041%, <0.001%: whole percents when large, two significant digits when small."""
    value = 100 * prob
    if value >= 10 or value == 0:
        return f"{value:.0f}%"
    if value >= 1:
        return f"{value:.1f}%"
    return f"{value:.2g}%" if value >= 0.001 else "<0.001%"
