"""MUM / Pose-MUM: mix∘unmix is exactly the identity, tiles move as whole blocks."""
from __future__ import annotations

import itertools

import pytest
import torch

from posemum_deploy.errors import ConfigError
from posemum_deploy.models.simple_baseline import STAGE_NAMES, build_model
from posemum_deploy.training.mum import (
    HOOK_STRIDES,
    MIXABLE_STAGES,
    PoseMumMixer,
    make_mask,
    mix,
    unmix,
)

TILES = (4, 3)
INPUT_HW = (128, 96)  # layer4 is 4x3: the 4x3 grid divides every stage
ALL_SUBSETS = [s for r in range(len(MIXABLE_STAGES) + 1)
               for s in itertools.combinations(MIXABLE_STAGES, r)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_is_a_permutation_per_group_and_tile():
    mask = make_mask(8, 4, TILES, _gen())
    assert mask.shape == (2, 4, 4, 3) and mask.dtype == torch.long
    assert torch.equal(mask.sort(dim=1).values,
                       torch.arange(4).view(1, 4, 1, 1).expand_as(mask))


@pytest.mark.parametrize("where", list(HOOK_STRIDES))
def test_mix_then_unmix_is_identity_at_every_stage_shape(where):
    h, w = INPUT_HW[0] // HOOK_STRIDES[where], INPUT_HW[1] // HOOK_STRIDES[where]
    x = torch.randn(8, 5, h, w, generator=_gen(1))
    mask = make_mask(8, 4, TILES, _gen(2))
    mixed = mix(x, mask, TILES)
    assert not torch.equal(mixed, x)
    assert torch.equal(unmix(mixed, mask, TILES), x)


def test_stacked_masks_unmix_in_reverse_order():
    x = torch.randn(12, 2, 8, 6, generator=_gen(3))
    masks = [make_mask(12, 4, TILES, _gen(s)) for s in range(4)]
    y = x
    for m in masks:
        y = mix(y, m, TILES)
    for m in reversed(masks):
        y = unmix(y, m, TILES)
    assert torch.equal(y, x)


def test_tiles_move_as_blocks_and_keep_their_grid_position():
    b, th, tw = 8, 4, 3
    # Each pixel encodes (image, tile row, tile col) so we can read where it came from.
    img = torch.arange(b).view(b, 1, 1, 1).expand(b, 1, 16, 12).float()
    row = torch.arange(16).div(4, rounding_mode="floor").view(1, 1, 16, 1).expand(b, 1, 16, 12)
    col = torch.arange(12).div(4, rounding_mode="floor").view(1, 1, 1, 12).expand(b, 1, 16, 12)
    x = torch.cat([img, row.float(), col.float()], dim=1)
    mask = make_mask(b, 4, (th, tw), _gen(5))
    mixed = mix(x, mask, (th, tw))
    assert torch.equal(mixed[:, 1:], x[:, 1:])  # every tile stays at its grid position
    src = mixed[:, 0].reshape(b, th, 4, tw, 4)
    assert (src == src[:, :, :1, :, :1]).all()  # a tile is one source image: a whole block
    for i in range(b):
        sources = src[i, :, 0, :, 0].long()
        assert (sources // 4 == i // 4).all()  # only images of its own group
        assert sources.unique().numel() > 1  # several images contribute
        expected = mask[i // 4, i % 4] + (i // 4) * 4
        assert torch.equal(sources, expected)


@pytest.mark.parametrize("stages", ALL_SUBSETS, ids=lambda s: "+".join(s) or "none")
@pytest.mark.parametrize("p", [0.0, 1.0])
def test_hook_is_identity_for_every_stage_stack(stages, p):
    """With stages acting as identity, mix → (stage mixes) → unmix returns the input."""
    mixer = PoseMumMixer(mix_stages=stages, p=p)
    x = torch.randn(8, 3, *INPUT_HW, generator=_gen(7))
    mixed, hook = mixer.start(x, _gen(8))
    y = mixed
    for name in STAGE_NAMES:  # identity stages: resolution kept, so the maths is exact
        y = hook(name, y)
    assert torch.equal(y, x)
    assert hook.mixed_at == ["input"] + (list(stages) if p == 1.0 else [])
    assert hook.stack == []


@pytest.mark.parametrize("stages", [(), ("stem",), ("layer1", "layer3"), MIXABLE_STAGES],
                         ids=lambda s: "+".join(s) or "none")
def test_simplebaseline_forward_mixes_and_unmixes_at_the_right_places(stages):
    """Real SimpleBaseline forward: each stage output is mixed by its own mask, layer4 is
    unmixed by all masks in reverse order, and the head sees the unmixed features."""
    model = build_model("resnet18", num_joints=4).eval()
    x = torch.randn(4, 3, *INPUT_HW, generator=_gen(9))
    mixer = PoseMumMixer(mix_stages=stages, p=1.0)
    mixed, hook = mixer.start(x, _gen(10))
    seen = {}

    def spy(name, t):
        out = hook(name, t)
        seen[name] = (t, out)
        return out

    with torch.no_grad():
        out = model(mixed, after_stage=spy)
        assert hook.stack == [] and hook.mixed_at == ["input", *stages]
        masks = dict(hook.history)
        assert torch.equal(mixed, mix(x, masks["input"], TILES))
        for name in STAGE_NAMES[:-1]:
            before, after = seen[name]
            expected = mix(before, masks[name], TILES) if name in stages else before
            assert torch.equal(after, expected)
        before, after = seen["layer4"]
        expected = before
        for _, mask in reversed(hook.history):
            expected = unmix(expected, mask, TILES)
        assert torch.equal(after, expected)
        assert torch.equal(out, model.head(after))
    assert out.shape == (4, 4, INPUT_HW[0] // 4, INPUT_HW[1] // 4)


def test_pointwise_model_mix_unmix_is_exact():
    """A pointwise network: per-pixel maps commute with tile permutations → exact identity."""
    net = torch.nn.Conv2d(3, 6, 1)
    x = torch.randn(8, 3, 16, 12, generator=_gen(11))
    mask = make_mask(8, 4, TILES, _gen(12))
    with torch.no_grad():
        assert torch.allclose(unmix(net(mix(x, mask, TILES)), mask, TILES), net(x), atol=0, rtol=0)


@pytest.mark.parametrize("unmix_at", ["layer2", "encoder", "decoder"])
def test_unmix_location_in_real_forward_restores_geometry(unmix_at):
    """After the unmix point the batch order is restored: swap stages for identities."""
    stages = ("stem", "layer1") if unmix_at == "layer2" else MIXABLE_STAGES
    mixer = PoseMumMixer(mix_stages=stages, p=1.0, unmix_at=unmix_at)
    x = torch.randn(4, 3, 16, 12, generator=_gen(13))
    mixed, hook = mixer.start(x, _gen(14))
    y = mixed
    for name in STAGE_NAMES + ("head",):
        y = hook(name, y)
        if name == mixer.unmix_hook:
            assert torch.equal(y, x)
    assert torch.equal(y, x)


def test_batch_not_multiple_of_group_is_a_clear_error():
    with pytest.raises(ConfigError, match="multiple of the group size N_G=4, got 6"):
        PoseMumMixer().start(torch.zeros(6, 3, 128, 96))


def test_tile_grid_not_dividing_a_mixed_map_names_stage_and_shape():
    mixer = PoseMumMixer(mix_stages=("layer3",), p=0.0, image_level=False)
    x = torch.zeros(4, 3, 96, 72)  # layer3 map is 6x4.5 → build a 6x5 map by hand
    _, hook = mixer.start(x, _gen())
    with pytest.raises(ConfigError, match=r"layer3 map 6x5 \(shape \(4, 8, 6, 5\)\)"):
        hook("layer3", torch.zeros(4, 8, 6, 5))  # checked even when p=0 draws no mix
    with pytest.raises(ConfigError, match="'input'"):
        PoseMumMixer().start(torch.zeros(4, 3, 30, 30))
    with pytest.raises(ConfigError, match="layer3"):
        PoseMumMixer(mix_stages=("layer3",)).check_input_size((96, 72))
    PoseMumMixer().check_input_size((256, 192))


def test_stages_at_or_after_unmix_point_are_rejected():
    with pytest.raises(ConfigError, match="only stages before the unmix point"):
        PoseMumMixer(unmix_at="layer2")
    PoseMumMixer(unmix_at="layer2", mix_stages=("stem", "layer1"))
    PoseMumMixer(unmix_at="layer2", feature_level=False)  # plain MUM, Table 1 row 3
    with pytest.raises(ConfigError, match="layer4"):
        PoseMumMixer(mix_stages=("layer4",))
    with pytest.raises(ConfigError, match="unmix location"):
        PoseMumMixer(unmix_at="neck")


def test_same_generator_seed_gives_same_mixing():
    x = torch.randn(8, 3, 32, 24, generator=_gen(15))
    mixer = PoseMumMixer(p=0.5)
    a, hook_a = mixer.start(x, _gen(16))
    b, hook_b = mixer.start(x, _gen(16))
    assert torch.equal(a, b)
    for name in MIXABLE_STAGES:
        assert torch.equal(hook_a(name, a), hook_b(name, b))
    assert hook_a.mixed_at == hook_b.mixed_at


def test_skip_leaves_the_labeled_part_alone_and_restores_the_rest():
    labeled = torch.randn(4, 3, 16, 12, generator=_gen(17))
    strong = torch.randn(8, 3, 16, 12, generator=_gen(18))
    mixer = PoseMumMixer(p=1.0)
    mixed, hook = mixer.start(strong, _gen(19), skip=4)
    y = torch.cat([labeled, mixed])
    for name in STAGE_NAMES:
        y = hook(name, y)
        if name != "layer4":
            assert torch.equal(y[:4], labeled)
    assert torch.equal(y, torch.cat([labeled, strong]))
