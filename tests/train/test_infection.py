import numpy as np
import pytest
import torch

from covidct.train import infection as train_infection
from covidct.train.data import load_medseg


def test_loss_is_low_only_when_untyped_infection_is_called_some_type():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4] = train_infection.UNTYPED
    logits = torch.full((1, 3, 8, 8), -8.0)
    logits[:, 0, 4:] = 8.0  # background right
    as_ground_glass, as_consolidation, as_none = logits.clone(), logits.clone(), logits.clone()
    as_ground_glass[:, 1, :4] = 8.0
    as_consolidation[:, 2, :4] = 8.0
    as_none[:, 0, :4] = 8.0
    loss = train_infection.loss_fn
    assert loss(as_ground_glass, target) < 0.05 and loss(as_consolidation, target) < 0.05
    assert loss(as_none, target) > 1.0


def test_loss_on_typed_labels_wants_the_right_type():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4] = 2  # consolidation
    right, wrong = torch.full((1, 3, 8, 8), -8.0), torch.full((1, 3, 8, 8), -8.0)
    right[:, 0, 4:] = wrong[:, 0, 4:] = 8.0
    right[:, 2, :4], wrong[:, 1, :4] = 8.0, 8.0
    assert train_infection.loss_fn(right, target) < 0.05 < 1.0 < train_infection.loss_fn(wrong, target)


def test_augment_keeps_labels_integer_and_aligned():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 64, 64)
    x[:, :, 20:40, 10:30] = 1.0
    y = torch.zeros(4, 64, 64, dtype=torch.long)
    y[:, 20:40, 10:30] = 2
    xa, ya = train_infection.augment(x, y, gen, crop=48)
    assert xa.shape == (4, 1, 48, 48) and ya.shape == (4, 48, 48) and ya.dtype == torch.long
    assert set(ya.unique().tolist()) <= {0, 2}
    assert float(xa[:, 0][ya == 0].mean()) < 0.2 and float(xa[:, 0][ya == 2].mean()) > 0.6


def test_label_input_crops_pads_and_keeps_values():
    labels = np.zeros((1, 10, 20), np.uint8)
    labels[0, 2:4, 5:7] = 1
    labels[0, 6:8, 12:14] = 2
    out = train_infection.label_input(labels, (-5, 15, 0, 20))  # square box padding above and below
    assert out.shape == (1, 256, 256) and set(out.unique().tolist()) == {0, 1, 2}
    assert out[0, :64].max() == 0  # the padding above the image is background


def test_medseg_split_holds_out_a_contiguous_block_and_a_guard(shared_data):
    items = load_medseg(shared_data)
    assert len(items) == 50
    train, val = train_infection.split_medseg(items)
    assert [s.name for s in val] == list(train_infection.MEDSEG_VAL)
    assert not {s.name for s in train} & (set(train_infection.MEDSEG_VAL) | set(train_infection.MEDSEG_GUARD))
    assert len(train) == 39
    for item in items:
        assert item.image.shape == item.mask.shape and set(np.unique(item.mask)) <= {0, 1, 2}


def test_medseg_is_turned_to_anterior_top(shared_data):
    # After the turn the spine (bright bone, a lung-window picture saturates it) lies in the
    # lower half: more saturated pixels in the middle columns of the bottom half than the top.
    items = load_medseg(shared_data)
    lower = upper = 0
    for item in items:
        h, w = item.image.shape
        middle = item.image[:, w // 3 : 2 * w // 3] >= 250
        upper += int(middle[: h // 2].sum())
        lower += int(middle[h // 2 :].sum())
    assert lower > upper, (lower, upper)


@pytest.mark.parametrize("name", ["0", "30"])
def test_medseg_labels_are_not_moved_by_the_turn(shared_data, name):
    item = next(s for s in load_medseg(shared_data) if s.name == name)
    from PIL import Image

    raw = np.asarray(Image.open(shared_data / "medseg_infnet" / "train" / "masks" / f"{name}.png"))
    assert np.array_equal(np.rot90(raw, k=-1), item.mask)
