"""MUM and Pose-MUM: mix image/feature tiles inside groups, unmix them later.

MUM (Kim et al. 2022) cuts every image of a group of N_G images into an N_T,h × N_T,w
grid and, for each grid position independently, permutes the tiles among the group's
images. The encoder sees the mixed images; its output is unmixed with the inverse
permutation, so every feature tile is back in its own image before the loss.

Pose-MUM (this paper) additionally mixes *features* after intermediate stages, each with
probability p and a fresh mask; the masks are pushed on a stack and undone in reverse
order at the unmix point. Tiles never leave their grid position, only their image, so the
same tile grid is valid at every resolution the grid divides.

Unmix location ("Table 1"): after layer2, after the encoder (layer4, the paper's choice)
or after the decoder (the heatmaps). Only stages *strictly before* the unmix point may mix
features; asking for a stage at or after it is a ConfigError (mixing there would either be
a no-op or never be undone).

Masks: `mask[g, i, r, c]` names the group member whose tile (r, c) image i of group g
receives, i.e. mixed[g, i, :, r, c] = x[g, mask[g, i, r, c], :, r, c] (tile-wise).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from posemum_deploy.data.device import generator_device, host_to_device
from posemum_deploy.errors import ConfigError
from posemum_deploy.models.simple_baseline import ENCODER_STRIDE, STAGE_NAMES

# Stages whose output may be mixed at feature level (layer4 is the encoder output itself).
MIXABLE_STAGES: tuple[str, ...] = STAGE_NAMES[:-1]
# Unmix location name → the `after_stage` hook name where unmixing happens.
UNMIX_POINTS: dict[str, str] = {"layer2": "layer2", "encoder": "layer4", "decoder": "head"}
# Output stride of every hook point relative to the input image (SimpleBaseline/ResNet).
HOOK_STRIDES: dict[str, int] = {"input": 1, "stem": 4, "layer1": 4, "layer2": 8,
                                "layer3": 16, "layer4": ENCODER_STRIDE, "head": 4}


def check_group(batch: int, group_size: int) -> None:
    """Raise ConfigError unless the batch splits into whole groups of `group_size`."""
    if group_size < 1:
        raise ConfigError(f"MUM group size must be >= 1, got {group_size}")
    if batch % group_size:
        raise ConfigError(f"MUM needs an unlabeled batch that is a multiple of the group size "
                          f"N_G={group_size}, got {batch}; change the unlabeled batch size or "
                          f"the group size")


def check_tiles(shape: tuple[int, ...], tiles_hw: tuple[int, int], where: str = "input") -> None:
    """Raise ConfigError unless the tile grid divides the map [.., H, W] seen at `where`."""
    h, w = shape[-2], shape[-1]
    th, tw = tiles_hw
    if h % th or w % tw:
        raise ConfigError(f"MUM tile grid {th}x{tw} does not divide the {where} map "
                          f"{h}x{w} (shape {tuple(shape)}); use an input size whose map at "
                          f"'{where}' is a multiple of the grid, another grid, or fewer mix "
                          f"stages")


def make_mask(batch: int, group_size: int, tiles_hw: tuple[int, int],
              generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """Random tile permutations: LongTensor [B/G, G, Th, Tw], a permutation along dim 1.

    argsort of uniform noise along the group dim gives an independent uniformly random
    permutation for each group and tile position. Noise is drawn on the generator's device
    (so a CPU generator stays reproducible for any model device), then moved to `device`.
    """
    check_group(batch, group_size)
    noise = torch.rand(batch // group_size, group_size, *tiles_hw, generator=generator,
                       device=generator_device(generator, device))
    mask = noise.argsort(dim=1)
    return host_to_device(mask, device)


def _tile_gather(x: Tensor, index: Tensor, tiles_hw: tuple[int, int]) -> Tensor:
    """out[g, i, tile t] = x[g, index[g, i, t], tile t] for x [B, C, H, W] → [B, C, H, W]."""
    b, c, h, w = x.shape
    th, tw = tiles_hw
    groups, group_size = index.shape[:2]
    if groups * group_size != b or tuple(index.shape[2:]) != (th, tw):
        raise ConfigError(f"MUM mask of shape {tuple(index.shape)} does not fit a batch of "
                          f"{b} with a {th}x{tw} tile grid")
    tiles = x.reshape(groups, group_size, c, th, h // th, tw, w // tw)
    idx = index.view(groups, group_size, 1, th, 1, tw, 1).expand_as(tiles)
    out = tiles.gather(1, idx).reshape(b, c, h, w)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)  # keep the conv layout
    return out


def mix(x: Tensor, mask: Tensor, tiles_hw: tuple[int, int], where: str = "input") -> Tensor:
    """Mix tiles of x [B, C, H, W] within groups by `mask` [B/G, G, Th, Tw] → [B, C, H, W]."""
    check_tiles(x.shape, tiles_hw, where)
    return _tile_gather(x, mask, tiles_hw)


def unmix(x: Tensor, mask: Tensor, tiles_hw: tuple[int, int], where: str = "output") -> Tensor:
    """Undo `mix(·, mask)`: gather with the inverse permutation argsort(mask, dim=1)."""
    check_tiles(x.shape, tiles_hw, where)
    return _tile_gather(x, mask.argsort(dim=1), tiles_hw)


@dataclass
class MixHook:
    """The `after_stage` hook for one student forward: mixes, stacks masks, unmixes.

    `history` keeps (where, mask) for every mix of this forward ("input" = image level),
    for tests and logs; `stack` is the live stack, empty again after the unmix point.
    """

    mixer: PoseMumMixer
    generator: torch.Generator | None
    skip: int = 0  # leading samples left alone (the labeled part of a joint forward)
    stack: list[Tensor] = field(default_factory=list)
    history: list[tuple[str, Tensor]] = field(default_factory=list)

    @property
    def mixed_at(self) -> list[str]:
        return [where for where, _ in self.history]

    def push(self, where: str, mask: Tensor) -> None:
        self.stack.append(mask)
        self.history.append((where, mask))

    def __call__(self, name: str, x: Tensor) -> Tensor:
        """Hook body for [skip + B, C, H, W]: only the last B samples are mixed/unmixed."""
        if not self.skip:
            return self._apply(name, x)
        tail = x[self.skip:]
        out = self._apply(name, tail)
        return x if out is tail else torch.cat([x[:self.skip], out])

    def _apply(self, name: str, x: Tensor) -> Tensor:
        m = self.mixer
        if name in m.active_stages:
            check_tiles(x.shape, m.tiles, name)  # validate even when this draw does not mix
            u = torch.rand((), generator=self.generator,
                           device=generator_device(self.generator, None))
            if float(u) < m.p:
                mask = make_mask(x.shape[0], m.group_size, m.tiles, self.generator, x.device)
                x = mix(x, mask, m.tiles, name)
                self.push(name, mask)
        if name == m.unmix_hook:
            while self.stack:
                x = unmix(x, self.stack.pop(), m.tiles, name)
        return x


@dataclass(frozen=True)
class PoseMumMixer:
    """Pose-MUM settings; `start(images)` mixes a batch and returns the forward hook.

    group_size: N_G images per group (paper 4). tiles: (N_T,h, N_T,w) (paper 4×3).
    mix_stages: stages after which features may be mixed (subset of stem..layer3).
    p: probability of mixing after each of those stages (paper 0.5).
    unmix_at: "layer2" | "encoder" | "decoder" (paper: encoder).
    image_level: mix the input images (MUM). feature_level: the Pose-MUM stage mixing.
    MUM = image_level only; Pose-MUM = both.
    """

    group_size: int = 4
    tiles: tuple[int, int] = (4, 3)
    mix_stages: tuple[str, ...] = MIXABLE_STAGES
    p: float = 0.5
    unmix_at: str = "encoder"
    image_level: bool = True
    feature_level: bool = True

    def __post_init__(self) -> None:
        if self.unmix_at not in UNMIX_POINTS:
            raise ConfigError(f"unknown MUM unmix location {self.unmix_at!r}; choose one of "
                              f"{', '.join(UNMIX_POINTS)}")
        unknown = [s for s in self.mix_stages if s not in MIXABLE_STAGES]
        if unknown:
            raise ConfigError(f"cannot mix after {', '.join(unknown)}; mix stages are a subset "
                              f"of {', '.join(MIXABLE_STAGES)}")
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"Pose-MUM mixing probability must be in [0, 1], got {self.p}")
        if self.group_size < 1 or min(self.tiles) < 1:
            raise ConfigError(f"MUM group size and tile grid must be positive, got "
                              f"{self.group_size} and {self.tiles}")
        late = [s for s in self.active_stages if s not in self._before_unmix()]
        if late:
            raise ConfigError(f"Pose-MUM cannot mix after {', '.join(late)} and unmix after "
                              f"{self.unmix_at}: only stages before the unmix point "
                              f"({', '.join(self._before_unmix()) or 'none'}) can mix")

    def _before_unmix(self) -> tuple[str, ...]:
        hook = UNMIX_POINTS[self.unmix_at]
        names = STAGE_NAMES + ("head",)
        return tuple(s for s in MIXABLE_STAGES if names.index(s) < names.index(hook))

    @property
    def active_stages(self) -> tuple[str, ...]:
        """Stages where a feature-level mix is drawn (empty for plain MUM)."""
        return tuple(self.mix_stages) if self.feature_level else ()

    @property
    def unmix_hook(self) -> str:
        return UNMIX_POINTS[self.unmix_at]

    def check_input_size(self, input_hw: tuple[int, int]) -> None:
        """Fail at config time if the tile grid misses any map that may be mixed/unmixed."""
        points = (["input"] if self.image_level else []) + list(self.active_stages)
        points.append(self.unmix_hook)
        for where in points:
            stride = HOOK_STRIDES[where]
            if input_hw[0] % stride or input_hw[1] % stride:
                raise ConfigError(f"input size {input_hw[0]}x{input_hw[1]} is not a multiple "
                                  f"of the stride {stride} at '{where}'")
            check_tiles((input_hw[0] // stride, input_hw[1] // stride), self.tiles, where)

    def start(self, images: Tensor, generator: torch.Generator | None = None,
              skip: int = 0) -> tuple[Tensor, MixHook]:
        """Mix the strong batch [B, 3, H, W] (image level) and return (images, hook).

        Pass the hook to `model(images, after_stage=hook)`; the model's output then has
        every tile back in place. Call once per forward: the hook holds that forward's masks.
        With `skip=L` the hook expects [L + B, ...] batches (labeled crops first, one forward
        for both, which keeps DDP to one forward per step) and leaves the first L alone.
        Mixing permutes samples, so BatchNorm's batch statistics are unchanged by it.
        """
        check_group(images.shape[0], self.group_size)
        hook = MixHook(self, generator, skip)
        if self.image_level:
            mask = make_mask(images.shape[0], self.group_size, self.tiles, generator,
                             images.device)
            images = mix(images, mask, self.tiles, "input")
            hook.push("input", mask)
        return images, hook
