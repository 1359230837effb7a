"""A CLIP BPE tokenizer for the miniature world's vocabulary.

CLIP's BPE splits a word into characters, the last one marked ``</w>`` (``"red" -> r, e, d</w>``), and
applies merges in rank order. A whole-word token ``"red</w>"`` is therefore only reachable through merges.
:func:`learn_merges` runs BPE training on the world's words (each counted once): repeatedly merge the most
frequent adjacent pair (ties broken alphabetically) until every word is one symbol. Replaying those
merges in rank order reproduces the training segmentation, so every world word becomes one token.

The vocabulary is CLIP's 256 byte characters, the same with ``</w>``, the merged symbols and
``<|startoftext|>``, ``<|endoftext|>``: any other text still tokenizes (down to characters).
"""

from __future__ import annotations

from collections import Counter

from transformers import CLIPTokenizer

from safediffusion.mini.anchors import MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
from safediffusion.mini.captions import world_words
from safediffusion.models.tiny import _bytes_to_unicode

MODEL_MAX_LENGTH = 32


def vocabulary_words() -> list[str]:
    """World words plus every word of the anchor phrases (sorted, unique)."""
    words = set(world_words())
    for phrase in MINI_SAFE_ANCHORS + MINI_UNSAFE_ANCHORS:
        words |= set(phrase.replace(",", " ").split())
    return sorted(words)


def _symbols(word: str) -> tuple[str, ...]:
    byte_map = _bytes_to_unicode()
    chars = [byte_map[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + "</w>",)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) that turn each of ``words`` into a single symbol."""
    segs = [_symbols(w) for w in words]
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seg in segs:
            for a, b in zip(seg, seg[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        new_segs = []
        for seg in segs:
            out: list[str] = []
            i = 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            new_segs.append(tuple(out))
        segs = new_segs


def build_mini_tokenizer(model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """The world's CLIPTokenizer: byte fallback + one token per vocabulary word (see module doc)."""
    chars = list(_bytes_to_unicode().values())
    merges = learn_merges(vocabulary_words())
    vocab_list = chars + [c + "</w>" for c in chars]
    seen = set(vocab_list)
    for a, b in merges:
        if a + b not in seen:
            vocab_list.append(a + b)
            seen.add(a + b)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
