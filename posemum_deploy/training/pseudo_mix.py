"""Mixed batches of labeled and pseudo-labeled persons, and the noised step that trains on them.

Data Distillation (Radosavovic et al. 2018) mixes labeled and pseudo-labeled images in
*every* minibatch; one union list with the labeled persons repeated only holds that
ratio on average, and a long pseudo list still drowns the labeled set within an epoch.
Here each batch is exactly round(ratio × B) labeled crops followed by pseudo-labeled
ones. Noisy Student (Xie et al. 2020) needs the student noised on the pseudo-labeled
part: the strong view of the presets (affine θ, RandAugment, Joint Cutout, MUM).

Dropped pseudo-joints arrive with v=0 and so carry target weight 0 (the codec's rule),
never an all-background heatmap with weight 1. `weight` scales the rest by their
reliability; JointsMSE multiplies prediction and target by the weight, so the loss of
a joint goes with weight², and the dataset stores √reliability to make it linear.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.datasets import PersonInstance, TopDownDataset, check_images_found, load_instances
from posemum_deploy.data.strong import joint_cutout, rand_augment
from posemum_deploy.data.transforms import AffineAugment, normalize_batch
from posemum_deploy.errors import ConfigError
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.device_batches import encoded_items, loader_collate
from posemum_deploy.training.losses import joints_mse_loss
from posemum_deploy.training.steps import STEP_EPOCH_STRIDE, STEP_SEED_STRIDE, StepTeacher, UnlabeledBatches
from posemum_deploy.training.strong_view import StrongAffine, warp

log = logging.getLogger(__name__)
NOISES = ("affine", "randaugment", "cutout", "mum")
WEIGHTS = ("none", "score", "agreement")
NOISE_SEED_OFFSET = 17  # the noise generator's seed apart from other steps' generators
# Per-joint reliability fields of a pseudo-label annotation, by --pseudo-weight
# (label/merge.py writes them when the shards hold them).
WEIGHT_FIELDS = {"score": ("joint_scores", "scores"), "agreement": ("joint_agreement", "agreement")}


def parse_noise(spec: str) -> tuple[str, ...]:
    """'randaugment,cutout' → ('randaugment', 'cutout'); 'none' or '' → ()."""
    parts = tuple(p.strip() for p in spec.split(",") if p.strip() and p.strip() != "none")
    bad = [p for p in parts if p not in NOISES]
    if bad:
        raise ConfigError(f"--pseudo-noise: unknown {', '.join(bad)}; use a comma list of "
                          f"{', '.join(NOISES)} or 'none'")
    return parts


def split_batch(batch_size: int, ratio: float) -> tuple[int, int]:
    """(labeled, pseudo) crops per batch; both must be ≥ 1."""
    n_labeled = round(ratio * batch_size)
    if not 0 < n_labeled < batch_size:
        raise ConfigError(f"--labeled-ratio {ratio} leaves {n_labeled} of {batch_size} crops "
                          "labeled; pick a ratio that keeps both parts non-empty")
    return n_labeled, batch_size - n_labeled


def check_loss_weight(value: float) -> float:
    """The pseudo part's loss scale, checked (0 trains on the labeled crops alone)."""
    if not value >= 0:
        raise ConfigError(f"--pseudo-loss-weight {value}: must be ≥ 0, e.g. 0.3 or 1")
    return float(value)


def reliability(ann: dict[str, Any], mode: str, k: int, source: str) -> np.ndarray:
    """Per-joint loss weights in [0, 1] of one pseudo-label annotation for `mode`."""
    if mode == "none":
        return np.ones(k, dtype=np.float32)
    for name in WEIGHT_FIELDS[mode]:
        if name in ann:
            values = np.asarray(ann[name], dtype=np.float32).reshape(-1)
            if values.shape != (k,):
                raise ConfigError(f"{source}: annotation {ann.get('id')} has {values.size} "
                                  f"'{name}' values for {k} joints")
            return np.clip(values, 0.0, 1.0)
    raise ConfigError(f"{source}: --pseudo-weight {mode} needs a per-joint "
                      f"'{WEIGHT_FIELDS[mode][0]}' list in each annotation (merge it from "
                      "shards that record it) or use --pseudo-weight none")


def load_pseudo(cfg: TrainConfig) -> tuple[list[PersonInstance], np.ndarray]:
    """Pseudo-labeled persons with at least one kept joint, and their joint weights [N, K]."""
    p = cfg.pseudo
    if p.weight not in WEIGHTS:
        raise ConfigError(f"--pseudo-weight must be one of {', '.join(WEIGHTS)}, got {p.weight!r}")
    labels = p.labels
    assert labels is not None  # make_labeled_loader mixes only when pseudo.labels is set
    instances = load_instances(labels, p.images or "/")
    check_images_found(instances, p.images, labels)
    anns = {a.get("id", -1): a for a in load_coco_keypoints(labels)["annotations"]}
    # K as TopDownDataset counts it (first person with keypoints), so the rows fit its targets
    k = next((len(i.keypoints) for i in instances if i.keypoints is not None), 17)
    weights = np.stack([reliability(anns[i.ann_id], p.weight, k, labels) for i in instances])
    return instances, weights


class MixedDataset(Dataset):
    """Labeled items at [0, L), pseudo-labeled ones at [L, L + P); a pseudo item's target
    weights are multiplied by √reliability (see the module docstring)."""

    def __init__(self, labeled: TopDownDataset, pseudo: TopDownDataset,
                 weights: np.ndarray) -> None:
        if labeled.num_joints != pseudo.num_joints:
            raise ConfigError(f"pseudo-labels have {pseudo.num_joints} joints, the labeled set "
                              f"{labeled.num_joints}; label with a model of this keypoint set")
        self.labeled, self.pseudo = labeled, pseudo
        self.sqrt_weights = torch.from_numpy(np.sqrt(weights).astype(np.float32))
        self.instances = labeled.instances + pseudo.instances  # for UnreadableImages
        self.num_joints, self.epoch = labeled.num_joints, 0

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.labeled.set_epoch(epoch)
        self.pseudo.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.labeled)
        if index < n:
            return self.labeled[index]
        item = self.pseudo[index - n]
        weights = self.sqrt_weights[item["index"]]
        if self._flipped(item["index"]):  # the crop's joint channels were swapped
            weights = weights[self.pseudo.flip_perm]
        item["target_weight"] = item["target_weight"] * weights
        item["index"] = item["index"] + n
        if item["unreadable"] >= 0:
            item["unreadable"] = item["unreadable"] + n
        return item

    def _flipped(self, index: int) -> bool:
        """Whether pseudo item `index` was flipped: TopDownDataset's own draw, replayed
        from its (seed, epoch, index) key."""
        augment = self.pseudo.augment
        if augment is None:
            return False
        rng = np.random.default_rng([self.pseudo.seed, self.pseudo.epoch, index])
        return bool(augment.sample(rng, 1)[2][0])


class MixedBatchSampler:
    """Batches of exactly `n_labeled` labeled indices then `n_pseudo` pseudo ones.

    One epoch is one pass over the pseudo set (its own permutation); the labeled set is
    drawn from back-to-back permutations, so a small labeled split repeats across the
    epoch and every labeled person appears before any appears twice. Keyed by (seed,
    dataset epoch, rank): a resumed run and each DDP rank get their own fixed order.
    """

    def __init__(self, dataset: MixedDataset, n_labeled: int, n_pseudo: int, seed: int,
                 rank: int = 0) -> None:
        self.dataset, self.n_labeled, self.n_pseudo = dataset, n_labeled, n_pseudo
        self.seed, self.rank = seed, rank
        self.labeled_size = len(dataset.labeled)
        self.pseudo_size = len(dataset.pseudo)
        if self.pseudo_size < n_pseudo:
            raise ConfigError(f"{self.pseudo_size} pseudo-labeled persons is fewer than the "
                              f"{n_pseudo} a batch takes; lower --batch-size or label more")

    def __len__(self) -> int:
        return self.pseudo_size // self.n_pseudo

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.dataset.epoch, self.rank])
        pseudo = rng.permutation(self.pseudo_size) + self.labeled_size
        need = len(self) * self.n_labeled
        labeled = np.concatenate([rng.permutation(self.labeled_size)
                                  for _ in range(-(-need // self.labeled_size))])
        for b in range(len(self)):
            yield (labeled[b * self.n_labeled:(b + 1) * self.n_labeled].tolist()
                   + pseudo[b * self.n_pseudo:(b + 1) * self.n_pseudo].tolist())


def make_mixed_loader(cfg: TrainConfig, codec: HeatmapCodec, labeled: TopDownDataset,
                      rank: int = 0) -> DataLoader:
    """The loader of mixed batches for `cfg.pseudo` around the labeled dataset."""
    n_labeled, n_pseudo = split_batch(cfg.optim.batch_size, cfg.pseudo.labeled_ratio)
    parse_noise(cfg.pseudo.noise)
    instances, weights = load_pseudo(cfg)
    augment = AffineAugment(cfg.data.scale_factor, cfg.data.rotation_factor)
    pseudo = TopDownDataset(instances, codec, augment, seed=cfg.runtime.seed + 1,
                            cache_images=cfg.data.cache_images,
                            encoded=encoded_items(cfg.data.decode))
    dataset = MixedDataset(labeled, pseudo, weights)
    log.info("mixed batches: %d labeled + %d pseudo-labeled crops (of %d and %d persons)",
             n_labeled, n_pseudo, len(labeled), len(pseudo))
    sampler = MixedBatchSampler(dataset, n_labeled, n_pseudo, cfg.runtime.seed, rank)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
                      pin_memory=torch.cuda.is_available(),
                      collate_fn=loader_collate(cfg.data.decode))


class PseudoMixStep:
    """A supervised step on a mixed batch whose pseudo-labeled part is noised first
    (a `steps.TrainStep`: no teacher, no unlabeled stream: the pseudo part is in the batch)."""

    teacher: StepTeacher | None = None
    stream: UnlabeledBatches | None = None

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, device: torch.device,
                 amp: torch.dtype | None) -> None:
        self.model, self.optimizer, self.device, self.amp = model, optimizer, device, amp
        self.channels_last, self.seed = cfg.runtime.channels_last, cfg.runtime.seed
        self.n_labeled, n_pseudo = split_batch(cfg.optim.batch_size, cfg.pseudo.labeled_ratio)
        self.noise = parse_noise(cfg.pseudo.noise)
        self.loss_weight = check_loss_weight(cfg.pseudo.loss_weight)
        self.affine = StrongAffine() if "affine" in self.noise else None
        self.mixer = None
        if "mum" in self.noise:
            from posemum_deploy.training.mum import PoseMumMixer, check_group

            ssl = cfg.ssl
            check_group(n_pseudo, ssl.group_size)
            self.mixer = PoseMumMixer(group_size=ssl.group_size, tiles=ssl.tiles,
                                      p=ssl.mix_prob, unmix_at=ssl.unmix_at,
                                      image_level=True, feature_level=False)
            self.mixer.check_input_size(cfg.data.input_hw)
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the noise generator for this epoch (a resumed run replays it)."""
        self.generator.manual_seed(self.seed * STEP_SEED_STRIDE + epoch * STEP_EPOCH_STRIDE
                                   + NOISE_SEED_OFFSET)

    def noised(self, images: Tensor, target: Tensor, weight: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """The strong view of pseudo crops [P, 3, H, W] (normalised) and their targets.
        A joint that θ moves out of the heatmap loses its weight (its map would be empty)."""
        g = self.generator
        if self.affine is not None:
            theta = self.affine.sample(images.shape[0], (images.shape[-2], images.shape[-1]), g,
                                       images.device)
            peak = target.amax(dim=(2, 3))
            images, target = warp(images, theta), warp(target, theta)
            weight = weight * (target.amax(dim=(2, 3)) > 0.5 * peak).to(weight.dtype)
        if "cutout" in self.noise:
            images = joint_cutout(images, target * (weight > 0)[:, :, None, None], g)
        if "randaugment" in self.noise:
            images = rand_augment(images, g)
        return images, target, weight

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x = normalize_batch(batch["image"].to(self.device, non_blocking=True))
        target = batch["target"].to(self.device, non_blocking=True)
        weight = batch["target_weight"].to(self.device, non_blocking=True)
        n = self.n_labeled
        strong, pseudo_target, pseudo_weight = self.noised(x[n:], target[n:], weight[n:])
        hook = None
        if self.mixer is not None:
            strong, hook = self.mixer.start(strong, self.generator, skip=n)
        x = torch.cat([x[:n], strong])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                            enabled=self.amp is not None):
            pred = self.model(x, after_stage=hook) if hook is not None else self.model(x)
        sup = joints_mse_loss(pred[:n], target[:n], weight[:n])
        pseudo = joints_mse_loss(pred[n:], pseudo_target, pseudo_weight)
        # Each part is a mean over its own crops; weighted by their share of the batch,
        # the sum is the mean over the whole batch, as a plain supervised step computes
        # (at loss_weight 1).
        share = n / x.shape[0]
        loss = share * sup + (1 - share) * self.loss_weight * pseudo
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "loss_labeled": sup.detach(),
                "loss_pseudo": pseudo.detach()}
