import numpy as np
import pytest
from PIL import Image

from covidct.errors import InputError
from covidct.io import load


def test_8bit_png_is_one_slice_not_hu(tmp_path):
    pixels = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "s.png")
    vol = load(tmp_path / "s.png")
    assert vol.shape == (1, 48, 64) and not vol.is_hu
    np.testing.assert_array_equal(vol.array[0], pixels)
    assert vol.meta.source_format == "image" and vol.meta.warnings


def test_colour_jpeg_becomes_grayscale(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    vol = load(tmp_path / "c.jpg")
    assert vol.shape == (1, 32, 32)
    assert abs(float(vol.array.mean()) - 0.587 * 200) < 3


def test_corrupt_image_is_refused(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match="cannot read as an image"):
        load(tmp_path / "x.png")


def test_shared_ucsd_slice_loads(shared_data):
    files = sorted((shared_data / "ucsd_covid_ct").rglob("*.png"))
    assert files, "ucsd_covid_ct holds no PNG"
    vol = load(files[0])
    assert vol.shape[0] == 1 and max(vol.shape[1:]) <= 384 and vol.array.dtype == np.uint8
