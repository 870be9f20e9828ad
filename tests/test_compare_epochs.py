"""The convergence report of `sadetr compare` (compare_epochs.md): per-epoch mean ± std over seeds and
the first epoch at which each entry reaches the reference entry's final mAP."""

from __future__ import annotations

import pytest

from sadetr.cli.commands.compare import first_epoch_reaching, format_epochs, mean_std_by_epoch


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


def test_variants_compose_their_own_overrides():
    """`--variant NAME=BASE,K=V` is an entry with BASE's config, the shared `--set`, then its own."""
    import argparse

    from sadetr.cli.commands.compare import entries_of, entry_config
    from sadetr.core.errors import ConfigError

    args = argparse.Namespace(
        models="sa_detr,qd_detr,tuned",
        variant=["gate=sa_detr,model.gate_scale=true,model.anchor_grad=all", "dn=fig5.without_dn"],
        config=["synthetic_tiny"],
        overrides=["model.anchor_grad=none", "train.lr=2e-4"],
        presets=[],
        recipe=None,
        epochs=3,
    )
    entries = entries_of(args)
    assert list(entries) == ["sa_detr", "qd_detr", "tuned", "gate", "dn"]
    cfgs = {name: entry_config(args, base, own) for name, (base, own) in entries.items()}
    assert cfgs["gate"].model.gate_scale and cfgs["gate"].model.anchor_grad == "all"  # own beats shared
    assert not cfgs["sa_detr"].model.gate_scale and cfgs["sa_detr"].model.anchor_grad == "none"
    assert cfgs["qd_detr"].model.name == "qd_detr" and cfgs["gate"].model.name == "sa_detr"
    # a recipe entry: the recipe's readings underneath the shared config and overrides
    assert cfgs["tuned"].model.recipe == "tuned" and cfgs["tuned"].model.gate_scale
    assert cfgs["tuned"].model.anchor_grad == "none" and cfgs["sa_detr"].model.recipe == "paper"
    assert {c.train.lr for c in cfgs.values()} == {2e-4} and {c.train.epochs for c in cfgs.values()} == {3}
    assert cfgs["sa_detr"].model.use_dn and not cfgs["dn"].model.use_dn
    only = entries_of(argparse.Namespace(**{**vars(args), "models": ""}))
    assert list(only) == ["gate", "dn"]
    with pytest.raises(ConfigError):
        entries_of(argparse.Namespace(**{**vars(args), "models": "", "variant": []}))
    for bad in (["x"], ["x="], ["x=detr"], ["../x=sa_detr"], ["sa_detr=sa_detr"], ["x=sa_detr,foo"]):
        with pytest.raises(ConfigError):
            entries_of(argparse.Namespace(**{**vars(args), "variant": bad}))


def test_report_tabulates_runs_as_they_stand(tmp_path):
    """`compare --report` trains nothing: it reads each run's metrics.jsonl (finished or not), takes the
    best evaluation by the selection metric, and leaves out entries without any evaluation yet."""
    import json

    from sadetr.cli.main import main

    def write(run: str, maps: list[float]) -> None:
        d = tmp_path / run / "seed0"
        d.mkdir(parents=True)
        lines = [{"kind": "train", "epoch": 1, "global_step": 1, "loss": 3.0}]
        lines += [
            {"kind": "eval", "epoch": e + 1, "global_step": e, "MR-full-mAP": m, "MR-full-R1@0.5": 2 * m}
            for e, m in enumerate(maps)
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")

    write("sa_detr", [1.0, 5.0, 4.0])
    write("bins", [2.0, 3.0])
    (tmp_path / "qd_detr" / "seed0").mkdir(parents=True)  # started, not evaluated yet
    code = main(
        [
            "compare",
            "--models",
            "sa_detr,qd_detr",
            "--variant",
            "bins=sa_detr,loss.quality_balance=iou_bins",
            "--config",
            "synthetic_tiny",
            "--seeds",
            "0",
            "--report",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    res = json.loads((tmp_path / "compare.json").read_text())
    assert res["sa_detr"]["per_seed"]["0"]["MR-full-mAP"] == 5.0
    assert res["sa_detr"]["per_seed"]["0"]["MR-full-R1@0.5"] == 10.0
    assert res["bins"]["per_seed"]["0"]["MR-full-mAP"] == 3.0
    assert res["qd_detr"]["per_seed"] == {}
    assert res["sa_detr"]["epoch_curves"]["MR-full-mAP"]["0"] == [[1, 1.0], [2, 5.0], [3, 4.0]]
    assert "| 3 | 4.00 ± 0.00 | – | – |" in (tmp_path / "compare_epochs.md").read_text()
    assert not (tmp_path / "sa_detr" / "seed0" / "last.ckpt").exists()  # nothing trained
