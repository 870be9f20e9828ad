"""`sadetr demo`: synthetic QVHighlights-shaped data -> train the full SA-DETR -> evaluate -> predict.

Everything is generated locally (no downloads): `DIR/data` (features with the real dims), `DIR/run`
(checkpoints, logs, TensorBoard), `DIR/val_predictions.jsonl`, `DIR/metrics.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sadetr.cli.commands.train import add_override_arguments, config_overrides
from sadetr.core.extras import missing


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate synthetic data, train, evaluate and predict (minutes, CPU)",
        description=__doc__,
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n-train", type=int, default=600, help="synthetic training queries")
    p.add_argument("--n-val", type=int, default=150, help="synthetic validation queries")
    p.add_argument("--config", default="synthetic_qvh", help="training config (data paths are filled in)")
    add_override_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.cli.commands.predict import load_model
    from sadetr.config.compose import compose_config
    from sadetr.core.jsonio import write_json, write_jsonl
    from sadetr.data.dataset import build_dataset, collate
    from sadetr.data.synth import generate_synthetic
    from sadetr.engine.distributed import resolve_device
    from sadetr.engine.trainer import train
    from sadetr.engine.validation import predict_dataset, score
    from sadetr.eval import format_table

    out: Path = args.out
    no_faiss = missing("faiss")  # the corpus step needs it: said now, not as a traceback at the end
    if no_faiss:
        print(
            "note: faiss is not installed, so the corpus-search step (and `sadetr app/serve/search --demo`) "
            "will be skipped: pip install 'sadetr[search]'"
        )
    t0 = time.perf_counter()
    print(
        f"[1/4] generating {args.n_train} + {args.n_val} synthetic QVHighlights-shaped queries "
        f"in {out / 'data'}"
    )
    paths = generate_synthetic(
        out / "data", "qvhighlights", n_train=args.n_train, n_val=args.n_val, seed=args.seed
    )
    cfg = compose_config([args.config, str(paths["config"])], config_overrides(args))
    t1 = time.perf_counter()
    print(
        f"[2/4] training {cfg.model.name}, {cfg.model.recipe} recipe (d={cfg.model.hidden_dim}, "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}) into {out / 'run'}"
    )
    train(cfg, out / "run")
    t2 = time.perf_counter()
    print("[3/4] predicting the validation split with best.ckpt")
    device = resolve_device(cfg.train.device)
    model, ckpt_cfg, state = load_model(out / "run" / "best.ckpt", device)
    val = build_dataset(ckpt_cfg.data, "val")
    preds = predict_dataset(
        model,
        val,
        collate,
        device,
        batch_size=cfg.train.batch_size,
        round_to_clip=ckpt_cfg.model.round_to_clip,
    )
    write_jsonl(out / "val_predictions.jsonl", preds)
    print("[4/4] evaluating")
    metrics = score(preds, val.ground_truth())
    t3 = time.perf_counter()
    timing = {"generate_s": t1 - t0, "train_s": t2 - t1, "predict_eval_s": t3 - t2, "total_s": t3 - t0}
    write_json(out / "metrics.json", {"metrics": metrics, "best_epoch": state["epoch"], "timing": timing})
    print(format_table(metrics))
    print(
        f"best epoch {state['epoch']}; total {timing['total_s'] / 60:.1f} min "
        f"(data {timing['generate_s']:.0f}s, training {timing['train_s']:.0f}s)"
    )
    print(
        f"outputs: checkpoints and logs {out / 'run'} (tensorboard --logdir {out / 'run' / 'tb'}), "
        f"predictions {out / 'val_predictions.jsonl'}, metrics {out / 'metrics.json'}"
    )
    if no_faiss:
        print("[+] corpus search skipped: needs faiss (pip install 'sadetr[search]')")
        return 0
    from sadetr.corpus.demo import corpus_demo

    print("[+] corpus search: which val video, and when (sadetr index / search / evaluate-corpus)")
    corpus_demo(out / "run" / "best.ckpt", Path(paths["config"]).parent, out / "corpus")
    print(
        f"next, on this synthetic demo (no weights needed): sadetr app --demo {out}  (a browser app), "
        f"sadetr serve --demo {out}  (HTTP), sadetr search --demo {out} --query ..."
    )
    return 0
