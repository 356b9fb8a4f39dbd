"""Crops that already live on the accelerator in, image-space keypoints out.

The GPU labeling path decodes JPEGs and warps crops on the device; copying those crops
back to the host for `PoseEstimator` and the heatmaps back again would cost more than
the network. `TensorPoseEstimator` keeps everything on the device: fixed-size padded
batches, flip test, and the argmax + quarter-pixel decode of `HeatmapCodec` (its torch
twin, `codec.decode_quarter_torch`), so only [N, K, 3] keypoints cross to the host. DARK
refinement runs on the host copy (it blurs every heatmap with cv2), as `PoseEstimator` does it.
"""
from __future__ import annotations

import numpy as np
import torch

from posemum_deploy.data.codec import decode_quarter_torch, flip_back
from posemum_deploy.data.device import host_to_device
from posemum_deploy.data.transforms import normalize_batch, transform_points
from posemum_deploy.inference.backends import Backend
from posemum_deploy.inference.pipeline import PoseEstimator


class TensorPoseEstimator(PoseEstimator):
    """`PoseEstimator` for normalised NCHW crop tensors on the backend's device.

    Backends with `predict_tensor` (torch, fast torch) stay on the device; any other
    backend gets a host copy per batch, so the path works with every runtime.

    The hooks take and give tensors where `PoseEstimator`'s take and give NumPy arrays
    (hence the `type: ignore[override]`s): not substitutable per call, by design; the
    caller hands each estimator the crops it was made for (label/worker.py picks it) and
    passes its heatmaps back to its own `decode` only.
    """

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        predict = getattr(self.backend, "predict_tensor", None)
        if predict is not None:
            return predict(batch).float()
        out = self.backend.predict(batch.float().cpu().numpy())
        return torch.from_numpy(np.asarray(out)).to(batch.device)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # tensors
        outs = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros((pad, *chunk.shape[1:]))])
            outs.append(self._predict(chunk)[: self.batch_size - pad])
        if not outs:
            h, w = self.meta.heatmap_hw
            return batch.new_zeros((0, self.meta.num_joints, h, w), dtype=torch.float32)
        return torch.cat(outs)

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # tensors
        """Normalised crops [N, 3, H, W] → heatmaps [N, K, h, w] (flip-averaged if enabled)."""
        out = self._run(crops)
        if self.flip:
            out = 0.5 * (out + flip_back(self._run(crops.flip(-1)), self.flip_perm,
                                         self.codec.flip_shift))
        return out

    def decode(self, heatmaps: torch.Tensor,  # type: ignore[override]  # device heatmaps
               inverse: np.ndarray) -> np.ndarray:
        """Heatmaps [N, K, h, w] + crop → image affines → keypoints [N, K, 3] (NumPy)."""
        if self.dark:
            coords, scores = self.codec.decode(heatmaps.cpu().numpy(), dark=True)
        else:
            hm_coords, t_scores = decode_quarter_torch(heatmaps)
            host = torch.cat([hm_coords, t_scores.unsqueeze(-1)], dim=-1).cpu().numpy()
            coords, scores = self.codec.to_input(host[..., :2]), host[..., 2]  # one copy, one sync
        xy = transform_points(coords, inverse)
        return np.concatenate([xy, scores[..., None]], axis=-1)


class CropUploader:
    """Host uint8 crops [N, H, W, 3] → normalised [N, 3, H, W] float32 on `device`.

    What crosses the bus is uint8 (a quarter of the float32 batch), through pinned memory
    without a host sync (`host_to_device`): on an H100 the host path's main thread spent
    more time normalising a 150 MB float batch and copying it into pinned memory per call
    than the network took. The NHWC → NCHW transpose is made on the uint8 device tensor
    and normalising gives the same float32 values as `normalize_numpy`, so a backend sees
    exactly the batch the host path would have given it.
    """

    def __init__(self, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.device, self.mean, self.std = device, mean, std

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        x = host_to_device(torch.from_numpy(np.ascontiguousarray(crops)), self.device)
        return normalize_batch(x.permute(0, 3, 1, 2).contiguous(), self.mean, self.std)


class UploadingPoseEstimator(TensorPoseEstimator):
    """`PoseEstimator` for crops made on the host (cv2 decode and warps) and a network on
    the GPU: uint8 crops go up once (`CropUploader`), flip test, heatmap decode and the
    padding stay on the device, and only keypoints come back."""

    def __init__(self, backend: Backend, batch_size: int = 32, flip: bool = False,
                 dark: bool = False, device: torch.device | None = None) -> None:
        super().__init__(backend, batch_size, flip, dark)
        device = device or getattr(backend, "device", None) or torch.device("cpu")
        self.upload = CropUploader(torch.device(device), self.meta.mean, self.meta.std)

    def heatmaps(self, crops: np.ndarray) -> torch.Tensor:  # type: ignore[override]  # host crops in
        """uint8 crops [N, H, W, 3] (NumPy) → heatmaps [N, K, h, w] on the device."""
        return super().heatmaps(self.upload(crops))
