"""The networks: sizes, structure details of architecture.md, and shape behaviour."""

from __future__ import annotations

import pytest
import torch

from vsdeblur.errors import UsageError
from vsdeblur.models import PRESETS, build_model, fold_scales, get_preset
from vsdeblur.models.layers import ScaledConv
from vsdeblur.models.stage2 import similarity_weighted


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_stage1_has_47_3_million_parameters():
    assert count(build_model("paper", 1)) == pytest.approx(47.3e6, rel=0.01)


def test_paper_stage2_has_46_2_million_parameters():
    assert count(build_model("paper", 2)) == pytest.approx(46.2e6, rel=0.02)


def test_paper_stage1_structure():
    net = build_model("paper", 1)
    assert net.head.weight.shape == (64, 3, 9, 9)
    assert net.down.stride == 2 and net.down.weight.shape == (128, 64, 3, 3)
    assert len(net.blocks) == 20
    block = net.blocks[5]
    assert [b.dilation for b in block.branches] == [1, 2, 3, 4]
    assert all(b.weight.shape == (128, 256, 3, 3) for b in block.branches)
    assert block.fuse.weight.shape == (256, 512, 3, 3)
    # only the first block changes the width, through a 1x1 projection
    assert net.blocks[0].shortcut.weight.shape == (256, 128, 1, 1)
    assert isinstance(net.blocks[1].shortcut, torch.nn.Identity)
    assert net.up.weight.shape == (128, 384, 3, 3)
    assert net.tail.weight.shape == (64, 128, 3, 3)
    assert net.out.weight.shape == (3, 64, 3, 3) and not net.out.activation


def test_every_conv_has_scale_and_bias_and_no_normalisation_layers():
    for stage in (1, 2):
        net = build_model("tiny", stage)
        convs = [m for m in net.modules() if isinstance(m, ScaledConv)]
        assert convs
        assert all(c.scale.shape == c.bias.shape == (c.weight.shape[0],) for c in convs)
        assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)) for m in net.modules())
        # weight normalisation in stage 2 only
        assert all(c.weight_norm == (stage == 2) for c in convs)


def test_stage2_weights_are_unit_norm_filters_times_scale():
    conv = build_model("tiny", 2).encoder.head
    with torch.no_grad():
        conv.weight.mul_(7.0)  # the raw filter length must not matter
        conv.scale.fill_(2.0)
    norms = conv.effective_weight().flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 2.0))


def test_reflect_padding_and_leaky_relu():
    conv = ScaledConv(1, 1, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 0] = 1.0  # picks the left neighbour
    x = torch.tensor([[[[-1.0, 2.0, 3.0]]]]).expand(1, 1, 3, 3).contiguous()
    y = conv(x)
    # at column 0 the left neighbour is the reflected column 1 (value 2); column 1 sees -1,
    # which the leaky ReLU scales by 0.2
    assert torch.allclose(y[0, 0, 0], torch.tensor([2.0, -0.2, 2.0]))


def test_stage1_predicts_a_residual():
    net = build_model("tiny", 1)
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    assert torch.equal(net(x), x)


def test_stage2_output_is_centre_stage1_image_plus_residual():
    net = build_model("tiny", 2)
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    frames = [torch.rand(1, 3, 32, 48) for _ in range(3)]
    assert torch.equal(net(frames), frames[1])


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_an_untrained_stage2_starts_close_to_its_centre_input(preset):
    # Stage 2 trains on top of a trained stage 1: starting far from its input would throw that
    # work away first (at full gain its weight-normalised output layer would start 0.3 off).
    torch.manual_seed(0)
    net = build_model(preset, 2).eval()
    frames = [torch.rand(1, 3, 64, 64) * 2 - 1 for _ in range(3)]
    with torch.no_grad():
        assert (net(frames) - frames[1]).abs().mean() < 0.1


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_an_untrained_stage1_starts_close_to_its_input(preset):
    # With every block's branch at full gain the variance doubled per block: the paper's 20
    # blocks started about 250 away from the input on the [-1, 1] scale, and `small` about 0.5.
    torch.manual_seed(0)
    net = build_model(preset, 1).eval()
    frame = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (net(frame) - frame).abs().mean() < 0.1


def test_a_widened_stage2_computes_what_the_narrow_one_did():
    # a longer window is trained from a shorter one: the added outer frames start with no say
    torch.manual_seed(0)
    narrow = build_model("tiny", 2).eval()
    wide = narrow.widened(2).eval()
    assert wide.frames == 5 and wide.cfg.radius == 2
    frames = [torch.rand(1, 3, 32, 48) * 2 - 1 for _ in range(5)]
    with torch.no_grad():
        assert torch.allclose(wide(frames), narrow(frames[1:4]), atol=1e-6)
        frames[0], frames[4] = -frames[0], torch.zeros_like(frames[4])  # outer frames ignored
        assert torch.allclose(wide(frames), narrow(frames[1:4]), atol=1e-6)
    with pytest.raises(ValueError, match="cannot narrow a stage 2 of radius 2 to 1"):
        wide.widened(1)


def test_a_widened_stage1_computes_what_the_narrow_one_did():
    # a larger stage 1 trains on from a trained small one
    torch.manual_seed(0)
    narrow = build_model("small", 1).eval()
    for block in narrow.blocks:  # trained branches have more than the starting gain
        block.fuse.scale.data.fill_(1.0)
    wide = narrow.widened(get_preset("medium").stage1).eval()
    assert count(wide) > 4 * count(narrow)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(wide(x), narrow(x), atol=1e-5)
        assert not torch.allclose(wide.blocks[:6](wide.down(wide.head(x)))[:, 32:], torch.zeros(1))  # new channels live
    with pytest.raises(ValueError, match="cannot grow"):
        wide.widened(get_preset("small").stage1)


def test_similarity_weighting_suppresses_dissimilar_neighbours():
    centre = torch.rand(1, 4, 8, 8) + 0.1
    same, opposite = centre.clone(), -centre
    out = similarity_weighted([opposite, centre, same], centre=1)
    assert torch.allclose(out[:, 0:4], torch.zeros_like(centre))  # cosine -1, clamped to 0
    assert torch.allclose(out[:, 4:8], centre) and torch.allclose(out[:, 8:12], centre, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_shapes_survive_both_stages(preset):
    s1, s2 = build_model(preset, 1), build_model(preset, 2)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    y = s1(x)
    assert y.shape == x.shape
    assert s2([y, y, y]).shape == x.shape


def test_folding_scale_and_bias_keeps_the_function():
    torch.manual_seed(1)
    for stage in (1, 2):
        net = build_model("tiny", stage).eval()
        for m in net.modules():
            if isinstance(m, ScaledConv):
                torch.nn.init.uniform_(m.scale, 0.5, 1.5)
                torch.nn.init.uniform_(m.bias, -0.1, 0.1)
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        inputs = (x,) if stage == 1 else ([x, x.flip(-1), x],)
        with torch.no_grad():
            before = net(*inputs)
            folded = fold_scales(net)
            assert not any(isinstance(m, ScaledConv) for m in folded.modules())
            assert torch.allclose(folded(*inputs), before, atol=1e-5)


def test_full_resolution_variant_has_no_downsampling():
    from dataclasses import replace

    cfg = replace(get_preset("tiny"), stage1=replace(get_preset("tiny").stage1, downsample=False))
    net = build_model(cfg, 1)
    assert net.down.stride == 1 and cfg.multiple(1) == 1
    assert net(torch.rand(1, 3, 33, 35)).shape == (1, 3, 33, 35)


def test_presets_are_data_and_unknown_ones_are_refused():
    assert {"paper", "medium", "small", "tiny"} <= set(PRESETS)
    assert get_preset("paper").stage1.blocks == 20
    with pytest.raises(UsageError, match="unknown preset 'huge'; choose one of: paper, small, medium, tiny"):
        build_model("huge", 1)
    with pytest.raises(UsageError, match="stage must be 1 or 2"):
        build_model("tiny", 3)


def test_the_shipped_stage1_reading_the_prior_computes_what_it_did():
    from vsdeblur.models.stage1 import PRIOR_CHANNELS
    from vsdeblur.weights import resolve_weights

    shipped = resolve_weights(None).build(1)
    taking = shipped.with_prior()
    assert taking.cfg.prior and taking.head.weight.shape[1] == 3 + len(PRIOR_CHANNELS)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    wild = torch.randn(1, len(PRIOR_CHANNELS), 48, 64) * 10  # whatever the prior holds
    with torch.no_grad():
        assert torch.equal(shipped(x), taking(x, wild))
        assert torch.equal(fold_scales(shipped)(x), fold_scales(taking)(x, wild))
    with pytest.raises(ValueError, match="takes the prior"):
        taking(x)
    with pytest.raises(ValueError, match="takes the prior"):
        shipped(x, wild)


def test_a_preset_reading_the_prior_travels_in_the_weights_header(tmp_path):
    import dataclasses

    from vsdeblur.models.presets import Preset
    from vsdeblur.weights import read_weights, save_weights

    tiny = get_preset("tiny")
    preset = dataclasses.replace(tiny, stage1=dataclasses.replace(tiny.stage1, prior=True))
    path = save_weights(tmp_path / "prior.safetensors", preset, {1: build_model(tiny, 1).with_prior()}, recipe={})
    loaded = read_weights(path)
    assert loaded.preset.stage1.prior and loaded.build(1).cfg.prior
    # headers written before the prior existed say nothing of it: such a stage 1 is blind
    assert Preset.from_dict({**tiny.to_dict(), "stage1": {k: v for k, v in tiny.to_dict()["stage1"].items() if k != "prior"}}).stage1.prior is False


def test_zero_padding_is_the_convolutions_own_and_equals_reflect_away_from_the_edges():
    import dataclasses

    tiny = get_preset("tiny")
    torch.manual_seed(2)
    mirrored = build_model(tiny, 1).eval()
    zeros = mirrored.padded("zeros")
    assert zeros.cfg.padding == "zeros" and all(m.padding_mode == "zeros" for m in zeros.modules() if isinstance(m, ScaledConv))
    assert zeros.padded("reflect").cfg == mirrored.cfg
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    with torch.no_grad():
        a, b = mirrored(x), zeros(x)
        assert torch.allclose(fold_scales(zeros)(x), b, atol=1e-5)
    # the same weights: equal where no layer's window reached beyond the frame, different at the edges
    reach = 32  # beyond tiny's receptive radius (head, stride-2 down, two blocks of rates up to 4 at half size, up, tail, out)
    assert torch.allclose(a[..., reach:-reach, reach:-reach], b[..., reach:-reach, reach:-reach], atol=1e-5)
    assert not torch.allclose(a[..., :2, :], b[..., :2, :], atol=1e-3)
    # a padding outside the table is refused in a weights header, in one line
    circular = dataclasses.replace(tiny, stage1=dataclasses.replace(tiny.stage1, padding="circular"))
    with pytest.raises(UsageError, match="stage1.padding is 'circular', expected one of reflect, zeros"):
        type(tiny).from_dict(circular.to_dict())


def test_zero_padded_convolutions_need_no_padding_kernel_and_run_channels_last_on_a_gpu():
    from vsdeblur.backends.pytorch import memory_format
    from vsdeblur.models.layers import reflects

    tiny = get_preset("tiny")
    mirrored, zeros = build_model(tiny, 1), build_model(tiny, 1).padded("zeros")
    assert reflects(mirrored) and not reflects(zeros)
    assert reflects(fold_scales(build_model(tiny, 1))) and not reflects(fold_scales(zeros))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    # eager CUDA: NCHW only while a padding kernel is in the graph; the CPU and compiled graphs
    # are channels_last whatever the padding
    assert memory_format({1: mirrored}, cuda, compile=False) == torch.contiguous_format
    assert memory_format({1: zeros}, cuda, compile=False) == torch.channels_last
    assert memory_format({1: zeros, 2: build_model(tiny, 2)}, cuda, compile=False) == torch.contiguous_format  # stage 2 reflects
    assert memory_format({1: mirrored}, cuda, compile=True) == torch.channels_last
    assert memory_format({1: mirrored}, cpu, compile=False) == torch.channels_last


def test_the_gate_passes_the_deconvolution_at_full_resolution():
    import dataclasses

    from vsdeblur.models.stage1 import PRIOR_CHANNELS

    tiny = get_preset("tiny")
    torch.manual_seed(3)
    blind = build_model(tiny, 1).eval()
    taking = blind.with_prior().eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    prior = torch.randn(1, len(PRIOR_CHANNELS), 32, 48)
    with torch.no_grad():
        assert torch.equal(taking(x, prior), blind(x))  # the gate starts with no say
        taking.gate.bias.fill_(1.0)  # all the way to the deconvolution, pixel for pixel
        assert torch.allclose(taking(x, prior), blind(x) + prior[:, :3] - x, atol=1e-6)
        # a wider network keeps the gate and the head's prior inputs: it computes the same
        wider = taking.widened(dataclasses.replace(taking.cfg, head_width=8, up_width=16)).eval()
        assert torch.allclose(wider(x, prior), taking(x, prior), atol=1e-5)
