"""Crops in, image-space keypoints out: pre/post-processing around any Backend.

Pure and batched across images: the caller packs crops from many images into one
array; this module pads to the backend's batch size, runs it (twice with flip test),
decodes all heatmaps at once and maps them back through the inverse affines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.coco import flip_permutation
from posemum_deploy.data.codec import HeatmapCodec, flip_back
from posemum_deploy.data.transforms import (
    affine_matrices,
    box_to_center_scale,
    normalize_numpy,
    transform_points,
    warp_crops,
)
from posemum_deploy.inference.backends import Backend


def codec_for(meta: ModelMetadata) -> HeatmapCodec:
    """The model's codec; `extra["heatmap_offset"]` (0 for teachers imported from mmpose or
    the original SimpleBaseline, see models/upstream.py) sets its coordinate convention."""
    return HeatmapCodec(meta.input_hw, meta.heatmap_hw, meta.sigma,
                        float(meta.extra.get("heatmap_offset", 0.5)))


@dataclass
class CropBatch:
    """Crops of people ready for the network, with the affines to map results back."""

    crops: np.ndarray        # [N, H, W, 3] uint8 RGB
    inverse: np.ndarray      # [N, 2, 3] crop → image
    boxes: np.ndarray        # [N, 4] xywh in the image
    box_scores: np.ndarray   # [N]
    areas: np.ndarray        # [N] (scale·200)² as SimpleBaseline uses for OKS-NMS


def make_crops(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray,
               input_hw: tuple[int, int]) -> CropBatch:
    """Affine crops of every box of one image (aspect-fixed, 1.25 padding, no rotation)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    center, scale, inv, areas = crop_frames(boxes, input_hw)
    crops = warp_crops(image, affine_matrices(center, scale, 0.0, input_hw), input_hw)
    return CropBatch(crops, inv, boxes, np.asarray(box_scores, dtype=np.float64).reshape(-1), areas)


def crop_frames(boxes: np.ndarray, input_hw: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes [N, 4] xywh → centers, scales, crop → image affines [N, 2, 3] and the
    (scale·200)² areas OKS-NMS uses: the crop geometry of host and device crops alike."""
    center, scale = box_to_center_scale(boxes, input_hw[1] / input_hw[0])
    inverse = affine_matrices(center, scale, 0.0, input_hw, inverse=True)
    return center, scale, inverse, np.prod(scale * 200.0, axis=1)


class PoseEstimator:
    """Runs a Backend on crop batches of any length with fixed-size padded calls."""

    def __init__(self, backend: Backend, batch_size: int = 32, flip: bool = False,
                 dark: bool = False) -> None:
        self.backend = backend
        self.meta = backend.metadata
        self.codec = codec_for(self.meta)
        self.batch_size = batch_size
        self.flip = flip
        self.dark = dark
        self.flip_perm = flip_permutation(self.meta.num_joints, tuple(self.meta.flip_pairs))

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops [N, H, W, 3] → heatmaps [N, K, h, w] (flip-averaged if enabled)."""
        out = self._run(normalize_numpy(crops, self.meta.mean, self.meta.std))
        if self.flip:
            flipped = self._run(normalize_numpy(crops[:, :, ::-1], self.meta.mean, self.meta.std))
            out = 0.5 * (out + flip_back(flipped, self.flip_perm, self.codec.flip_shift))
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        outs = []
        for start in range(0, n, self.batch_size):
            chunk = batch[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.backend.predict(chunk)[: self.batch_size - pad])
        if not outs:
            h, w = self.meta.heatmap_hw
            return np.zeros((0, self.meta.num_joints, h, w), np.float32)
        return np.concatenate(outs)

    def decode(self, heatmaps: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Heatmaps [N, K, h, w] + crop → image affines → keypoints [N, K, 3] (x, y, score)."""
        coords, scores = self.codec.decode(heatmaps, dark=self.dark)
        xy = transform_points(coords, inverse)
        return np.concatenate([xy, scores[..., None]], axis=-1)

    def estimate(self, batch: CropBatch) -> np.ndarray:
        """Keypoints [N, K, 3] in image coordinates for a CropBatch."""
        return self.decode(self.heatmaps(batch.crops), batch.inverse)
