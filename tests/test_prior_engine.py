"""The motion prior through the engine: which neighbours each frame's stage 1 sees, the prior's
planes, and every door giving one answer for a model that reads the prior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import vapoursynth as vs

from tests.media import (contents, decoded, make_weights, panning_frames, run_stream, single_pass, to_arrays, to_clip,
                         write_lossless)
from vsdeblur.batch import resolved_settings, run_batch
from vsdeblur.engine import Deblurrer
from vsdeblur.engine.networks import FrameState, transform_prior
from vsdeblur.engine.prior_inputs import BLIND_NOTE, field_planes
from vsdeblur.engine.schedule import Scheduler
from vsdeblur.engine.window import luma, window_indices
from vsdeblur.motion import estimate, shutter_evidence
from vsdeblur.vs import graph
from vsdeblur.weights import resolve_weights

FLOAT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def prior_weights(tmp_path_factory):
    """Tiny preset whose stage 1 reads the prior, random initialisation (its prior inputs count)."""
    return make_weights(tmp_path_factory.mktemp("weights") / "tiny-prior.safetensors", prior=True)


# ---- the scheduler ---------------------------------------------------------------------------


def _recorded_neighbours(count: int, cuts: set[int], radius: int, lookahead: int) -> tuple[dict, list]:
    """Run the scheduler over frames whose value is their index; record the neighbours each
    frame's compute saw and the outputs' order."""
    seen: dict[int, tuple] = {}

    def compute(frame, previous, following):
        index = lambda f: None if f is None else int(f[0, 0, 0])  # noqa: E731
        seen[index(frame)] = (index(previous), index(following))
        return FrameState(torch.full((1, 1, 1, 1), float(frame[0, 0, 0])), None)

    def aggregate(window):
        return torch.stack([s.stage1 for s in window]).flatten()

    scheduler = Scheduler(radius, compute, aggregate, lambda result, frame: result.tolist(), lookahead=lookahead)
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(count)]
    outputs = list(scheduler.stream(enumerate(frames), lambda i, _: i in cuts))
    return seen, outputs


def test_each_frame_sees_its_neighbours_in_its_scene():
    seen, outputs = _recorded_neighbours(8, cuts={3, 4}, radius=1, lookahead=1)
    # frame 3 is a scene of its own: no neighbour at all
    assert seen == {0: (None, 1), 1: (0, 2), 2: (1, None), 3: (None, None), 4: (None, 5), 5: (4, 6), 6: (5, 7), 7: (6, None)}
    assert [tag for tag, _ in outputs] == list(range(8))
    scenes = [(0, 2), (3, 3), (4, 7)]
    for t, (_, window) in enumerate(outputs):
        start, end = next(s for s in scenes if s[0] <= t <= s[1])
        assert window == [float(j) for j in window_indices(t, 1, start, end)]


@pytest.mark.parametrize("radius", [0, 3])
def test_lookahead_keeps_the_windows(radius):
    # the windows (what stage 2 reads) are the same with or without waiting for the next frame
    _, waiting = _recorded_neighbours(9, cuts={5}, radius=radius, lookahead=1)
    _, eager = _recorded_neighbours(9, cuts={5}, radius=radius, lookahead=0)
    assert waiting == eager


# ---- the prior's planes ----------------------------------------------------------------------


def test_field_planes_interpolate_between_tile_centres():
    centres = torch.tensor([[[10.0, 5.0], [30.0, 5.0]], [[10.0, 25.0], [30.0, 25.0]]])
    chords = torch.tensor([[[1.0, 0.0], [3.0, 0.0]], [[1.0, 2.0], [3.0, 2.0]]])
    confidence = torch.tensor([[1.0, 0.5], [0.0, 0.5]])
    planes = field_planes(chords, confidence, centres, 30, 40)
    assert planes.shape == (3, 30, 40)
    assert planes[:, 5, 10].tolist() == [1.0, 0.0, 1.0] and planes[:, 25, 30].tolist() == [3.0, 2.0, 0.5]
    assert planes[0, 5, 20].item() == pytest.approx(2.0) and planes[1, 15, 10].item() == pytest.approx(1.0)
    assert planes[2, 15, 10].item() == pytest.approx(0.5)
    # beyond the outer centres: the nearest tile's value
    assert planes[:, 0, 0].tolist() == planes[:, 5, 10].tolist() and planes[:, 29, 39].tolist() == planes[:, 25, 30].tolist()


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("mirrored", [False, True])
def test_prior_vectors_turn_with_the_ensemble(k, mirrored):
    # a picture holding two points a blur vector apart, the vector in the blur planes: after
    # the ensemble's transform the planes must still point from one point to the other
    prior = torch.zeros(1, 6, 16, 16)
    prior[0, 0, 5, 5], prior[0, 0, 6, 8] = 1, 2  # (x 5, y 5) -> (x 8, y 6): the vector (3, 1)
    prior[0, 3], prior[0, 4] = 3, 1
    out = transform_prior(prior, k, mirrored)
    start, end = (out[0, 0] == 1).nonzero()[0], (out[0, 0] == 2).nonzero()[0]
    assert (out[0, 3, 0, 0].item(), out[0, 4, 0, 0].item()) == (end[1] - start[1], end[0] - start[0])


# ---- the engine and its doors ----------------------------------------------------------------


def test_shipped_model_widened_for_the_prior_computes_what_it_computes_blind():
    # the plumbing end to end: motion, prior and their planes reach stage 1, whose added
    # inputs weigh zero, so the frames are exactly the shipped model's
    shipped = resolve_weights(None)
    blind = {s: shipped.build(s) for s in shipped.stages}
    widened = {**blind, 1: blind[1].with_prior()}
    preset = dataclasses.replace(shipped.preset, stage1=dataclasses.replace(shipped.preset.stage1, prior=True))
    frames = panning_frames(4)
    expected = list(Deblurrer.from_models(shipped.preset, blind, precision="fp32").frames(frames))
    engine = Deblurrer.from_models(preset, widened, precision="fp32")
    assert engine.reads_prior
    assert all(np.array_equal(a, b) for a, b in zip(engine.frames(frames), expected, strict=True))


def test_the_prior_reaches_stage_1(prior_weights):
    frames = panning_frames(3, step=6)
    short, long = (list(Deblurrer(weights=prior_weights, shutter=s, scene_threshold=0, stage=1).frames(frames)) for s in (0.1, 1.0))
    assert np.abs(short[1].astype(int) - long[1].astype(int)).max() > 0


def test_doors_agree_for_a_prior_model(prior_weights, tmp_path):
    frames = [(f / 255).astype(np.float32) for f in panning_frames(6)]
    cuts = {3}
    props = {3: {"_SceneChangePrev": 1}}
    engine = Deblurrer(weights=prior_weights, scene_threshold=0)
    expected = list(engine.frames(frames, cuts=cuts))
    # random access, as VapourSynth reads: each frame's stage 1 with its neighbours in its scene
    scenes = [(0, 2), (3, 5)]
    padded = {}
    for start, end in scenes:
        for t in range(start, end + 1):
            previous = frames[t - 1] if t > start else None
            following = frames[t + 1] if t < end else None
            padded[t] = engine.stage1_padded(frames[t], previous, following)
    by_hand = []
    for t in range(len(frames)):
        start, end = next(s for s in scenes if s[0] <= t <= s[1])
        window = window_indices(t, engine.radius, start, end)
        by_hand.append(engine.stage2_padded([padded[j] for j in window], window, frames[t]))
    assert max(float(np.abs(a - b).max()) for a, b in zip(by_hand, expected, strict=True)) <= FLOAT_TOLERANCE
    # the VapourSynth graph, cuts from the props
    fresh = Deblurrer(weights=prior_weights, scene_threshold=0)
    through_vs = to_arrays(graph(to_clip(frames, vs.RGBS, props), fresh, num_streams=2))
    assert max(float(np.abs(a - b).max()) for a, b in zip(through_vs, expected, strict=True)) <= FLOAT_TOLERANCE
    assert fresh.stats.stage1 == len(frames)


def test_stage_1_alone_through_vapoursynth_reads_the_neighbours(prior_weights):
    frames = [(f / 255).astype(np.float32) for f in panning_frames(4)]
    expected = list(Deblurrer(weights=prior_weights, stage=1, scene_threshold=0).frames(frames))
    through_vs = to_arrays(graph(to_clip(frames, vs.RGBS), Deblurrer(weights=prior_weights, stage=1, scene_threshold=0), num_streams=1))
    assert max(float(np.abs(a - b).max()) for a, b in zip(through_vs, expected, strict=True)) <= FLOAT_TOLERANCE


def test_stream_command_runs_a_prior_model(prior_weights, tmp_path):
    frames = panning_frames(5)
    source = write_lossless(tmp_path / "in.mkv", frames)
    target = tmp_path / "out.mkv"
    result = run_stream(str(source), str(target), "--weights", str(prior_weights), "--shutter", "180deg")
    assert result.returncode == 0, result.stderr
    expected = list(Deblurrer(weights=prior_weights, shutter=0.5).frames(frames))
    assert all(np.array_equal(a, b) for a, b in zip(decoded(target), expected, strict=True))
    assert BLIND_NOTE not in result.stderr


def test_a_single_picture_runs_blind_and_says_so(prior_weights, tiny_weights, capsys):
    picture = panning_frames(1)[0]
    engine = Deblurrer(weights=prior_weights)
    first, second = engine.image(picture), engine.image(picture)
    assert np.array_equal(first, second)
    assert capsys.readouterr().err.count(BLIND_NOTE) == 1  # once per engine
    Deblurrer(weights=tiny_weights).image(picture)
    assert BLIND_NOTE not in capsys.readouterr().err  # a blind model has nothing to say


def test_a_one_frame_clip_through_the_command_notes_the_blind_path(prior_weights, tmp_path):
    source = write_lossless(tmp_path / "one.mkv", panning_frames(1))
    result = run_stream(str(source), str(tmp_path / "out.mkv"), "--weights", str(prior_weights))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("runs blind") == 1


def test_batch_chunks_of_a_prior_model_equal_one_pass(prior_weights, tmp_path):
    # a chunk decodes one frame more on each side: its edge windows' stage 1 reads their neighbours
    (tmp_path / "in").mkdir()
    clip = write_lossless(tmp_path / "in" / "pan.mkv", panning_frames(10))
    values = resolved_settings(None, {"weights": prior_weights, "device": "cpu", "workers": 1, "chunk_frames": 3,
                                      "scene_threshold": 0.0, "lossless": True})
    report = run_batch([str(clip)], tmp_path / "out", values)
    assert report.ok and report.chunks_run == 3, report.table()
    chunked, pts, _ = contents(tmp_path / "out" / "pan.mkv")
    whole, whole_pts, _ = contents(single_pass(clip, tmp_path / "ref.mkv", values))
    assert pts == whole_pts and all(np.array_equal(a, b) for a, b in zip(chunked, whole, strict=True))


def test_auto_shutter_gives_each_frame_its_own_estimate(prior_weights):
    # a steady pan of 8 px a frame, each exposure 6 px long: a shutter of 0.75
    frames = panning_frames(3, step=8, width=192, height=128, blur=6)
    lumas = [torch.from_numpy(luma(f.transpose(2, 0, 1))) for f in frames]
    shutter, weight = shutter_evidence(torch.from_numpy(frames[1]).permute(2, 0, 1) / 255, estimate(*lumas))
    assert weight > 0 and shutter == pytest.approx(0.75, abs=0.05)
    auto, given, half = (list(Deblurrer(weights=prior_weights, stage=1, shutter=s, scene_threshold=0).frames(frames))[1]
                         for s in ("auto", shutter, 0.5))
    assert np.abs(auto.astype(int) - given.astype(int)).max() <= 1
    assert np.abs(auto.astype(int) - half.astype(int)).max() > 1


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_graphs_read_the_prior_through_the_engine(prior_weights, backend):
    frames = [(f / 255).astype(np.float32) for f in panning_frames(4)]
    expected = list(Deblurrer(weights=prior_weights, backend="torch", precision="fp32", scene_threshold=0).frames(frames))
    graphs = list(Deblurrer(weights=prior_weights, backend=backend, precision="fp32", scene_threshold=0).frames(frames))
    assert max(float(np.abs(a - b).max()) for a, b in zip(graphs, expected, strict=True)) <= 1e-4
