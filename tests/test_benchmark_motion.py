"""`vsdeblur benchmark`'s motion table and its deconvolution-prior variants (measure/motion_prior.py),
on a tiny set: one dead-leaves photograph, 3 frames of 128x96 per condition."""

from __future__ import annotations

import numpy as np
import pytest

from tests.media import write_png
from vsdeblur.measure import motion_prior, quality
from vsdeblur.metrics import chord_axis_error, chord_length_error
from vsdeblur.train.data import dead_leaves

PRIORS = list(motion_prior.PRIOR_VARIANTS)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(setup, photos, motion table rows, score rows of the prior's variants) of the tiny set."""
    folder = tmp_path_factory.mktemp("material")
    write_png(folder / "photo0.png", (dead_leaves(np.random.default_rng(0), 200, shapes=400) * 255 + 0.5).astype(np.uint8))
    setup = quality.Setup(folder, tmp_path_factory.mktemp("benchmark"), clips=1, frames=3, size=(128, 96))
    photos = quality.photos_of(folder, 1)
    quality.build_set(setup, photos, log=lambda line: None)
    motion_rows = motion_prior.run(setup, photos, log=lambda line: None)
    return setup, photos, motion_rows, {row.condition: row for row in quality.score(setup, photos, PRIORS)}


def test_chord_errors_are_relative_lengths_and_axes_modulo_180_degrees():
    true = np.array([[6.0, 8.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    predicted = np.array([[3.0, 4.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(chord_length_error(predicted, true), [50.0, 0.0, 100 * (np.sqrt(2) - 1), 50.0])
    np.testing.assert_allclose(chord_axis_error(predicted, true), [0.0, 0.0, 45.0, 90.0], atol=1e-6)


def test_the_motion_table_has_a_row_per_coherent_condition_with_errors_in_range(measured):
    _, _, rows, _ = measured
    assert [row.condition for row in rows] == ["mild", "medium", "strong"]
    for row in rows:
        assert (row.clips, row.frames) == (1, 3) and 0 <= row.confident <= 1
        for median, p80 in filter(None, (row.length, row.axis, row.auto_length)):
            assert 0 <= median <= p80
        assert row.axis is None or row.axis[1] <= 90
        assert (row.auto_length is None) == (row.length is None)  # both over the confident tiles
        assert row.auto_length is None or 0 <= row.auto_length[0] <= row.auto_length[1]
    mild = rows[0]
    # mild blur leaves the texture the estimator needs: most tiles count, and it is close
    assert mild.confident > 0.5 and mild.length[0] < 25 and mild.axis[0] < 10
    text = motion_prior.motion_table(rows)
    assert [line.split()[0] for line in text.splitlines()[1:4]] == ["mild", "medium", "strong"]
    assert "n/a" not in text.splitlines()[1] and "confidence >= 0.5" in text


def test_the_auto_shutter_column_is_the_length_error_at_the_judged_shutter(measured, monkeypatch):
    setup, photos, _, _ = measured
    mild = quality.CONDITIONS[0]
    shutter = quality.filmed_path(0, mild, setup.frames).shutter
    monkeypatch.setattr(motion_prior, "frame_shutters", lambda frames, motions: [shutter] * len(frames))  # judged right
    errors = motion_prior.ChordErrors()
    motion_prior.measure_clip(setup, 0, photos[0], mild, errors)
    row = motion_prior.MotionRow.of("mild", 1, setup.frames, errors)
    assert row.auto_length == row.length and row.length is not None
    monkeypatch.setattr(motion_prior, "frame_shutters", lambda frames, motions: [2 * shutter] * len(frames))  # twice too long
    motion_prior.measure_clip(setup, 0, photos[0], mild, errors := motion_prior.ChordErrors())
    assert motion_prior.MotionRow.of("mild", 1, setup.frames, errors).auto_length[0] > 50


def test_the_prior_from_the_true_path_beats_the_blurred_input_on_medium_blur(measured):
    _, _, _, rows = measured
    assert rows["medium"].restored["prior (true path)"] > rows["medium"].blurred + 0.1
    assert rows["mild"].restored["prior (true path)"] > rows["mild"].blurred + 0.1
    # from the estimated motion it never does much harm: low confidence leaves the input
    assert all(rows[c].restored["prior (estimated motion)"] > rows[c].blurred - 0.1 for c in quality.COHERENT)


def test_the_prior_rows_are_in_both_tables(measured):
    _, _, _, rows = measured
    for row in rows.values():
        assert set(row.restored) == set(PRIORS) and set(PRIORS) <= set(row.vmaf)
        assert all(isinstance(row.vmaf[v], float) for v in PRIORS)
    psnr_table, vmaf_table = quality.table(list(rows.values()), PRIORS).split("\n\n")
    for text in (psnr_table, vmaf_table):
        header, mild = text.splitlines()[:2]
        assert header.endswith("prior (estimated motion)  prior (true path)")
        assert len(mild.split()) == 1 + 1 + 4 + 2 * 2  # condition, blurred, unsharp mask (4), two variants (2 each)
