import numpy as np
import torch

from covidct import localize
from covidct.train import classifier as tc
from covidct.train.data import load_ucsd, read_slice_labels


def _slice_set(labels, source, split="val", group=None):
    """``split``: one split for every row, or one per row."""
    n = len(labels)
    return tc.SliceSet(
        images=np.full((n, 8, 8), 0.5, np.float16), masks=np.zeros((n, 8, 8), bool), infection=np.zeros((n, 8, 8), bool),
        labels=np.array(labels), source=np.array(source),
        group=np.array([f"g{i}" for i in range(n)] if group is None else group),
        split=np.array([split] * n if isinstance(split, str) else split),
    )


def test_class_weights_are_inverse_frequency_and_skip_absent_classes():
    w = tc.class_weights(np.array([0, 0, 0, 1]))
    assert w[2] == 0 and float(w[1] / w[0]) == 3.0


def test_inputs_zero_outside_lungs_only_when_asked():
    data = _slice_set([0, 1], ["ucsd", "ucsd"])
    data.masks[:, 2:4, 2:4] = True
    assert float(tc.inputs(data, False).min()) == 0.5
    x = tc.inputs(data, True)
    assert x.shape == (2, 1, 8, 8) and float(x.sum()) == 2 * 4 * 0.5


def test_augment_keeps_shape_and_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    out = tc.augment(x, gen)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)


def test_augment_bicubic_stays_in_range_and_warps_masks_alike():
    x = torch.rand(4, 1, 32, 32)
    out, masks = tc.augment(x, torch.Generator().manual_seed(2), x.clone(), interpolation="bicubic")
    _, bilinear_masks = tc.augment(x, torch.Generator().manual_seed(2), x.clone())
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(masks, bilinear_masks)  # the masks' warp does not depend on the images' interpolation


def test_augment_warps_masks_with_the_images_draws():
    x = torch.zeros(3, 1, 32, 32)
    x[:, :, 4:12, 20:28] = 1.0
    out, masks = tc.augment(x.clone(), torch.Generator().manual_seed(1), x.clone())
    alone = tc.augment(x.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(out, alone)  # the masks take no draws: unguided training is unchanged
    assert torch.allclose((out > 0.5).float(), (masks > 0.5).float())  # same warp (gamma keeps 0 and 1)


def _lung_disc(n: int) -> torch.Tensor:
    """(n, 1, 32, 32): a disc of noise in [0.2, 1] (the lungs), zero outside it."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 < 12**2).float()
    return (0.2 + 0.8 * torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(5))) * disc


def test_degrade_quality_keeps_the_zero_outside_the_lungs_and_the_range():
    x = _lung_disc(6)
    out = tc.degrade_quality(x, torch.Generator().manual_seed(0), p_resolution=1.0, p_window=1.0)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not bool(out[x == 0].any())


def test_degrade_quality_does_nothing_at_probability_zero():
    x = _lung_disc(3)
    assert torch.equal(tc.degrade_quality(x, torch.Generator().manual_seed(0), p_resolution=0.0, p_window=0.0), x)


def test_degrade_quality_resolution_loss_smooths_and_window_stretches_in_order():
    x = _lung_disc(4)
    inside = x > 0
    blurred = tc.degrade_quality(x, torch.Generator().manual_seed(0), p_resolution=1.0, max_factor=4.0, p_window=0.0)
    for i in range(4):  # pixel-to-pixel variation inside the disc drops; its mean stays near
        a, b = x[i][inside[i]], blurred[i][inside[i]]
        assert float(b.std()) < 0.8 * float(a.std()) and abs(float(b.mean() - a.mean())) < 0.1
    windowed = tc.degrade_quality(x, torch.Generator().manual_seed(0), p_resolution=0.0, p_window=1.0)
    for i in range(4):  # a monotone stretch: brighter stays brighter, the contrast only grows
        a, b = x[i][inside[i]], windowed[i][inside[i]]
        order = torch.argsort(a)
        assert bool((b[order].diff() >= 0).all()) and float(b.std()) > float(a.std())


def test_augment_changes_the_picture_quality_only_when_asked():
    x = _lung_disc(3)
    plain = tc.augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(plain, tc.augment(x, torch.Generator().manual_seed(4), quality=False))
    assert not torch.equal(plain, tc.augment(x, torch.Generator().manual_seed(4), quality=True))


def _attention_case(inside: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    act = torch.zeros(1, 2, 4, 4)
    act[0, 0, :2, :2] = 1.0  # evidence in the top-left quarter, channel 0 only
    act.requires_grad_(True)
    score = (act * torch.tensor([1.0, -1.0])[None, :, None, None]).sum(dim=(1, 2, 3))
    infection = torch.zeros(1, 1, 16, 16)
    if inside:
        infection[..., :8, :8] = 1.0
    else:
        infection[..., 8:, 8:] = 1.0
    return [act], score, infection


def test_attention_loss_is_zero_inside_one_outside_and_differentiable():
    acts, score, infection = _attention_case(inside=True)
    assert float(tc.attention_loss(acts, score, infection).detach()) < 1e-5
    acts, score, infection = _attention_case(inside=False)
    loss = tc.attention_loss(acts, score, infection)
    assert abs(float(loss.detach()) - 1.0) < 1e-5
    loss.backward()
    assert acts[0].grad is not None  # the graph through the Grad-CAM weights was kept


def test_attention_loss_of_an_empty_map_is_one():
    act = torch.zeros(2, 3, 4, 4, requires_grad=True)
    score = act.sum(dim=(1, 2, 3)) * 0 + (act * -1).sum(dim=(1, 2, 3))  # negative weights: ReLU empties the map
    assert abs(float(tc.attention_loss([act], score, torch.ones(2, 1, 8, 8)).detach()) - 1.0) < 1e-5


def test_attention_only_source_needs_a_weight(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="attention-weight"):
        tc.train(tmp_path, tmp_path / "m", attention_only_sources=("zenodo20",))


def test_pretrain_lesions_needs_the_compact_network(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="pretrain-lesions"):
        tc.train(tmp_path, tmp_path / "m", architecture="ResNet50", pretrain_lesions=True)


def test_layer3_lr_factor_needs_lesion_pretraining_and_a_factor_in_range(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="pretrain-lesions"):
        tc.train(tmp_path, tmp_path / "m", layer3_lr_factor=0.1)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            tc.train(tmp_path, tmp_path / "m", pretrain_lesions=True, layer3_lr_factor=bad)


def test_lesion_rows_are_training_slices_with_a_mask_or_normal():
    data = _slice_set([0, 1, 1, 2, 0], ["ucsd", "ucsd", "zenodo20", "covid_ct_md", "ucsd"], split="train")
    data.infection[2, 3, 3] = True
    data.split[4] = "val"
    assert tc.lesion_rows(data).tolist() == [True, False, True, False, False]


def test_lesion_loss_is_lower_on_the_lesion():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1.0
    right = torch.where(target > 0, 6.0, -6.0)
    assert float(tc.lesion_loss(right, target)) < 0.05 < float(tc.lesion_loss(-right, target))


def test_lesion_pretraining_trains_the_gradcam_layers_and_freezing_keeps_them():
    from covidct.models import CompactResNet

    torch.manual_seed(0)
    net = CompactResNet(widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 64, 64)
    masks = torch.zeros(8, 1, 64, 64)
    masks[:4, :, 16:40, 16:40] = 1.0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tc.pretrain_on_lesions(net, x, masks, gen, epochs=1, batch_size=4, bf16=False)
    after = net.state_dict()
    assert not torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
    assert torch.equal(before["layer4.0.conv1.weight"], after["layer4.0.conv1.weight"])  # not in the lesion head's path

    pretrained = {k: v.clone() for k, v in net.state_dict().items()}
    tc.train_network(net, x, torch.tensor([0, 1] * 4), gen, epochs=1, batch_size=4, bf16=False, frozen=tc.LESION_FROZEN)
    trained = net.state_dict()
    for key, value in pretrained.items():
        same = torch.equal(value, trained[key])  # weights and batch-norm statistics alike
        assert same == key.startswith(tc.LESION_FROZEN), key
    assert all(p.requires_grad for p in net.parameters())  # frozen for the training only: Grad-CAM runs after it
    assert localize.gradcam(net.eval(), torch.rand(2, 1, 64, 64)).shape == (2, 64, 64)


def test_evaluate_probabilities_per_source():
    data = _slice_set([0, 0, 1, 1, 1, 0, 2], ["ucsd"] * 4 + ["zenodo20", "covid_ct_md", "covid_ct_md"])
    probs = np.array([[0.9, 0.1, 0], [0.6, 0.4, 0], [0.3, 0.7, 0], [0.2, 0.8, 0],
                      [0.1, 0.9, 0], [0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    m = tc.evaluate_probabilities(probs, data, threshold=0.5)
    assert m["sources"]["ucsd"]["auc_abnormal"] == 1.0 and m["sources"]["ucsd"]["auc_covid"] == 1.0
    assert m["sources"]["zenodo20"]["auc_abnormal"] is None  # one class only
    assert m["sources"]["zenodo20"]["sensitivity"] == 1.0
    assert m["pooled"]["confusion_matrix"]["counts"] == [[3, 0, 0], [0, 3, 0], [0, 0, 1]]
    # Intervals: patients resampled for ucsd; a perfect ranking stays perfect in every resample.
    assert m["sources"]["ucsd"]["auc_abnormal_ci95"] == [1.0, 1.0] and m["sources"]["ucsd"]["auc_covid_ci95"] == [1.0, 1.0]
    assert m["sources"]["ucsd"]["ci95_resampled"] == "patients"
    assert m["sources"]["zenodo20"]["auc_abnormal_ci95"] is None
    # 8-bit pictures are judged at their own threshold, HU slices at the main one
    m = tc.evaluate_probabilities(probs, data, threshold=0.5, picture_threshold=0.65)
    assert m["picture_threshold"] == 0.65 and m["sources"]["ucsd"]["specificity"] == 1.0  # 0.4 and 0.1 < 0.65
    assert m["sources"]["ucsd"]["sensitivity"] == 1.0 and m["sources"]["covid_ct_md"]["specificity"] == 1.0


def test_picture_threshold_is_chosen_on_pictures_only_and_used_for_them():
    from covidct import classify

    data = _slice_set([0, 0, 1, 1, 0, 1], ["ucsd"] * 4 + ["covid_ct_md"] * 2)
    probs = np.array([[0.9, 0.1, 0], [0.5, 0.5, 0], [0.2, 0.8, 0], [0.1, 0.9, 0], [0.95, 0.05, 0], [0.9, 0.1, 0]])
    t = tc._picture_threshold(probs, data)
    assert 0.5 < t <= 0.8  # separates the pictures; the HU rows (0.05, 0.1) play no part
    card = {"threshold": 0.3, "picture_threshold": t}
    assert classify.slice_threshold(card, is_hu=True) == 0.3 and classify.slice_threshold(card, is_hu=False) == t
    assert classify.slice_threshold({"threshold": 0.3}, is_hu=False) == 0.3  # older cards


def test_ucsd_official_splits_share_no_patient(shared_data):
    images = load_ucsd(shared_data)
    assert sum(i.split == "train" for i in images) == 425 and sum(i.split == "val" for i in images) == 118
    by_split = {s: {i.patient_id for i in images if i.split == s and i.patient_id} for s in ("train", "val")}
    assert not by_split["train"] & by_split["val"]
    assert all(i.file.is_file() for i in images)


def test_covid_ct_md_labels_join_by_location(shared_data):
    labels = read_slice_labels(shared_data / "covid_ct_md" / "COVID" / "P001_slice_labels.csv")
    assert len(labels) == 148 and sum(labels.values()) == 80
    cap = read_slice_labels(shared_data / "covid_ct_md" / "CAP" / "cap001_slice_labels.csv")
    assert sum(cap.values()) == 30


def test_auc_interval_resamples_blocks_of_a_study_and_patients_otherwise():
    rng = np.random.default_rng(0)
    truth = np.arange(12) % 2 == 0
    scores = truth + rng.normal(size=12)
    auc = tc.metrics.roc_auc(scores, truth)
    # A study whose neighbouring slices look alike (five identical slices in a row, twelve times)
    # and twelve pictures of one patient each: blocks of consecutive slices are resampled for the
    # study, patients for the pictures; either interval is much wider than the study's slices
    # resampled as if independent.
    data = _slice_set(np.r_[np.repeat(truth, 5), truth].astype(int), ["covid_ct_md"] * 60 + ["ucsd"] * 12,
                      group=["P001"] * 60 + list("abcdefghijkl"))
    units = tc.resampling_units(data)
    assert list(units[:12]) == ["P001:0"] * 10 + ["P001:1"] * 2 and list(units[60:62]) == ["a", "b"]
    slices, truth5 = np.repeat(scores, 5), np.repeat(truth, 5)
    low, high = tc.auc_interval(slices, truth5, units[:60])
    low12, high12 = tc.auc_interval(scores, truth, units[60:])
    iid = tc.metrics.bootstrap_interval(lambda r: tc.metrics.roc_auc(slices[r], truth5[r]), np.arange(60))
    assert low < auc < high and low12 < auc < high12
    assert high - low > 1.5 * (iid[1] - iid[0]) and high12 - low12 > 1.5 * (iid[1] - iid[0])
    assert tc.auc_interval(scores, np.ones(12, bool), np.arange(12)) is None


def test_ucsd_patient_folds_deal_each_patient_once_and_balance_the_classes():
    # 30 ucsd patients (12 COVID), some with two images, and rows of other sources that take no part
    patients = [f"p{i}" for i in range(30)] + ["p0", "p5", "p20"]
    labels = [tc.COVID if int(p[1:]) < 12 else tc.NORMAL for p in patients]
    data = _slice_set(labels + [tc.COVID, tc.NORMAL], ["ucsd"] * 33 + ["zenodo20", "covid_ct_md"],
                      split="train", group=patients + ["z1", "P001"])
    folds = tc.ucsd_patient_folds(data, n_folds=5, seed=0)
    assert sorted(p for f in folds for p in f) == sorted(set(patients))
    covid_per_fold = [sum(int(p[1:]) < 12 for p in f) for f in folds]
    assert max(covid_per_fold) - min(covid_per_fold) <= 1 and sum(covid_per_fold) == 12
    assert [len(f) for f in folds] == [6] * 5
    assert tc.ucsd_patient_folds(data, 5, seed=0) == folds != tc.ucsd_patient_folds(data, 5, seed=1)


def test_assign_splits_validates_a_fold_of_ucsd_patients_whole():
    data = _slice_set([0, 1, 0, 1, 0, 1], ["ucsd", "ucsd", "ucsd", "covid_ct_md", "covid_ct_md", "zenodo20"],
                      split=["train", "val", "train", "train", "train", "val"], group=["a", "b", "a", "P001", "normal001", "z1"])
    official = tc.assign_splits(data, ("P001",))
    assert list(official.split) == ["train", "val", "train", "val", "train", "val"]
    fold = tc.assign_splits(data, ("P001",), ucsd_val_patients=("a",))
    assert list(fold.split) == ["val", "train", "val", "val", "train", "val"]  # both of a's images; b trains
    smaller = tc.assign_splits(data, ("P001",), ucsd_val_patients=("a",), ucsd_unused_patients=("b",))
    assert list(smaller.split) == ["val", "unused", "val", "val", "train", "val"]  # b neither trains nor validates
    assert not tc.lesion_rows(smaller)[1]


def _first_batch(mixup_alpha: float) -> torch.Tensor:
    """The first input batch a tiny network sees in :func:`tc.train_network`."""
    from covidct.models import CompactResNet

    torch.manual_seed(0)
    net = CompactResNet(widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1))
    seen = []
    net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    tc.train_network(net, x, torch.tensor([0, 1] * 4), torch.Generator().manual_seed(0), epochs=1, batch_size=8,
                     bf16=False, mixup_alpha=mixup_alpha)
    return seen[0][:, :1]


def test_mixup_blends_each_slice_with_another_by_one_weight():
    plain, mixed = _first_batch(0.0), _first_batch(0.4)  # the same draws up to the blend
    assert not torch.allclose(plain, mixed)
    weights = []
    for i in range(len(plain)):  # mixed[i] = plain[i] + w (plain[j] - plain[i]) for some j, one w for all
        fits = []
        for j in range(len(plain)):
            d = (plain[j] - plain[i]).flatten()
            w = float(d @ (mixed[i] - plain[i]).flatten() / (d @ d).clamp_min(1e-12))
            fits.append((float((mixed[i] - plain[i] - w * (plain[j] - plain[i])).abs().max()), w))
        residual, w = min(fits)
        assert residual < 1e-5
        if float((mixed[i] - plain[i]).abs().max()) > 1e-6:  # a slice blended with itself says nothing of w
            weights.append(w)
    assert weights and 0 < weights[0] < 1 and np.allclose(weights, weights[0], atol=1e-4)


def test_mixup_does_not_go_with_guided_attention(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="mixup"):
        tc.train(tmp_path, tmp_path / "m", attention_weight=1.0, mixup_alpha=0.4)
    with pytest.raises(ValueError, match="negative"):
        tc.train(tmp_path, tmp_path / "m", mixup_alpha=-1)


def test_all_ucsd_needs_the_pictures_threshold_and_only_it_takes_one(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="picture-threshold"):
        tc.train(tmp_path, tmp_path / "m", ucsd_val_patients=())
    with pytest.raises(ValueError, match="picture-threshold"):
        tc.train(tmp_path, tmp_path / "m", picture_threshold=0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        tc.train(tmp_path, tmp_path / "m", ucsd_val_patients=(), picture_threshold=1.5)
    with pytest.raises(ValueError, match="unused"):
        tc.train(tmp_path, tmp_path / "m", ucsd_val_patients=("a",), ucsd_unused_patients=("a",))


def test_all_ucsd_trains_every_picture_and_keeps_the_held_out_study():
    data = _slice_set([0, 1, 0, 1, 0], ["ucsd", "ucsd", "ucsd", "covid_ct_md", "covid_ct_md"],
                      split=["train", "val", "train", "train", "train"], group=["a", "b", "a", "P001", "normal001"])
    assert list(tc.assign_splits(data, ("P001",), ucsd_val_patients=()).split) == ["train"] * 3 + ["val", "train"]


def test_map_check_must_lie_in_the_unit_interval(tmp_path):
    import pytest

    for value in (0.0, 1.5):
        with pytest.raises(ValueError, match="map-check"):
            tc.train(tmp_path, tmp_path / "m", map_check=value)


def _gate_run(monkeypatch, tmp_path, pointing_by_seed: dict[int, float], members: int) -> tuple[list[int], dict]:
    """train() with the data, the training and the map check replaced by stand-ins: which seeds
    were trained, and the card (raises what train() raises)."""
    n = 8
    data = tc.SliceSet(
        images=np.random.default_rng(0).random((n, 224, 224)).astype(np.float16), masks=np.ones((n, 224, 224), bool),
        infection=np.zeros((n, 224, 224), bool), labels=np.array([0, 1] * (n // 2)),
        source=np.array(["ucsd"] * n), group=np.array([f"g{i}" for i in range(n)]),
        split=np.array(["train"] * (n // 2) + ["val"] * (n // 2)),
    )
    trained: list[int] = []
    monkeypatch.setattr(tc, "build_slice_set", lambda *a, **k: data)
    monkeypatch.setattr(tc, "load_zenodo20", lambda *a, **k: [])
    monkeypatch.setattr(tc, "train_network", lambda network, *a, **k: trained.append(torch.initial_seed()) or 1)
    monkeypatch.setattr(tc, "training_pointing", lambda network, cases, masked: pointing_by_seed[torch.initial_seed()])
    card = tc.train(tmp_path, tmp_path / "m", members=members, seed=5, map_check=0.2)
    return trained, card


def test_map_check_sets_aside_networks_below_it_and_draws_the_next_seed(monkeypatch, tmp_path):
    trained, card = _gate_run(monkeypatch, tmp_path, {5: 0.3, 6: 0.1, 7: 0.25}, members=2)
    assert trained == [5, 6, 7]
    assert card["training"]["seeds"] == [5, 7] and card["architecture"] == "CompactResNetEnsemble"
    assert card["training"]["map_check"]["draws"] == [
        {"seed": 5, "pointing": 0.3, "kept": True}, {"seed": 6, "pointing": 0.1, "kept": False},
        {"seed": 7, "pointing": 0.25, "kept": True}]
    assert (tmp_path / "m.safetensors").is_file()


def test_map_check_gives_up_after_three_draws_per_member_and_writes_nothing(monkeypatch, tmp_path):
    import pytest

    pointing = {5: 0.1, 6: 0.3, 7: 0.1, 8: 0.1, 9: 0.1, 10: 0.1, 11: 0.9}
    with pytest.raises(tc.MapCheckFailed, match="1 of 6 networks drawn"):
        _gate_run(monkeypatch, tmp_path, pointing, members=2)
    assert not list(tmp_path.iterdir())
