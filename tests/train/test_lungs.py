import torch

from covidct.train import lungs as train_lungs
from covidct.train.data import load_zenodo20


def test_augment_moves_image_and_mask_together():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 64, 64)
    x[:, :, 20:40, 10:30] = 1.0
    y = (x > 0.5).float()
    xa, ya = train_lungs.augment(x, y, gen, crop=48)
    assert xa.shape == ya.shape == (4, 1, 48, 48)
    assert set(ya.unique().tolist()) <= {0.0, 1.0}
    # Outside the lung mask the image stays dark, inside it stays bright (noise is small).
    assert float(xa[ya == 0].mean()) < 0.2 and float(xa[ya == 1].mean()) > 0.6


def test_dense_lesions_are_painted_inside_the_lungs_at_soft_tissue_brightness():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((3, 1, 64, 64), 0.7)  # soft tissue
    lung = torch.zeros_like(x)
    lung[:, :, 16:48, 8:30] = 1.0
    x[lung == 1] = 0.1  # dark lung
    assert torch.equal(train_lungs.insert_dense_lesions(x, lung, gen, p=0.0), x)
    out = train_lungs.insert_dense_lesions(x, lung, gen, p=1.0)
    assert torch.equal(out[lung == 0], x[lung == 0])  # nothing outside the lungs
    changed = (out - x).abs() > 0.05
    assert changed.any() and bool(lung[changed].eq(1).all())
    assert 0.55 < float(out[changed].median()) < 0.85  # lung turned to the soft tissue's brightness
    edge = torch.zeros_like(lung, dtype=torch.bool)
    edge[:, :, 16:48, 8:30] = True
    edge[:, :, 17:47, 9:29] = False
    for i in range(3):  # each image's lesions reach the lung's edge
        assert bool((changed[i] & edge[i]).any())


def test_zenodo_split_is_by_case_and_flipped_to_anterior_top(shared_data):
    train = load_zenodo20(shared_data, ("train",))
    val = load_zenodo20(shared_data, ("val",))
    assert not {c.case_id for c in train} & {c.case_id for c in val}
    assert len(train) == 13 and len(val) == 3
    for case in train + val:
        assert case.images.shape == case.lungs.shape and case.images.dtype.name == "uint8"
    # Radiopaedia slices are stored upside down; after the loader's flip every source must have
    # anterior at the top: the bright midline bone (the spine) lies below the lungs' centre.
    import numpy as np

    for source in ("coronacases", "radiopaedia"):
        offsets = []
        for case in (c for c in train + val if c.source == source):
            bone_rows = np.nonzero(case.images[:, :, 110:147] >= 235)[1]
            offsets.append(bone_rows.mean() - np.nonzero(case.lungs)[1].mean())
        assert np.mean(offsets) > 5, (source, offsets)
