import cv2
import numpy as np
import pytest

from posemum_deploy.data.images import list_images, read_image
from posemum_deploy.errors import ImageError


def _jpeg(path, h=20, w=30):
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return path


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="missing.jpg.*not found"):
        read_image(tmp_path / "missing.jpg")


def test_truncated_jpeg_is_refused(tmp_path):
    p = _jpeg(tmp_path / "a.jpg", 200, 200)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="a.jpg: truncated JPEG"):
        read_image(p)


def test_empty_and_text_files_are_refused(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    (tmp_path / "t.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="e.jpg: empty file"):
        read_image(tmp_path / "e.jpg")
    with pytest.raises(ImageError, match="t.jpg: not a decodable image"):
        read_image(tmp_path / "t.jpg")


def test_gray_rgba_and_16bit_become_rgb_uint8(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 6), 100, np.uint8))
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[..., 3] = 10
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "d.png"), np.full((5, 6, 3), 65535, np.uint16))
    for name in ("g.png", "a.png", "d.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (5, 6, 3) and img.dtype == np.uint8
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    assert read_image(tmp_path / "d.png").max() == 255


def test_exif_orientation_is_applied(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    img = pil.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (40, 20, 3)


def test_list_images_is_recursive_case_insensitive_and_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.JPG", "a.png", "sub/c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == \
        ["a.png", "b.JPG", "sub/c.jpeg"]
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "nope")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_by_hand_matches_cv2(tmp_path, orientation):
    """Device decoders ignore EXIF; jpeg_exif_orientation + orient_chw give cv2's pixels."""
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    from posemum_deploy.data.images import jpeg_exif_orientation, orient_chw, read_image

    rng = np.random.default_rng(orientation)
    base = np.kron(rng.integers(0, 255, (6, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(base).save(path, exif=exif.tobytes(), quality=95)
    data = path.read_bytes()
    assert jpeg_exif_orientation(data) == orientation
    raw = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                      apply_exif_orientation=False)
    ours = orient_chw(raw, jpeg_exif_orientation(data)).permute(1, 2, 0).numpy()
    ref = read_image(path)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 2.0


def test_exif_orientation_of_odd_bytes_is_one():
    from posemum_deploy.data.images import jpeg_exif_orientation

    assert jpeg_exif_orientation(b"") == 1
    assert jpeg_exif_orientation(b"\x89PNG\r\n") == 1
    assert jpeg_exif_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a") == 1
