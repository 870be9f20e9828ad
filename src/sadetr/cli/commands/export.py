"""`sadetr export`: a trained model as a portable model folder (config + safetensors weights + model card),
optionally with its eval model as ONNX for onnxruntime (`--format onnx`) and an int8 copy (`--int8`).

    sadetr export --checkpoint runs/demo/run --format onnx --out runs/demo/model
    sadetr predict --checkpoint runs/demo/model --backend onnx --out preds.jsonl

The folder runs without the run directory and is read without unpickling (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from sadetr.core.errors import ConfigError

FORMATS = ("onnx", "safetensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained model: portable model folder, ONNX graph (+ int8)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="a .ckpt file, a run directory or a model folder"
    )
    p.add_argument(
        "--format",
        default="onnx",
        choices=FORMATS,
        help="onnx: the model folder and model.onnx (default); safetensors: the model folder only",
    )
    p.add_argument("--out", required=True, type=Path, help="the model folder to write")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (dynamic quantisation; docs/deploy.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sadetr.inference.folder import record_onnx, save_pretrained
    from sadetr.inference.loading import load_model

    if args.int8 and args.format != "onnx":
        raise ConfigError("--int8 quantises the ONNX graph: use it with --format onnx", key="--int8")
    if args.format == "onnx":
        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"needs {', '.join(missing)}: pip install 'sadetr[onnx]'", key="--format")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"{args.out} exists and is not a folder", key="--out")
    loaded = load_model(args.checkpoint)
    folder = save_pretrained(
        args.out,
        loaded.model,
        loaded.cfg,
        loaded.pipeline,
        metrics=loaded.metrics,
        provenance={**loaded.provenance, "exported_from_sha256": loaded.identity},
    )
    print(f"wrote {folder} (config.json, model.safetensors, README.md)")
    if args.format == "onnx":
        from sadetr.inference.export import export_onnx, quantize_int8

        t = time.perf_counter()
        settings = export_onnx(loaded.model, loaded.pipeline, folder / "model.onnx")
        record_onnx(folder, "model.onnx", settings)
        print(
            f"wrote {folder / 'model.onnx'} in {time.perf_counter() - t:.0f} s (batch {settings['batch']}, "
            f"clips {settings['clips']}, tokens {settings['tokens']}; max |onnx - eager| "
            f"{settings['parity_max_abs_diff']:.1e})"
        )
        if args.int8:
            record_onnx(
                folder, "model.int8.onnx", quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
            )
            print(f"wrote {folder / 'model.int8.onnx'}")
    return 0
