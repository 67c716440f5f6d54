"""DiceCELoss and the hard, per-case, foreground-only metrics, checked against hand-made numbers."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas_core.losses import DiceCELoss
from nas_core.metrics import CaseScores, confusion_counts, dice_per_class, iou_per_class, summarise

# ---------------------------------------------------------------- metrics


def square_masks():
    """4x4: reference = top-left 2x2 block (4 px), prediction = top row (4 px); overlap 2 px."""
    target = np.zeros((4, 4), dtype=np.int64)
    target[:2, :2] = 1
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0, :] = 1
    return pred, target


def test_dice_and_iou_on_a_hand_computed_mask():
    pred, target = square_masks()
    assert dice_per_class(pred, target, 2) == {1: pytest.approx(2 * 2 / (4 + 4))}  # 0.5
    assert iou_per_class(pred, target, 2) == {1: pytest.approx(2 / (4 + 4 - 2))}  # 1/3


def test_torch_and_numpy_inputs_agree():
    pred, target = square_masks()
    assert dice_per_class(torch.from_numpy(pred), torch.from_numpy(target), 2) == dice_per_class(
        pred, target, 2
    )


def test_three_classes_and_background_never_scored():
    target = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [0, 0, 2, 2]])
    # class 1: ref 3 px, pred 1 px, overlap 1 -> 2/4; class 2: ref 3, pred 4, overlap 3 -> 6/7
    dsc = dice_per_class(pred, target, 3)
    assert set(dsc) == {1, 2}
    assert dsc[1] == pytest.approx(0.5) and dsc[2] == pytest.approx(6 / 7)
    iou = iou_per_class(pred, target, 3)
    assert iou[1] == pytest.approx(1 / 3) and iou[2] == pytest.approx(3 / 4)
    # A huge, perfectly predicted background does not lift a wrong foreground.
    big_t = np.zeros((64, 64), dtype=np.int64)
    big_p = big_t.copy()
    big_t[0, 0], big_p[0, 1] = 1, 1
    assert dice_per_class(big_p, big_t, 2) == {1: 0.0}


def test_empty_class_convention():
    empty = np.zeros((3, 3), dtype=np.int64)
    some = empty.copy()
    some[1, 1] = 1
    assert math.isnan(dice_per_class(empty, empty, 2)[1])  # absent from both: undefined
    assert math.isnan(iou_per_class(empty, empty, 2)[1])
    assert dice_per_class(some, empty, 2) == {1: 0.0}  # false positive only
    assert dice_per_class(empty, some, 2) == {1: 0.0}  # missed entirely


def test_volume_is_one_case_not_a_mean_of_slices():
    target = np.zeros((3, 4, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, 0, 0] = pred[0, 0, 0] = 1  # slice 0: 1 px, perfect (DSC 1)
    target[2, 1:4, 1:4] = 1  # slice 2: 9 px, missed (DSC 0); slice 1 empty in both (NaN)
    slices = [dice_per_class(p, t, 2)[1] for p, t in zip(pred, target, strict=True)]
    assert np.nanmean(slices) == pytest.approx(0.5)
    assert dice_per_class(pred, target, 2)[1] == pytest.approx(2 * 1 / (1 + 10))


def test_confusion_counts_and_validation():
    pred, target = square_masks()
    cm = confusion_counts(pred, target, 2)
    assert cm.tolist() == [[10, 2], [2, 2]]
    with pytest.raises(ValueError, match="differ in size"):
        dice_per_class(pred, target[:2], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dice_per_class(pred + 1, target, 2)
    with pytest.raises(ValueError, match="integer"):
        dice_per_class(pred.astype(float), target, 2)


def test_case_scores_and_summary():
    cases = [
        CaseScores("a", {1: 1.0, 2: 0.5}, {1: 1.0, 2: 1 / 3}),
        CaseScores("b", {1: 0.5, 2: math.nan}, {1: 1 / 3, 2: math.nan}),
        CaseScores("c", {1: 0.0, 2: 0.7}, {1: 0.0, 2: 0.5}),
    ]
    s = summarise(cases, ["background", "liver", "tumour"])
    assert s["n_cases"] == 3
    assert set(s["classes"]) == {"liver", "tumour"}
    liver, tumour = s["classes"]["liver"], s["classes"]["tumour"]
    assert liver["label"] == 1 and liver["n"] == 3 and liver["empty"] == 0
    assert liver["dsc_mean"] == pytest.approx(0.5)
    assert liver["dsc_std"] == pytest.approx(math.sqrt((0.25 + 0 + 0.25) / 3))
    assert tumour["n"] == 2 and tumour["empty"] == 1
    assert tumour["dsc_mean"] == pytest.approx(0.6)  # NaN case skipped, not counted as 0 or 1
    assert tumour["dsc_std"] == pytest.approx(0.1)
    assert s["mean_dsc"] == pytest.approx((0.5 + 0.6) / 2)
    assert s["mean_iou"] == pytest.approx(((1 + 1 / 3) / 3 + (1 / 3 + 0.5) / 2) / 2)
    json.dumps(s, allow_nan=False)  # plain JSON, no NaN
    # A mapping of foreground names works the same.
    assert summarise(cases, {1: "liver", 2: "tumour"}) == s


def test_summary_of_a_class_never_present_is_none_and_json_safe():
    cases = [CaseScores("a", {1: 0.8, 2: math.nan}, {1: 2 / 3, 2: math.nan})]
    s = summarise(cases, ["bg", "organ", "lesion"])
    assert s["classes"]["lesion"]["dsc_mean"] is None and s["classes"]["lesion"]["empty"] == 1
    assert s["mean_dsc"] == pytest.approx(0.8)
    json.dumps(s, allow_nan=False)
    assert cases[0].to_dict() == {
        "case_id": "a",
        "dsc": {"1": 0.8, "2": None},
        "iou": {"1": pytest.approx(2 / 3), "2": None},
    }
    with pytest.raises(ValueError, match="no name"):
        summarise(cases, ["bg", "organ"])


def test_case_scores_compute():
    pred, target = square_masks()
    cs = CaseScores.compute("p1", pred, target, 2)
    assert cs.case_id == "p1" and cs.dsc[1] == pytest.approx(0.5) and cs.iou[1] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- loss


def onehot_logits(target: torch.Tensor, k: int, scale: float) -> torch.Tensor:
    return scale * F.one_hot(target, k).movedim(-1, 1).float()


def test_uniform_logits_give_hand_computed_loss():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # 8 of 16 pixels foreground
    logits = torch.zeros(1, 2, 4, 4)
    # CE = ln 2; p_fg = 0.5 everywhere: dice = (2 * 4 + s) / (8 + 8 + s)
    s = 1e-5
    loss = DiceCELoss(2, smooth=s)(logits, target)
    assert loss.item() == pytest.approx(math.log(2) + 1 - (8 + s) / (16 + s), rel=1e-6)
    assert DiceCELoss(2, ce_weight=0)(logits, target).item() == pytest.approx(0.5, abs=1e-5)
    assert DiceCELoss(2, dice_weight=0)(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_loss_decreases_to_zero_for_perfect_logits(k):
    g = torch.Generator().manual_seed(k)
    target = torch.randint(0, k, (2, 8, 8), generator=g)
    loss_fn = DiceCELoss(k)
    losses = [loss_fn(onehot_logits(target, k, s), target).item() for s in (0.0, 1.0, 3.0, 10.0, 30.0)]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 1e-4
    assert losses[0] > 0.5


def test_dice_term_is_bounded_and_foreground_only():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    loss_fn = DiceCELoss(3, ce_weight=0)
    for scale in (0.1, 10.0, 1000.0):
        logits = scale * torch.randn(2, 3, 6, 6, generator=g)
        assert 0.0 <= loss_fn(logits, target).item() <= 1.0
        assert loss_fn.soft_dice(logits, target).shape == (2,)
    # Background and class 1 perfect, class 2 predicted as background: dice term = 1 - (1 + 0) / 2.
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, 0] = 1
    t[0, 1] = 2
    wrong = t.clone()
    wrong[t == 2] = 0
    assert loss_fn(onehot_logits(wrong, 3, 50.0), t).item() == pytest.approx(0.5, abs=1e-4)


def test_batch_dice_pools_the_batch():
    # Sample 0 has 4 foreground px predicted at p=0.5; sample 1 has none and predicts p=0.5 on 16 px.
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, 0] = 1
    logits = torch.zeros(2, 2, 4, 4)
    s = 1e-5
    dice = DiceCELoss(2, smooth=s).soft_dice(logits, target)
    # Pooled: intersection 0.5 * 4 = 2; sum p = 16; sum t = 4.
    assert dice.item() == pytest.approx((2 * 2 + s) / (16 + 4 + s), rel=1e-6)


def test_loss_gradients_and_3d_input():
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5, 6))
    loss = DiceCELoss(3)(logits, target)
    assert loss.dim() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_loss_validation():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        DiceCELoss(1)
    loss_fn = DiceCELoss(2)
    with pytest.raises(ValueError, match=r"\[B, 2"):
        loss_fn(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target must be"):
        loss_fn(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        loss_fn(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4))


def test_deep_supervision_loss_is_the_weighted_sum_over_heads():
    from nas_core.losses import DeepSupervisionLoss, DiceCELoss

    torch.manual_seed(0)
    heads = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    target = torch.randint(0, 3, (2, 8, 8))
    base = DiceCELoss(3)
    by_hand = (1 / 8 * base(heads[0], target) + 1 / 4 * base(heads[1], target)
               + 1 / 2 * base(heads[2], target) + 1 * base(heads[3], target)) / (1 / 8 + 1 / 4 + 1 / 2 + 1)
    loss = DeepSupervisionLoss(base)
    assert loss(heads, target) == pytest.approx(float(by_hand), rel=1e-6)
    assert loss(heads[3], target) == pytest.approx(float(base(heads[3], target)))  # one tensor: as is
    assert DeepSupervisionLoss.weights(2) == pytest.approx([1 / 3, 2 / 3])


@pytest.mark.parametrize("spec", [{"baseline": "unetpp"}, {"genotype": "default"}])
def test_deeply_supervised_models_give_every_head_in_training_and_their_mean_in_eval(spec):
    from nas_core.models import build_model, default_genotype

    if spec.get("genotype") == "default":
        spec = {"genotype": {**default_genotype().to_dict(), "C": 8}}
    model = build_model(spec, 1, 3, deep_supervision=True)
    x = torch.randn(1, 1, 37, 45)  # padded inside, cropped back for every head
    model.train()
    heads = model(x)
    assert isinstance(heads, list) and len(heads) == 4 and all(h.shape == (1, 3, 37, 45) for h in heads)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 37, 45)
