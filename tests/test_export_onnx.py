"""ONNX export (`sadetr.inference.export`) of all three models: onnxruntime gives the eager model's outputs
(<= 1e-4 on spans, quality and saliency) and the same top-1 windows after the shared post-processing, on
random and on trained weights, for padded batches of every length the graph was exported for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadetr.bench.speed import synthetic_batch
from sadetr.config.compose import compose_config
from sadetr.data.pipeline import FeaturePipeline
from sadetr.engine.checkpoint import load_trained_model
from sadetr.engine.schedule import build_optimizer
from sadetr.engine.trainer import total_loss
from sadetr.inference.backend import OnnxBackend
from sadetr.inference.export import export_onnx
from sadetr.model.build import build_criterion, build_model
from sadetr.model.postprocess import to_submission

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4
MODELS = ("sa_detr", "qd_detr", "moment_detr")


def _batches(pipe: FeaturePipeline) -> list[dict]:
    """Padded batches over the exported range: 1 x max_v_l, 4 with padded videos and queries, 1 clip."""
    out = []
    for seed, (bsz, lv, lt) in enumerate([(1, pipe.max_v_l, 12), (4, 40, pipe.max_q_l), (3, 1, 1)]):
        b = synthetic_batch(bsz, lv, lt, pipe.video_dim, pipe.text_dim, seed=seed + 10)
        if bsz > 1 and lv > 1:
            b["video_mask"][1, lv // 3 :] = False
            b["text_mask"][2, max(1, lt // 2) :] = False
            b["meta"][1] = {**b["meta"][1], "num_clips": lv // 3, "duration": 2.0 * (lv // 3)}
        out.append(b)
    return out


def _check_parity(model: torch.nn.Module, pipe: FeaturePipeline, path: Path) -> OnnxBackend:
    export_onnx(model, pipe, path)
    session = OnnxBackend(path, max_v_l=pipe.max_v_l, max_q_l=pipe.max_q_l)
    for b in _batches(pipe):
        args = (b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"])
        with torch.no_grad():
            eager = model(*args)
        ort = session(*args)
        valid = b["video_mask"]
        for key in ("pred_spans", "pred_quality"):
            torch.testing.assert_close(ort[key], eager[key], rtol=0, atol=TOL, msg=key)
        torch.testing.assert_close(
            ort["saliency_scores"][valid], eager["saliency_scores"][valid], rtol=0, atol=TOL
        )
        top1 = [r["pred_relevant_windows"][0][:2] for r in to_submission(eager, b["meta"])]
        assert [r["pred_relevant_windows"][0][:2] for r in to_submission(ort, b["meta"])] == top1
    return session


def _model(name: str) -> tuple[torch.nn.Module, FeaturePipeline, object]:
    cfg = compose_config("synthetic_tiny", [f"model.name={name}"])
    torch.manual_seed(0)
    return build_model(cfg.model).eval(), FeaturePipeline.from_data_config(cfg.data), cfg


def _trained(name: str, steps: int = 30) -> tuple[torch.nn.Module, FeaturePipeline]:
    """`steps` AdamW steps on one synthetic batch: weights away from their initialisation."""
    model, pipe, cfg = _model(name)
    criterion = build_criterion(cfg.model, cfg.loss)  # type: ignore[attr-defined]
    opt = build_optimizer(model, cfg.train)  # type: ignore[attr-defined]
    b = synthetic_batch(8, 30, 10, pipe.video_dim, pipe.text_dim, seed=3)
    model.train()
    for _ in range(steps):
        out = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"], targets=b["spans"])
        loss = total_loss(criterion(out, b), criterion.weight_dict)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), pipe


def _optimized_ops(path: Path, out: Path, monkeypatch: pytest.MonkeyPatch | None) -> set[str]:
    """Node types of the graph onnxruntime runs for `path`: through `OnnxBackend` (with `monkeypatch`, which
    makes its session options write the optimized graph to `out`), or a plain default session (None)."""
    import onnx
    import onnxruntime as ort

    real = ort.SessionOptions

    def writing() -> ort.SessionOptions:
        options = real()
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        return options

    if monkeypatch is None:
        ort.InferenceSession(str(path), writing(), providers=["CPUExecutionProvider"])
    else:
        with monkeypatch.context() as patch:
            patch.setattr(ort, "SessionOptions", writing)
            OnnxBackend(path)
    return {node.op_type for node in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize("name", MODELS)
def test_onnx_equals_eager_on_random_weights(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, pipe, _ = _model(name)
    session = _check_parity(model, pipe, tmp_path / f"{name}.onnx")
    # the CPU session leaves out the fusion measured slower (backend.CPU_DISABLED_FUSIONS); by default
    # onnxruntime applies it to these graphs
    path = tmp_path / f"{name}.onnx"
    assert "SkipLayerNormalization" in _optimized_ops(path, tmp_path / "default.onnx", None)
    ops = _optimized_ops(path, tmp_path / "backend.onnx", monkeypatch)
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops
    # the graph was traced up to max_v_l clips: longer inputs are refused, not run
    b = synthetic_batch(1, pipe.max_v_l + 1, 4, pipe.video_dim, pipe.text_dim)
    with pytest.raises(ValueError, match="exceed the exported maximum 75"):
        session(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"])


def test_onnx_equals_eager_on_the_trained_sa_detr(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, cfg, state = load_trained_model(tiny_checkpoint)
    pipe = FeaturePipeline.from_record(state["features"], cfg.data, (cfg.model.video_dim, cfg.model.text_dim))
    _check_parity(model, pipe, tmp_path / "trained.onnx")


@pytest.mark.slow  # an export takes ~40 s of CPU; the SA-DETR one above runs in every lane
@pytest.mark.parametrize("name", ["qd_detr", "moment_detr"])
def test_onnx_equals_eager_on_trained_baselines(name: str, tmp_path: Path) -> None:
    model, pipe = _trained(name)
    _check_parity(model, pipe, tmp_path / f"{name}.onnx")
