"""--jpeg-decoder: which decoder a run gets, clear refusals, and (on a GPU with
nvImageCodec installed) hardware-decoded pixels that match cv2 with EXIF applied."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posemum_deploy.data.jpeg_decoders import (
    TorchvisionJpeg,
    check_jpeg_decoder,
    make_jpeg_decoder,
    nvimgcodec_installed,
)
from posemum_deploy.errors import BackendUnavailableError, ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NVIMGCODEC_GPU = torch.cuda.is_available() and nvimgcodec_installed()


def test_a_gpu_decoder_needs_a_gpu_and_torchvision_works_anywhere(tmp_path: Path) -> None:
    """No GPU needed: torchvision is accepted for either device and decodes on the CPU;
    nvimgcodec is accepted for a model on a GPU only (installed or not: the model's
    device is checked first)."""
    for device in (CPU, CUDA):
        assert check_jpeg_decoder("torchvision", device) is None
    assert check_jpeg_decoder("nvimgcodec", CUDA) is None
    with pytest.raises(ConfigError, match="nvimgcodec decodes on a GPU, but the model runs on cpu"):
        check_jpeg_decoder("nvimgcodec", CPU)
    decoder = make_jpeg_decoder("torchvision", CPU)
    assert isinstance(decoder, TorchvisionJpeg) and decoder.device == CPU
    expected = _jpeg_with_orientation(tmp_path / "a.jpg", 1)
    (image,) = decoder([(tmp_path / "a.jpg").read_bytes()])
    assert image.device == CPU and tuple(image.shape) == (3, *expected.shape[:2])


def test_refusals_name_the_option_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="--jpeg-decoder 'pillow'"):
        check_jpeg_decoder("pillow", CPU)
    with pytest.raises(ConfigError, match="on a GPU.*torchvision"):
        make_jpeg_decoder("nvimgcodec", CPU)


@pytest.mark.skipif(nvimgcodec_installed(), reason="checks the message when it is absent")
def test_missing_nvimgcodec_says_how_to_install_it() -> None:
    with pytest.raises(BackendUnavailableError, match="pip install 'nvidia-nvimgcodec"):
        make_jpeg_decoder("nvimgcodec", CUDA)
    with pytest.raises(BackendUnavailableError, match="pip install 'nvidia-nvimgcodec"):
        check_jpeg_decoder("nvimgcodec")  # before any model loads


def test_nvimgcodec_without_a_gpu_is_refused_before_work(monkeypatch) -> None:
    import posemum_deploy.data.jpeg_decoders as jd

    monkeypatch.setattr(jd, "nvimgcodec_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no.*GPU|none visible"):
        check_jpeg_decoder("nvimgcodec")
    check_jpeg_decoder("torchvision")


def _jpeg_with_orientation(path: Path, orientation: int) -> np.ndarray:
    """A photo-like JPEG tagged with an EXIF orientation; returns what cv2 shows."""
    from PIL import Image

    rng = np.random.default_rng(orientation)
    base = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (9, 9), 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(base).save(path, exif=exif.tobytes(), quality=95)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _check_decoder(decoder, tmp_path: Path) -> None:
    expected, chunk = [], []
    for orientation in (1, 3, 6, 8):
        path = tmp_path / f"o{orientation}.jpg"
        expected.append(_jpeg_with_orientation(path, orientation))
        chunk.append(path.read_bytes())
    corrupt = chunk[0][:200] + b"\x00" * 300 + chunk[0][-2:]
    out = decoder(chunk + [b"\xff\xd8not a jpeg\xff\xd9", corrupt])
    assert len(out) == 6
    for image, ref in zip(out[:4], expected, strict=True):
        assert image is not None and image.dtype == torch.uint8
        got = image.permute(1, 2, 0).cpu().numpy()
        assert got.shape == ref.shape  # orientations 6 and 8 swap height and width
        assert np.abs(got.astype(int) - ref).mean() < 3.0
    assert out[4] is None  # the caller hands it to cv2, which names the file


def test_torchvision_decoder_applies_exif_like_cv2(tmp_path: Path) -> None:
    _check_decoder(TorchvisionJpeg(CPU), tmp_path)


@pytest.mark.skipif(not NVIMGCODEC_GPU, reason="needs a CUDA GPU and nvImageCodec")
def test_nvimgcodec_decoder_applies_exif_like_cv2(tmp_path: Path) -> None:
    decoder = make_jpeg_decoder("nvimgcodec", CUDA)
    assert decoder.name == "nvimgcodec"
    _check_decoder(decoder, tmp_path)


@pytest.mark.skipif(not NVIMGCODEC_GPU, reason="needs a CUDA GPU and nvImageCodec")
def test_nvimgcodec_images_survive_on_a_side_stream(tmp_path: Path) -> None:
    """Decoded on the labeler's own stream, read on the default one after a sync: the
    buffers (stream-ordered allocations) must hold the pixels until their tensors die."""
    decoder = make_jpeg_decoder("nvimgcodec", CUDA)
    refs = [_jpeg_with_orientation(tmp_path / f"s{i}.jpg", 1) for i in range(2)]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        images = decoder([(tmp_path / f"s{i}.jpg").read_bytes() for i in range(2)])
        stacked = torch.stack([im.float() for im in images])
    side.synchronize()
    del images
    torch.cuda.synchronize()
    for got, ref in zip(stacked.permute(0, 2, 3, 1).cpu().numpy(), refs, strict=True):
        assert np.abs(got - ref).mean() < 3.0
