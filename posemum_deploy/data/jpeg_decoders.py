"""JPEG decoders for `--decode device`: a chunk of file bytes in, [3, H, W] uint8 images
on the device out (None where one cannot decode a file; the caller falls back to cv2).

- `torchvision`: `torchvision.io.decode_jpeg(device=...)`: nvjpeg's batched hardware
  backend on GPUs with JPEG engines (A100, H100, H200; the hybrid backend elsewhere),
  one call at a time per process (a global lock), on a blocking stream synced with the
  default stream (labelers therefore infer on a stream of their own), EXIF ignored
  (applied here). On a CPU device it is torchvision's libjpeg decode, which is how the
  device path is tested without a GPU.
- `nvimgcodec`: NVIDIA nvImageCodec (`pip install nvidia-nvimgcodec-cu13[nvjpeg]`, or
  `-cu12`): the same hardware engines, its own CPU thread pool, decoding onto the
  caller's stream with the GIL released, EXIF applied itself.

Measured on an H200 with 640×480 photos (README), nvimgcodec decoded at half
torchvision's rate, so torchvision is the default and nvimgcodec an opt-in.

The two can differ by a grey level or two (IDCT and chroma upsampling), so the chosen
name is part of a labeling run's settings, and a resume refuses a different one.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from posemum_deploy.data.images import decode_image, jpeg_exif_orientation, orient_chw
from posemum_deploy.errors import BackendUnavailableError, ConfigError, import_optional

if TYPE_CHECKING:  # torch loads with the decoders, not with the runner that names them
    import torch

log = logging.getLogger(__name__)
JPEG_DECODERS = ("torchvision", "nvimgcodec")
NVIMGCODEC_HINT = ("--jpeg-decoder nvimgcodec needs NVIDIA nvImageCodec: pip install "
                   "'nvidia-nvimgcodec-cu13[nvjpeg]' (or -cu12 for CUDA 12)")


class JpegDecoder(Protocol):
    """Decodes a chunk of JPEG files' bytes on one device."""

    name: str

    def __call__(self, chunk: list[bytes]) -> list[torch.Tensor | None]: ...


def nvimgcodec_installed() -> bool:
    """Whether nvImageCodec's Python package is importable (without importing it)."""
    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except (ImportError, ValueError):
        return False


def check_jpeg_decoder(name: str, device: torch.device | None = None) -> None:
    """Refuse a `--jpeg-decoder` that cannot work: an unknown name; nvimgcodec for a model
    that is not on a GPU (`device`), or, before any model loads (no `device` yet), on a
    machine without nvImageCodec or a visible GPU."""
    if name not in JPEG_DECODERS:
        raise ConfigError(f"--jpeg-decoder {name!r}: choose {', '.join(JPEG_DECODERS)}")
    if name != "nvimgcodec":
        return
    if device is not None:
        if device.type != "cuda":
            raise ConfigError(f"--jpeg-decoder nvimgcodec decodes on a GPU, but the model runs "
                              f"on {device}; use --jpeg-decoder torchvision")
        return
    if not nvimgcodec_installed():
        raise BackendUnavailableError(NVIMGCODEC_HINT)
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--jpeg-decoder nvimgcodec decodes on a GPU and this machine has "
                          "none visible; use --jpeg-decoder torchvision")


def decode_files(files: list[tuple[str | Path, bytes]], jpeg: JpegDecoder, device: torch.device
                 ) -> list[torch.Tensor | str]:
    """uint8 [3, H, W] images on `device` (or the error text) for (path, bytes) files: the
    JPEGs by `jpeg` in one call, anything it cannot decode (PNG, CMYK JPEG, ...) by cv2
    and uploaded. The path only names a file in messages."""
    import torch

    out: list[torch.Tensor | str | None] = [None] * len(files)
    jpegs = [i for i, (_, data) in enumerate(files) if data[:2] == b"\xff\xd8"]
    if jpegs:
        for i, image in zip(jpegs, jpeg([files[i][1] for i in jpegs]), strict=True):
            out[i] = image
    for i, (path, data) in enumerate(files):
        if out[i] is None:  # not a JPEG, or one the device decoder refused
            try:
                pixels = decode_image(data, path)
                out[i] = torch.from_numpy(pixels).permute(2, 0, 1).to(device)
            except (OSError, ValueError) as e:
                log.warning("skipped %s: %s", path, e)
                out[i] = str(e)
    return out  # type: ignore[return-value]  # each None slot was set in the loop above


def make_jpeg_decoder(name: str, device: torch.device, threads: int = 4) -> JpegDecoder:
    """The `name` decoder for `device`; `threads` sizes nvImageCodec's CPU pool (several
    labeling processes share the machine's cores)."""
    check_jpeg_decoder(name, device)
    if name == "nvimgcodec":
        return NvImageCodecJpeg(device, threads)
    return TorchvisionJpeg(device)


class TorchvisionJpeg:
    """nvjpeg through torchvision (one batched call), EXIF orientation applied by hand."""

    name = "torchvision"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, chunk: list[bytes]) -> list[torch.Tensor | None]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in chunk]
        try:
            decoded: list[torch.Tensor | None] = list(
                decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad file fails the batch: retry alone to find it
            decoded = [self._one(t) for t in tensors]
        # nvjpeg ignores EXIF (torchvision applies it on the CPU only): do it here
        return [None if image is None else orient_chw(image, jpeg_exif_orientation(data))
                for image, data in zip(decoded, chunk, strict=True)]

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            return None


class NvImageCodecJpeg:
    """nvImageCodec's batched decode (hardware JPEG engines where the GPU has them).

    Decodes onto the caller's current CUDA stream: the images are allocated, written and
    (when their tensors die) freed in that stream's order, so no extra synchronisation
    is needed. A file it cannot parse or decode comes back as None.
    """

    name = "nvimgcodec"

    def __init__(self, device: torch.device, threads: int = 4) -> None:
        import torch

        if device.type != "cuda":
            raise ConfigError("nvImageCodec decodes on a CUDA device; use the torchvision decoder")
        self.nv = import_optional("nvidia.nvimgcodec", NVIMGCODEC_HINT)
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        try:
            self.decoder = self.nv.Decoder(device_id=index, max_num_cpu_threads=threads)
        except Exception as e:  # a wheel built for another CUDA major, no nvjpeg, ...
            raise BackendUnavailableError(f"nvImageCodec could not start on {self.device}: {e}; "
                                          "use --jpeg-decoder torchvision") from e
        spec = self.nv.ColorSpec
        rgb = spec.SRGB if hasattr(spec, "SRGB") else spec.RGB  # renamed in 0.7
        self.params = self.nv.DecodeParams(apply_exif_orientation=True, color_spec=rgb)

    def _stream(self, data: bytes) -> Any:
        try:
            return self.nv.CodeStream(data)
        except Exception:  # not parseable: the host decoder decides (and names the file)
            return None

    def _decode(self, streams: list[Any]) -> list[Any]:
        import torch

        stream = torch.cuda.current_stream(self.device).cuda_stream
        try:
            out = self.decoder.decode(streams, params=self.params, cuda_stream=stream)
            if len(out) == len(streams):
                return list(out)
        except RuntimeError:
            pass
        # A batch that raised, or (older releases) dropped its failed images from the
        # list: decode one at a time to know which file failed.
        return [self._one(s, stream) for s in streams]

    def _one(self, code_stream: Any, stream: int) -> Any:
        try:
            return self.decoder.decode(code_stream, params=self.params, cuda_stream=stream)
        except RuntimeError:
            return None

    def _tensor(self, image: Any) -> torch.Tensor | None:
        import torch

        if image is None:
            return None
        if image.buffer_kind != self.nv.ImageBufferKind.STRIDED_DEVICE:
            image = image.cuda()
        hwc = torch.as_tensor(image, device=self.device)  # keeps `image` alive
        return hwc.permute(2, 0, 1) if hwc.ndim == 3 and hwc.shape[2] == 3 else None

    def __call__(self, chunk: list[bytes]) -> list[torch.Tensor | None]:
        streams = [self._stream(data) for data in chunk]
        ok = [i for i, s in enumerate(streams) if s is not None]
        out: list[torch.Tensor | None] = [None] * len(chunk)
        if ok:
            for i, image in zip(ok, self._decode([streams[i] for i in ok]), strict=True):
                out[i] = self._tensor(image)
        return out
