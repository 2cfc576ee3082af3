"""FGSM / PGD on a trained digits model, and the audit that guards every cell."""

from __future__ import annotations

import pytest
import torch

import attacks
from bench.core.errors import AuditError
from bench.run.audit import audit
from tests.conftest import accuracy


def test_pgd_drives_accuracy_to_near_zero_inside_the_ball(digits_model, digits_test):
    x, y = digits_test.x, digits_test.y
    assert accuracy(digits_model, x, y) > 0.95
    eps = 0.3
    x_adv = attacks.create("pgd", eps=eps, steps=20)(digits_model, x, y)
    assert accuracy(digits_model, x_adv, y) < 0.02
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    audit(x, x_adv, "Linf", eps)


def test_pgd_beats_fgsm_and_is_monotone_in_eps(digits_model, digits_test):
    x, y = digits_test.x[:300], digits_test.y[:300]
    accs = [accuracy(digits_model, attacks.create("pgd", eps=e)(digits_model, x, y), y) for e in (0.05, 0.1, 0.2)]
    assert accs[0] >= accs[1] >= accs[2]
    fgsm = accuracy(digits_model, attacks.create("fgsm", eps=0.1)(digits_model, x, y), y)
    assert fgsm >= accs[1]


def test_attacks_are_seeded_and_targeted_mode_hits_targets(digits_model, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    a = attacks.create("pgd", eps=0.3, seed=3, targeted=True, steps=20)
    r1, r2 = a.run(digits_model, x, y), a.run(digits_model, x, y)
    x1, x2 = r1.x_adv, r2.x_adv
    assert torch.equal(x1, x2)
    target = r1.target
    assert (target != y).all()
    with torch.no_grad():
        hit = (digits_model(x1).argmax(1) == target).float().mean()
    assert hit > 0.8


def test_audit_catches_violations():
    x = torch.rand(4, 1, 8, 8) * 0.5 + 0.25
    with pytest.raises(AuditError, match="ball"):
        audit(x, x + 0.2, "Linf", 0.1)
    with pytest.raises(AuditError, match=r"\[0, 1\]"):
        audit(x, x + 0.9, "Linf", 1.0)
    with pytest.raises(AuditError, match="NaN"):
        audit(x, x * float("nan"), "Linf", 0.1)
    report = audit(x, (x + 0.05).clamp(0, 1), "Linf", 0.1)
    assert abs(report.max_perturbation - 0.05) < 1e-6
