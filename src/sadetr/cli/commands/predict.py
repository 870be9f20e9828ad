"""`sadetr predict`: write the submission file of a checkpoint on a split (or, with --video, on a raw video).

`--checkpoint` is a training checkpoint, a run directory or a model folder (`sadetr export`). `--data` is a
config (built-in name or YAML; its data section is used) or an annotation `.jsonl` file read with the
checkpoint's own data settings; without `--data` the checkpoint's config is used. `--feat-root` and
`--set data.KEY=VALUE` (as `train --set`) change the data settings, so that a trained or imported model
runs on other features without a YAML. `--backend onnx` runs the exported graph of a model folder with
onnxruntime (docs/deploy.md). Test splits without ground truth are predicted too; when the split has
ground truth the metrics are printed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from sadetr.core.errors import CheckpointError, ConfigError
from sadetr.core.paths import ensure_out_file
from sadetr.inference import BACKENDS

_VIDEO_MODULE = "sadetr.cli.commands._predict_video"


def _video_module() -> Any:
    if importlib.util.find_spec(_VIDEO_MODULE) is None:
        return None
    return importlib.import_module(_VIDEO_MODULE)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict moments and saliency for a split (or a video)",
        description=__doc__,
        conflict_handler="resolve",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt file or a run directory")
    p.add_argument(
        "--data", help="config name/YAML, or an annotation .jsonl file (default: the checkpoint's)"
    )
    p.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "test"),
        help="split of the config to predict (default: val; test for a .jsonl without windows)",
    )
    p.add_argument("--out", type=Path, help="output submission file (JSON lines)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--feat-root", help="feature root of the data (<feat_root>/<source>/<vid>.npz, ...)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the checkpoint's data settings, e.g. --set data.val_path=ann.jsonl (repeatable; "
        "data.* and model.round_to_clip)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch (default), or onnx / onnx-int8: onnxruntime on a model folder of sadetr export",
    )
    video = _video_module()
    if video is not None:
        video.add_arguments(p)
    p.set_defaults(func=run)


def load_model(ckpt: Path, device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode on `device`, its Config, the checkpoint dict) of a training checkpoint."""
    from sadetr.engine.checkpoint import load_trained_model

    model, cfg, state = load_trained_model(ckpt, map_location=device)
    return model.to(device), cfg, state


def data_overrides(args: argparse.Namespace) -> list[str]:
    """`--feat-root` and `--set` as dotted overrides (in that order: an explicit --set wins)."""
    feat_root = [f"data.feat_root={args.feat_root}"] if getattr(args, "feat_root", None) else []
    return [*feat_root, *getattr(args, "overrides", [])]


def build_split(cfg: Any, data: str | None, split: str | None, overrides: list[str] | None = None) -> Any:
    """The dataset to predict: `--data` as config or .jsonl, else the checkpoint's own data config (`cfg`
    with the overrides applied already); a config named by `--data` takes the `overrides` too."""
    from sadetr.config.compose import compose_config
    from sadetr.data.dataset import MomentDataset, build_dataset

    if data is not None and data.endswith(".jsonl"):
        if not Path(data).is_file():
            raise ConfigError(f"no such annotation file {data}", key="--data")
        return MomentDataset(cfg.data, split or "test", seed=cfg.train.seed, path=data)
    data_cfg = compose_config(data, overrides or []).data if data is not None else cfg.data
    if data_cfg.video_feat_dim != cfg.model.video_dim or data_cfg.text_feat_dim != cfg.model.text_dim:
        raise CheckpointError(
            f"the checkpoint expects {cfg.model.video_dim}-d video / {cfg.model.text_dim}-d text features, "
            f"--data {data} gives {data_cfg.video_feat_dim} / {data_cfg.text_feat_dim}"
        )
    return build_dataset(data_cfg, split or "val", seed=cfg.train.seed)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        ensure_out_file(args.out)
    if args.batch_size < 1:
        raise ConfigError(f"must be >= 1, got {args.batch_size}", key="--batch-size")
    if getattr(args, "video", None):
        video = _video_module()
        assert video is not None  # --video exists only when the module does
        return int(video.run(args) or 0)
    if args.out is None:
        raise ConfigError("--out is required (the submission file to write)", key="--out")

    from sadetr.core.jsonio import write_jsonl
    from sadetr.data.dataset import collate
    from sadetr.engine.distributed import resolve_device
    from sadetr.engine.validation import predict_dataset, score
    from sadetr.inference import loading

    device = resolve_device(args.device, key="--device")
    overrides = data_overrides(args)
    loaded = loading.with_overrides(loading.load_model(args.checkpoint), overrides)
    backend = loading.make_backend(loaded, args.backend, device)
    cfg = loaded.cfg
    dataset = build_split(cfg, args.data, args.split, overrides)
    preds = predict_dataset(
        backend, dataset, collate, device, batch_size=args.batch_size, round_to_clip=loaded.round_to_clip
    )
    write_jsonl(args.out, preds)
    print(f"wrote {len(preds)} predictions to {args.out}")
    gt = dataset.ground_truth()
    n_skipped = len(dataset.skipped) + len(gt) - len(preds)
    if n_skipped:  # on_bad_sample=skip: bad lines, missing files, samples that failed to load
        print(f"skipped {n_skipped} bad sample(s) (on_bad_sample=skip; the warnings above say why)")
        predicted = {p["qid"] for p in preds}
        gt = [g for g in gt if g["qid"] in predicted]
    if gt and all(rec.get("relevant_windows") for rec in gt):
        from sadetr.eval import format_table

        print(format_table(score(preds, gt)))
    return 0
