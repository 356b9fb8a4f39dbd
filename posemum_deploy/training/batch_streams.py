"""The two batch streams a training step reads: labeled crops with heatmap targets (the
rounds mix pseudo-labeled persons into them) and, for the semi-supervised presets, the
endless unlabeled stream. Both reshuffle per (seed, epoch, pass) and rank, so a run
resumed at an epoch sees the batches an unbroken one would.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch.utils.data import DataLoader

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.datasets import (
    HasInstances,
    TopDownDataset,
    UnreadableImages,
    check_images_found,
    load_instances,
    load_unlabeled_instances,
)
from posemum_deploy.data.transforms import AffineAugment
from posemum_deploy.errors import ConfigError
from posemum_deploy.training import distributed as ddp
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.device_batches import batch_crops, encoded_items, loader_collate

# Seeds derived from `runtime.seed`. Each random source gets its own, so none replays
# another's sequence (the values are the ones every recorded result was run with):
UNLABELED_AUGMENT_SEED_OFFSET = 1  # the unlabeled set's weak-view affine (labeled: seed)
UNLABELED_SAMPLER_SEED_OFFSET = 7919  # the unlabeled sampler's shuffle (labeled: seed)
PASSES_PER_EPOCH_KEY = 1000  # stream key = epoch * this + pass: distinct up to 1000 passes


class LabeledData(HasInstances, Protocol):
    """The labeled loader's dataset as the loop sees it: a TopDownDataset, or in the
    rounds a pseudo_mix.MixedDataset (labeled and pseudo-labeled persons)."""

    num_joints: int

    def set_epoch(self, epoch: int) -> None: ...


def labeled_data(loader: DataLoader) -> LabeledData:
    """The dataset of a `make_labeled_loader` loader (DataLoader's annotation forgets it)."""
    return cast(LabeledData, loader.dataset)


def make_labeled_loader(cfg: TrainConfig, codec: HeatmapCodec,
                        env: ddp.DistEnv = ddp.DistEnv()) -> DataLoader:
    """Labeled crops, sharded across ranks under DDP. Workers are not persistent, so each
    pass sees the dataset's current epoch (its augmentation key)."""
    instances = load_instances(cfg.data.labeled, cfg.data.images, cfg.data.labeled_count)
    check_images_found(instances, cfg.data.images, cfg.data.labeled)
    augment = AffineAugment(cfg.data.scale_factor, cfg.data.rotation_factor)
    dataset = TopDownDataset(instances, codec, augment, seed=cfg.runtime.seed,
                             cache_images=cfg.data.cache_images,
                             encoded=encoded_items(cfg.data.decode))
    if cfg.pseudo.labels:  # rounds: labeled and pseudo-labeled persons in every batch
        from posemum_deploy.training.pseudo_mix import make_mixed_loader

        return make_mixed_loader(cfg, codec, dataset, env.rank)
    if len(dataset) // env.world_size < cfg.optim.batch_size:
        raise ConfigError(f"{cfg.data.labeled}: {len(dataset)} labeled instances is fewer than "
                          f"the batch size {cfg.optim.batch_size} per process; lower --batch-size")
    sampler = ddp.make_sampler(dataset, env, cfg.runtime.seed)
    return DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available(),
                      collate_fn=loader_collate(cfg.data.decode))


def labeled_batches(loader: DataLoader, steps: int, seed: int,
                    epoch: int) -> Iterator[dict[str, Any]]:
    """`steps` labeled batches for one epoch, reshuffling when an epoch spans several
    passes (an SSL epoch may be a pass over the larger unlabeled set)."""
    done, passes = 0, 0
    while done < steps:
        key = epoch + passes * 100_003
        labeled_data(loader).set_epoch(key)
        ddp.set_sampler_epoch(loader.sampler, seed, key)
        for batch in loader:
            if done >= steps:
                return
            done += 1
            yield batch
        passes += 1


class UnlabeledStream:
    """Endless unlabeled batches, reshuffled per (seed, epoch, pass) and per rank."""

    def __init__(self, loader: DataLoader, seed: int, crops: Any = None) -> None:
        self.loader, self.seed, self.crops = loader, seed, crops  # crops: decode on device
        # make_unlabeled_stream's loader: DataLoader's annotation forgets the dataset's class
        self.dataset = cast(TopDownDataset, loader.dataset)
        self.unreadable = UnreadableImages(self.dataset)
        self.epoch, self.passes = 0, 0
        self._it: Iterator[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Restart the stream: a run resumed at this epoch sees the same batches."""
        self.epoch, self.passes, self._it = epoch, 0, None

    def next(self) -> dict[str, Any]:
        while True:
            if self._it is None:
                key = self.epoch * PASSES_PER_EPOCH_KEY + self.passes
                self.dataset.set_epoch(key)
                ddp.set_sampler_epoch(self.loader.sampler,
                                      self.seed + UNLABELED_SAMPLER_SEED_OFFSET, key)
                self._it = iter(self.loader)
                self.passes += 1
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                continue
            if self.crops is not None:
                batch = self.crops(batch)
            self.unreadable.note(batch)
            return batch


def make_unlabeled_stream(cfg: TrainConfig, codec: HeatmapCodec, env: ddp.DistEnv,
                          device: torch.device = torch.device("cpu")) -> UnlabeledStream:
    ssl = cfg.ssl
    if not ssl.unlabeled:
        raise ConfigError(f"preset {cfg.preset!r} is semi-supervised: pass --unlabeled (a COCO "
                          "json, a pseudo-label json or an image folder)")
    instances = load_unlabeled_instances(ssl.unlabeled, ssl.unlabeled_images, ssl.unlabeled_boxes)
    check_images_found(instances, None if Path(ssl.unlabeled).is_dir() else ssl.unlabeled_images,
                       ssl.unlabeled)
    dataset = TopDownDataset(instances, codec, AffineAugment(),
                             seed=cfg.runtime.seed + UNLABELED_AUGMENT_SEED_OFFSET,
                             with_targets=False, encoded=encoded_items(cfg.data.decode))
    per_rank = len(dataset) // max(env.world_size, 1)
    if per_rank < ssl.unlabeled_batch_size:
        raise ConfigError(f"{ssl.unlabeled}: {len(dataset)} unlabeled crops is fewer than the "
                          f"unlabeled batch size {ssl.unlabeled_batch_size} per process")
    loader = DataLoader(dataset, batch_size=ssl.unlabeled_batch_size, drop_last=True,
                        sampler=ddp.make_sampler(dataset, env, cfg.runtime.seed
                                                 + UNLABELED_SAMPLER_SEED_OFFSET),
                        num_workers=cfg.data.workers, pin_memory=torch.cuda.is_available(),
                        collate_fn=loader_collate(cfg.data.decode))
    return UnlabeledStream(loader, cfg.runtime.seed,
                           batch_crops(cfg.data.decode, device, cfg.data.input_hw))
