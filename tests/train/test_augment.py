import torch

from covidct.train.augment import random_affine_grid, warp


def test_identity_when_every_transform_is_off():
    x = torch.rand(3, 1, 16, 16)
    grid = random_affine_grid(x.shape, torch.Generator().manual_seed(0), p_rotate=0, p_zoom=0, p_flip=0)
    torch.testing.assert_close(warp(x, grid), x, atol=1e-5, rtol=0)


def test_flip_mirrors_left_right():
    x = torch.rand(2, 1, 8, 8)
    grid = random_affine_grid(x.shape, torch.Generator().manual_seed(0), p_rotate=0, p_zoom=0, p_flip=1)
    torch.testing.assert_close(warp(x, grid), x.flip(-1), atol=1e-5, rtol=0)


def test_same_seed_same_grid_and_nearest_keeps_mask_values():
    shape = (4, 1, 32, 32)
    a = random_affine_grid(shape, torch.Generator().manual_seed(7), max_shift=0.1)
    b = random_affine_grid(shape, torch.Generator().manual_seed(7), max_shift=0.1)
    torch.testing.assert_close(a, b)
    mask = (torch.rand(shape) > 0.5).float()
    assert set(warp(mask, a, mode="nearest").unique().tolist()) <= {0.0, 1.0}


def test_random_crop_cuts_the_same_window_from_every_tensor():
    import torch

    from covidct.train.augment import random_crop

    gen = torch.Generator().manual_seed(0)
    image = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    labels = image[:, 0].long()  # (N, H, W): the same values without the channel axis
    x, y = random_crop(gen, 8, image, labels)
    assert x.shape == (2, 1, 8, 8) and y.shape == (2, 8, 8)
    assert torch.equal(x[:, 0].long(), y)
    assert random_crop(gen, 16, image, labels) == (image, labels)
