import pytest


def test_attribute_report_of_the_shipped_clip(mini_script):
    from safediffusion.mini.clip import load_mini_clip

    report = mini_script("report")
    model, tok = load_mini_clip()
    res = report.attribute_report(model, tok, per_cell=2)
    assert res["n_images"] == 2 * 3 * 4
    assert 0.0 <= res["zero_shot_shape_accuracy"] <= 1.0
    assert 0.0 <= res["zero_shot_shape_colour_accuracy"] <= 1.0
    cos = res["shape_word_state_cosine"]
    assert set(cos) == {"circle-square", "circle-triangle", "square-triangle"}
    assert all(-1.0 <= v < 0.999 for v in cos.values())  # different words, different states


def test_auc_is_the_mann_whitney_probability(mini_script):
    report = mini_script("report")
    assert report.auc([2, 3], [1, 1]) == 1.0
    assert report.auc([1], [2]) == 0.0
    assert report.auc([1, 2], [1, 2]) == pytest.approx(0.5)
