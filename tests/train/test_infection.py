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


def test_class_weights_scale_the_cross_entropy_of_their_class_only():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4] = 2  # consolidation
    logits = torch.zeros(1, 3, 8, 8)  # undecided everywhere: the same cross-entropy per pixel
    base = train_infection.loss_fn(logits, target, (1.0, 1.0, 1.0))
    heavier = train_infection.loss_fn(logits, target, (1.0, 1.0, 3.0))
    other = train_infection.loss_fn(logits, target, (1.0, 3.0, 1.0))
    # half the pixels are consolidation, each contributing log(3) / 64 per unit weight
    assert float(heavier - base) == pytest.approx(2 * 32 * np.log(3) / 64, rel=1e-5)
    assert float(other) == pytest.approx(float(base), rel=1e-6)


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


def test_augment_bicubic_keeps_more_detail_in_range_with_the_same_labels():
    """The same draws warp the labels identically either way; bicubic images stay in [0, 1] and
    keep more of a fine texture's gradient energy than bilinear ones."""
    x = (torch.arange(64)[None, :] % 2 == 0).float().expand(64, 64).clone()  # 1-pixel stripes
    x = torch.stack([x, x])[None].repeat(4, 1, 1, 1)
    y = torch.zeros(4, 64, 64, dtype=torch.long)
    y[:, 16:48, 16:48] = 1

    def energy(t: torch.Tensor) -> float:
        return float(((t[..., :, 1:] - t[..., :, :-1]) ** 2).mean())

    out = {mode: train_infection.augment(x, y, torch.Generator().manual_seed(3), crop=64, interpolation=mode)
           for mode in ("bilinear", "bicubic")}
    assert torch.equal(out["bilinear"][1], out["bicubic"][1])
    assert float(out["bicubic"][0].min()) >= 0.0 and float(out["bicubic"][0].max()) <= 1.0
    assert energy(out["bicubic"][0]) > 1.2 * energy(out["bilinear"][0])


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


def test_folds_validate_every_slice_once_in_contiguous_blocks_with_guards():
    names = [str(n) for n in (0, 1, 2, 5, 7, 9, 10, 12, 20, 21, 30)]
    folds = train_infection.medseg_folds(names[::-1], k=3)  # the order given does not matter
    assert sorted((n for val, _ in folds for n in val), key=int) == names
    for val, guard in folds:
        block = [names.index(n) for n in val]
        assert block == list(range(block[0], block[-1] + 1))
        assert [names.index(g) for g in guard] == [i for i in (block[0] - 1, block[-1] + 1) if 0 <= i < len(names)]
    assert folds[0][1] == ("7",) and len(folds[1][1]) == 2


def test_shipped_split_is_the_last_fold(shared_data):
    names = [s.name for s in load_medseg(shared_data)]
    val, guard = train_infection.medseg_folds(names)[-1]
    assert val == train_infection.MEDSEG_VAL and guard == train_infection.MEDSEG_GUARD


def test_medseg_summary_means_over_images_with_the_class_and_pools_pixels():
    counts = {  # (|P & T|, |P| + |T|, |T|) per class
        "a": {"infection": (5, 10, 5), "ground_glass": (5, 10, 5), "consolidation": (0, 3, 0)},
        "b": {"infection": (1, 10, 8), "ground_glass": (0, 2, 2), "consolidation": (1, 8, 6)},
    }
    out = train_infection.summarize_medseg(counts)
    assert out["n_images_with_class"] == {"infection": 2, "ground_glass": 2, "consolidation": 1}
    assert out["dice_mean_per_image"]["infection"] == pytest.approx((1.0 + 0.2) / 2)
    assert out["dice_mean_per_image"]["consolidation"] == pytest.approx(0.25)  # "a" has none: not averaged
    assert out["dice_pooled"]["consolidation"] == pytest.approx(2 / 11, abs=1e-4)  # ... but its pixels count
    # The interval of the mean over images: a bootstrap of two images spans their two Dice values;
    # one image has none.
    assert out["dice_mean_per_image_ci95"]["infection"] == pytest.approx([0.2, 1.0])
    assert out["dice_mean_per_image_ci95"]["consolidation"] is None


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


def test_per_image_dice_weighs_a_missed_small_lesion_like_a_found_large_one():
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[0, :8] = 1  # a large ground-glass region, found
    target[1, 0, 0] = 1  # one pixel, missed
    logits = torch.full((2, 3, 16, 16), -8.0)
    logits[:, 0] = 8.0
    logits[0, 1, :8], logits[0, 0, :8] = 8.0, -8.0
    batch = train_infection.loss_fn(logits, target, dice_per_image=False)
    per_image = train_infection.loss_fn(logits, target, dice_per_image=True)
    # over the batch the missed pixel is 1 of 129 (Dice ~0.99); per image the second image's
    # Dice is 1 / 2 (the +1 smoothing), in the infection and the ground-glass terms alike
    assert float(per_image - batch) > 0.3


def test_per_image_dice_ignores_images_without_the_class():
    p = torch.zeros(2, 4, 4)
    t = torch.zeros(2, 4, 4)
    p[0, :2], t[0, :2] = 1.0, 1.0  # perfect on the first image
    p[1, 0, 0] = 1.0  # a false positive on an image without the class: the cross-entropy's concern
    assert float(train_infection._soft_dice(p, t, per_image=True)) == pytest.approx(1.0)
    assert float(train_infection._soft_dice(p, t)) < 0.95
    assert float(train_infection._soft_dice(p, torch.zeros_like(t), per_image=True)) == 1.0


def test_intensity_gamma_moves_only_the_intensity_channel_and_keeps_the_draws_without_it():
    x = torch.full((8, 2, 32, 32), 0.3)
    y = torch.zeros(8, 32, 32, dtype=torch.long)
    plain = train_infection.augment(x, y, torch.Generator().manual_seed(1), crop=32)[0]
    again = train_infection.augment(x, y, torch.Generator().manual_seed(1), crop=32, intensity_gamma=1.0)[0]
    assert torch.equal(plain, again)  # no extra draws: the shipped recipe's augmentation unchanged
    levels = train_infection.augment(x, y, torch.Generator().manual_seed(1), crop=32, intensity_gamma=2.0)[0]
    assert torch.equal(levels[:, 0], plain[:, 0])
    ratio = levels[:, 1].mean(dim=(1, 2)).log() / plain[:, 1].mean(dim=(1, 2)).log()  # the extra gamma
    assert float(ratio.min()) >= 0.5 - 1e-4 and float(ratio.max()) <= 2.0 + 1e-4 and float(ratio.std()) > 0.1


def test_an_epoch_sees_zenodo20_once_and_each_medseg_slice_medseg_repeats_times():
    items = train_infection.epoch_items(n_zenodo=4, n_medseg=2, medseg_repeats=3)
    assert torch.bincount(items).tolist() == [1, 1, 1, 1, 3, 3]
    with pytest.raises(ValueError):
        train_infection.epoch_items(4, 2, 0)


class _TypesByHalf(torch.nn.Module):
    """A stand-in model: "none" most probable everywhere; of the two types, consolidation on the
    left half of the input and ground-glass on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 0] = 5.0
        half = x.shape[-1] // 2
        logits[:, 2, :, :half] = 1.0
        logits[:, 1, :, half:] = 1.0
        return logits


def test_typing_counts_type_the_true_extent_by_the_models_two_types_only():
    from covidct.train.data import TypedSlice

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:20, 4:20] = 2  # consolidation on the left: typed right
    mask[40:50, 44:60] = 2  # consolidation on the right: typed ground-glass
    item = TypedSlice("s", np.full((64, 64), 100, dtype=np.uint8), mask)
    counts = train_infection.typing_counts(_TypesByHalf(), [item])["s"]
    # the model says "none" everywhere, yet the true extent is typed: its consolidation half is found
    assert counts["infection"] == (320, 640, 320)
    assert counts["consolidation"] == (160, 480, 320)
    assert counts["ground_glass"] == (0, 160, 0)
    assert train_infection.medseg_counts(_TypesByHalf(), [item])["s"]["infection"] == (0, 320, 320)


def test_init_from_the_lung_model_copies_its_weights_into_the_clahe_channel():
    from covidct import infection
    from covidct.models import UNet
    from covidct.models.weights import read_weights

    model = UNet(in_channels=infection.CHANNELS, out_channels=3, features=train_infection.WIDTHS["compact"])
    head = model.head.weight.detach().clone()
    copied = train_infection.init_from_lung_model(model, "lungs")
    _, lung = read_weights("lungs")
    state = model.state_dict()
    assert copied == len(state) - 2  # all but the head's weight and bias
    assert torch.equal(state["encoder.2.0.weight"], lung["encoder.2.0.weight"])
    assert torch.equal(state["decoder.0.up.weight"], lung["decoder.0.up.weight"])
    assert torch.equal(state["encoder.0.0.weight"][:, :1], lung["encoder.0.0.weight"])
    assert not state["encoder.0.0.weight"][:, 1:].any()  # the intensity channel starts at zero
    assert torch.equal(model.head.weight, head)


def test_init_from_a_lung_model_of_other_widths_is_refused():
    from covidct import infection
    from covidct.models import UNet

    model = UNet(in_channels=infection.CHANNELS, out_channels=3, features=train_infection.WIDTHS["wide"])
    with pytest.raises(ValueError, match="no tensor fits"):
        train_infection.init_from_lung_model(model, "lungs")


def test_members_train_from_successive_seeds_and_ship_their_average(monkeypatch, tmp_path):
    from covidct import infection
    from covidct.models import weights as model_weights

    trained: list[tuple[int, torch.nn.Module]] = []

    def fake_fit(network, *args, **kwargs):
        trained.append((torch.initial_seed(), network))
        with torch.no_grad():
            network.head.bias.fill_(float(torch.initial_seed()))  # what "training" left in this member
        return 1, 2.0

    x = torch.zeros(4, infection.CHANNELS, 32, 32)
    monkeypatch.setattr(train_infection, "load_medseg", lambda *a, **k: [])
    monkeypatch.setattr(train_infection, "load_zenodo20", lambda *a, **k: [])
    monkeypatch.setattr(train_infection, "to_tensors", lambda *a, **k: (x, torch.zeros(4, 32, 32, dtype=torch.long)))
    monkeypatch.setattr(train_infection, "fit", fake_fit)
    monkeypatch.setattr(train_infection, "evaluate", lambda *a, **k: {})
    card = train_infection.train(tmp_path, tmp_path / "inf", seed=5, members=2, medseg_val=(), medseg_guard=())
    assert [seed for seed, _ in trained] == [5, 6]
    assert card["architecture"] == "UNetEnsemble" and card["architecture_args"]["n_members"] == 2
    assert card["training"]["seeds"] == [5, 6] and card["training"]["train_seconds"] == 4.0
    loaded = infection.load_infection_model(str(tmp_path / "inf.json")).model
    assert [float(m.head.bias[0].detach()) for m in loaded.members] == [5.0, 6.0]
    with pytest.raises(ValueError, match="at least 1"):
        train_infection.train(tmp_path, tmp_path / "none", members=0)


def test_ensemble_copies_the_trained_networks():
    from covidct.models import UNet

    torch.manual_seed(0)
    networks = [UNet(2, 3, (4, 8, 16)).eval() for _ in range(2)]
    model = train_infection.ensemble(networks)
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        expected = (torch.softmax(networks[0](x), 1) + torch.softmax(networks[1](x), 1)) / 2
        torch.testing.assert_close(torch.softmax(model(x), 1), expected, rtol=1e-5, atol=1e-6)


def test_pseudo_labels_are_the_teachers_most_probable_class_on_covid_pictures_only(monkeypatch, tmp_path):
    from PIL import Image

    from covidct import infection
    from covidct.train.data import LabelledImage

    rng = np.random.default_rng(0)
    items = []
    for name, covid in (("a.png", True), ("b.png", False)):
        Image.fromarray(rng.integers(0, 255, (120, 90), dtype=np.uint8)).save(tmp_path / name)
        items.append(LabelledImage(file=tmp_path / name, split="train", covid=covid, patient_id=""))
    monkeypatch.setattr(train_infection, "load_ucsd", lambda *a, **k: items)
    x, y = train_infection.pseudo_labelled_pictures("infection", tmp_path)
    assert x.shape == (1, infection.CHANNELS, 256, 256) and y.shape == (1, 256, 256) and y.dtype == torch.long
    teacher = infection.load_infection_model().model
    expected = infection.model_input(np.asarray(Image.open(tmp_path / "a.png"), dtype=np.float32)[None], False,
                                     infection.picture_box((120, 90)))
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, infection.predict_probabilities(teacher, expected, flip=True).argmax(1))


def test_paste_lesions_copies_typed_lesions_into_unlabelled_lung_only():
    x = torch.zeros(1, 2, 8, 8)
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[0, 0, :] = 2  # the target's own consolidation stays
    lung = torch.zeros(1, 8, 8, dtype=torch.bool)
    lung[0, :4] = True  # the top half is lung
    donor_x = torch.ones(1, 2, 8, 8)
    donor_y = torch.ones(1, 8, 8, dtype=torch.long)  # ground-glass everywhere
    donor_y[0, :, 0] = 3  # untyped pixels are not pasted
    gen = torch.Generator().manual_seed(0)
    px, py = train_infection.paste_lesions(x, y, lung, donor_x, donor_y, gen, p=1.0)
    pasted = torch.zeros(8, 8, dtype=torch.bool)
    pasted[1:4, 1:] = True
    assert torch.equal(py[0] == 1, pasted) and torch.equal(py[0, 0], y[0, 0])
    assert torch.equal(px[0, 0] == 1, pasted) and torch.equal(px[0, 1] == 1, pasted)
    assert not y.any(dim=0)[1:].any() and not x.any()  # the inputs are left as they were
    nx, ny = train_infection.paste_lesions(x, y, lung, donor_x, donor_y, gen, p=0.0)
    assert torch.equal(nx, x) and torch.equal(ny, y)
