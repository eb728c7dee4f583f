"""CFM loss against a hand-computed example."""
import math

import pytest
import torch

from dcai_widgets.lancet.cfm import cfm_loss

Z_LAB = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
Y_LAB = torch.tensor([0, 1])
Z_UNL = torch.tensor([[0.0, 1.0], [0.0, 3.0], [2.0, 2.0]])
P_UNL = torch.tensor([0, 0, 1])
# labeled means: c0 (0,0), c1 (2,0); unlabeled means: c0 (0,2), c1 (2,2)
# pull: |(0,0)-(0,2)| = 2 and |(2,0)-(2,2)| = 2; cross distances are both sqrt(8)


def test_cfm_hand_computed_with_hinge_active():
    loss = cfm_loss(Z_LAB, Y_LAB, Z_UNL, P_UNL, n_classes=2, margin=3.0)
    expected = ((2 + (3 - math.sqrt(8))) + (2 + (3 - math.sqrt(8)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cfm_hinge_inactive_when_other_classes_far():
    assert cfm_loss(Z_LAB, Y_LAB, Z_UNL, P_UNL, n_classes=2, margin=1.0).item() == pytest.approx(2.0)


def test_cfm_soft_one_hot_equals_hard_and_absent_class_skipped():
    soft = torch.nn.functional.one_hot(P_UNL, 3).float()
    hard = cfm_loss(Z_LAB, Y_LAB, Z_UNL, P_UNL, n_classes=3, margin=3.0)
    assert cfm_loss(Z_LAB, Y_LAB, Z_UNL, soft, n_classes=3, margin=3.0).item() == pytest.approx(hard.item())
    assert hard.item() == pytest.approx(2 + 3 - math.sqrt(8), rel=1e-6)


def test_cfm_is_zero_when_matched_and_has_gradient():
    z_unl = Z_LAB.clone().requires_grad_(True)
    loss = cfm_loss(Z_LAB, Y_LAB, z_unl, Y_LAB, n_classes=2, margin=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    z_unl2 = Z_UNL.clone().requires_grad_(True)
    cfm_loss(Z_LAB, Y_LAB, z_unl2, P_UNL, n_classes=2).backward()
    assert z_unl2.grad is not None and z_unl2.grad.abs().sum() > 0


def test_cfm_bad_assign_shape():
    with pytest.raises(ValueError, match="assign"):
        cfm_loss(Z_LAB, Y_LAB, Z_UNL, torch.zeros(3, 5), n_classes=2)
