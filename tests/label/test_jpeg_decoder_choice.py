"""The JPEG decoder choice of a labeling run: checked before work, recorded for resume."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posemum_deploy.data.jpeg_decoders import nvimgcodec_installed
from posemum_deploy.errors import ConfigError
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.writer import load_manifest

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NVIMGCODEC_GPU = torch.cuda.is_available() and nvimgcodec_installed()


def test_the_choice_is_checked_before_work_and_recorded_for_resume(tmp_path: Path,
                                                                   tiny_model: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.full((40, 30, 3), 128, np.uint8))
    with pytest.raises(ConfigError, match="--jpeg-decoder"):
        label_folder(tiny_model, images, tmp_path / "bad",
                     LabelSettings(decode="device", jpeg_decoder="libjpeg"),
                     RunSettings(backend="torch"))
    label_folder(tiny_model, images, tmp_path / "out",
                 LabelSettings(decode="device", jpeg_decoder="torchvision"),
                 RunSettings(backend="torch"))
    assert load_manifest(tmp_path / "out")["settings"]["jpeg_decoder"] == "torchvision"
