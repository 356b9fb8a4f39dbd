"""Image decoding that never guesses: RGB uint8 out, or an ImageError that says why.

EXIF orientation is applied, grayscale/RGBA/16-bit inputs become 8-bit RGB, and files
that are empty, truncated or not images are refused with their name, so that a bulk job
can log and skip them instead of dying.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from posemum_deploy.errors import ImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# Decoding a truly huge image would exhaust memory long before it is useful for pose.
MAX_PIXELS = 200_000_000


def check_image_bytes(data: bytes, path: str | Path = "<bytes>") -> None:
    """Refuse what no decoder should be handed: empty files and truncated JPEGs."""
    if len(data) == 0:
        raise ImageError(f"{path}: empty file (0 bytes); re-copy or drop the file")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); re-copy or drop the file")


def jpeg_exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of JPEG bytes, 1 when absent or unreadable.

    Decoders that ignore EXIF (nvjpeg through torchvision on the GPU) need it applied by
    hand (`orient_chw`) to give the same pixels as cv2, which applies it.
    """
    if data[:2] != b"\xff\xd8":
        return 1
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # start of scan: no more metadata
            return 1
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            return _tiff_orientation(body[6:])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    orders: dict[bytes, Literal["little", "big"]] = {b"II": "little", b"MM": "big"}
    order = orders.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for i in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def orient_chw(image: Any, orientation: int) -> Any:
    """Apply an EXIF orientation to a [C, H, W] torch tensor (what cv2/PIL show)."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return image.transpose(1, 2).flip(2)      # rotate 90° clockwise
    if orientation == 7:
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return image.transpose(1, 2).flip(1)      # rotate 90° counter-clockwise
    return image


def decode_image(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array [H, W, 3].

    cv2's IMREAD_COLOR applies EXIF orientation, expands grayscale, drops alpha and
    scales 16-bit samples to 8 bits, which is what a pose network wants.
    """
    path = Path(path)
    check_image_bytes(data, path)
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or wrong format); "
                         "re-copy or drop the file")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{path}: {image.shape[1]}x{image.shape[0]} is too large to decode "
                         f"(limit {MAX_PIXELS} pixels); downscale it first")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; ImageError names the file and the fix."""
    return decode_image(read_image_bytes(path), path)


def read_image_bytes(path: str | Path) -> bytes:
    """The encoded bytes of an image file; ImageError names the file and the fix."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError(f"{path}: image file not found; check --images points at the "
                         "folder the annotations refer to") from e
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e}); check permissions") from e


def read_checked_bytes(path: str | Path) -> bytes:
    """A file's bytes for a decoder elsewhere (a GPU), refused (ImageError naming the
    file) when unreadable, empty or a truncated JPEG."""
    data = read_image_bytes(path)
    check_image_bytes(data, path)
    return data


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root`, recursively, case-insensitive suffixes, stable order."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder; pass a directory of images")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def check_paths_found(paths: Sequence[Path], images_dir: str | Path | None,
                      source: str | Path, probe: int = 64,
                      hint: str = "pass the folder its file names are relative to") -> None:
    """Fail in a second, naming the folder, when the images a json refers to are not
    where `images_dir` says: otherwise every item is skipped with a warning (and a
    training dies in a loader worker after one warning per instance, an evaluation
    prints AP 0). Probes the first `probe` distinct paths only (a stat each), so a few
    missing files stay per-image skips. `hint` says which option to fix."""
    if images_dir is not None and not Path(images_dir).is_dir():
        raise ImageError(f"{images_dir}: not a folder; pass the folder that the file names "
                         f"in {source} are relative to")
    first = list(dict.fromkeys(paths))[:probe]
    if first and not any(path.is_file() for path in first):
        raise ImageError(f"{source}: none of its first {len(first)} images exist (e.g. "
                         f"{first[0]}); {hint}")
