import pytest

from safediffusion.mini.anchors import MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
from safediffusion.mini.tokenizer import build_mini_tokenizer, learn_merges, vocabulary_words


@pytest.fixture(scope="module")
def tok():
    return build_mini_tokenizer()


def test_every_world_word_is_one_token_and_round_trips(tok):
    """Except words mixing digits and letters: CLIP's pre-tokenizer splits them ("4k" -> "4", "k"), as it
    does for real CLIP."""
    for word in vocabulary_words():
        ids = tok(word, add_special_tokens=False).input_ids
        mixed = any(ch.isdigit() for ch in word) and any(ch.isalpha() for ch in word)
        assert len(ids) == (2 if mixed else 1), word
        assert tok.decode(ids).replace(" ", "") == word


def test_vocabulary_size(tok):
    merges = learn_merges(vocabulary_words())
    assert len(tok) == 512 + len({a + b for a, b in merges}) + 2
    assert tok.bos_token_id == len(tok) - 2 and tok.eos_token_id == len(tok) - 1


def test_unknown_words_fall_back_to_characters(tok):
    toks = tok.tokenize("zebra")
    assert len(toks) > 1 and "".join(toks).replace("</w>", "") == "zebra"
    assert tok.decode(tok("a zebra").input_ids, skip_special_tokens=True).strip() == "a zebra"


def test_anchor_phrases_tokenize_word_by_word(tok):
    for phrase in MINI_SAFE_ANCHORS + MINI_UNSAFE_ANCHORS:
        assert len(tok(phrase, add_special_tokens=False).input_ids) == len(phrase.split())
        ids = tok(phrase, padding="max_length", max_length=tok.model_max_length).input_ids
        assert len(ids) == tok.model_max_length == 32


def test_learn_merges_is_deterministic():
    assert learn_merges(["red", "green", "reed"]) == learn_merges(["red", "green", "reed"])
