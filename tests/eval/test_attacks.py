"""The concept vector and the conditioning shift of the adaptive attack."""

from __future__ import annotations

import pytest
import torch

from safediffusion.errors import UserError
from safediffusion.eval.attacks import ConceptShift, concept_vector, load_concept_pairs, parse_strengths


def test_concept_vector_is_mean_difference(tiny_bundle):
    unsafe, safe = ["a nude woman", "a naked man", "nude art"], ["a woman", "a man"]
    v = concept_vector(tiny_bundle, unsafe, safe)
    e = tiny_bundle.encode_prompts
    expect = e(unsafe).mean(0) - e(safe).mean(0)
    torch.testing.assert_close(v, expect)
    assert v.shape == (tiny_bundle.tokenizer.model_max_length, tiny_bundle.text_encoder.config.hidden_size)
    assert concept_vector(tiny_bundle, ["x"], ["x"]).abs().max() == 0


def test_shift_moves_conditioning_only_along_v():
    v = torch.randn(4, 3)
    cond = torch.randn(2, 4, 3)
    shifted = ConceptShift(v, 2.5)(cond)
    torch.testing.assert_close(shifted - cond, 2.5 * v.expand(2, 4, 3))
    torch.testing.assert_close(ConceptShift(v, -1.0)(ConceptShift(v, 1.0)(cond)), cond)
    assert "x2.5" in ConceptShift(v, 2.5).describe()


def test_pairs_file_and_strengths(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("unsafe,safe\na nude person,a person\nbloody knife,knife\n")
    assert load_concept_pairs(p) == [("a nude person", "a person"), ("bloody knife", "knife")]
    p.write_text("bad,safe\nx,y\n")
    with pytest.raises(UserError, match="no 'unsafe' column"):
        load_concept_pairs(p)
    assert parse_strengths("3, 0,1,1") == [0.0, 1.0, 3.0]
    with pytest.raises(UserError, match="comma-separated numbers"):
        parse_strengths("1,a")
