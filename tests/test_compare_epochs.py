"""The convergence report of `sadetr compare` (compare_epochs.md): per-epoch mean ± std over seeds and
the first epoch at which each entry reaches the reference entry's final mAP."""

from __future__ import annotations

import pytest

from sadetr.commands.compare import first_epoch_reaching, format_epochs, mean_std_by_epoch


def test_mean_std_by_epoch_by_hand():
    stats = mean_std_by_epoch([[(1, 2.0), (2, 4.0)], [(1, 4.0), (2, 8.0)], [(2, 6.0)]])
    assert stats[1] == pytest.approx((3.0, 2**0.5, 2))
    assert stats[2] == pytest.approx((6.0, 2.0, 3))
    assert mean_std_by_epoch([[(3, 5.0)]]) == {3: (5.0, 0.0, 1)}


def test_first_epoch_reaching():
    curve = {1: (1.0, 0.0, 2), 2: (5.0, 0.0, 2), 3: (4.0, 0.0, 2), 4: (9.0, 0.0, 2)}
    assert first_epoch_reaching(curve, 5.0) == 2
    assert first_epoch_reaching(curve, 6.0) == 4
    assert first_epoch_reaching(curve, 10.0) is None


def test_format_epochs_tables_and_reach():
    curves = {
        "sa_detr": {
            "MR-full-mAP": [[(1, 10.0), (2, 30.0)], [(1, 20.0), (2, 40.0)]],
            "MR-full-R1@0.5": [[(1, 1.0), (2, 2.0)], [(1, 3.0), (2, 4.0)]],
        },
        "qd_detr": {"MR-full-mAP": [[(1, 5.0), (2, 20.0)], [(1, 7.0), (2, 30.0)]]},
    }
    text = format_epochs(curves, "qd_detr")
    assert "### MR-full-mAP" in text and "### MR-full-R1@0.5" in text and "R1@0.7" not in text
    assert "| 1 | 15.00 ± 7.07 | 6.00 ± 1.41 |" in text
    assert "| 2 | 3.00 ± 1.41 | – |" in text  # R1@0.5: qd_detr has no curve
    # qd_detr ends at mean 25: sa_detr's mean passes it at epoch 2 (35), qd_detr itself at its last epoch
    assert "final MR-full-mAP (25.00 at epoch 2)" in text
    assert "| sa_detr | 2 |" in text and "| qd_detr | 2 |" in text
    assert "first epoch" not in format_epochs(curves, "moment_detr")  # no reference: no reach table
