#!/bin/bash
# GPU checks and timings in one call on a lent device (README "Benchmark", "On a GPU"); the device's own python3
# (PyTorch with CUDA) runs the working tree's src/. Optional: BASE=dir holding an earlier src/ to time
# side by side (the same models and trainer on the same warm machine). Results: $OUT/*.json, *.log.
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
DEVICE=${DEVICE:-cuda} STEPS=${STEPS:-20} NTRAIN=${NTRAIN:-640}  # DEVICE=cpu STEPS=1 NTRAIN=64: a dry run
export SADETR_CHECK_DEVICE=$DEVICE
PARTS=${PARTS:-losses profile fp32 bf16 compile train}  # a subset reruns only those
want() { [[ " $PARTS " == *" $1 "* ]]; }
py() { timeout "$1" python3 "${@:2}"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
nproc

want losses && echo "== criterion on CUDA equals CPU" && py 120 tools/device_check.py losses 2>&1 | tail -5

bench() {  # bench LABEL SRC ARGS...
    local label=$1 src=$2
    shift 2
    PYTHONPATH=$src py 240 -m sadetr bench --out "/tmp/bench_$label" --device "$DEVICE" --steps "$STEPS" \
        --models "${MODELS:-sa_detr,qd_detr,moment_detr}" --no-long-videos "$@" > "$OUT/bench_$label.log" 2>&1
    cp "/tmp/bench_$label/bench.json" "$OUT/bench_$label.json" 2>/dev/null
    python3 - "$OUT/bench_$label.json" "$label" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    print(sys.argv[2], "failed"); sys.exit()
for name, m in r["models"].items():
    print(f"{sys.argv[2]:>10} {name:>12}: step {m['train_step_s']*1e3:6.1f} ms (cpu {m['train_step_cpu_s']*1e3:6.1f})"
          f"  infer1 {m['infer_latency_1_s']*1e3:5.1f} ms  infer32 {m['infer_latency_batch_s']*1e3:5.1f} ms"
          f"  mem {m['peak_cuda_mib'] or 0:.0f} MiB")
EOF
}

want profile && echo "== profile of 3 training steps" && py 150 tools/device_check.py profile "$OUT/profile.txt" 2>&1 | tail -3

echo "== bench (20 steps, batch 32 x 75 x 2818)"
want fp32 && bench fp32 "$PWD/src"
want bf16 && bench bf16 "$PWD/src" --bf16
want compile && MODELS=sa_detr,moment_detr bench compile "$PWD/src" --compile
[ -n "${BASE:-}" ] && want fp32 && bench base_fp32 "$BASE/src"
want train || exit 0

echo "== trainer (640 synthetic QVHighlights-shaped queries, 3 epochs, no eval)"
py 60 -m sadetr synth --out /tmp/synth --preset qvhighlights --n-train "$NTRAIN" --n-val 32 > /dev/null 2>&1
train() {  # train LABEL SRC SETS...
    local label=$1 src=$2
    shift 2
    PYTHONPATH=$src py 240 -m sadetr train --config qvhighlights_sfc --config /tmp/synth/dataset.yaml \
        --out "/tmp/run_$label" --set train.epochs=3 --set train.eval_every=0 --set train.device="$DEVICE" \
        --set train.progress=false --set train.tensorboard=false "$@" > "$OUT/train_$label.log" 2>&1
    python3 tools/device_check.py trainer "/tmp/run_$label" 2>&1 | tail -1
}
train w0 "$PWD/src" --set train.num_workers=0
train w4 "$PWD/src" --set train.num_workers=4
train w4_bf16 "$PWD/src" --set train.num_workers=4 --set train.bf16=true
if [ -n "${BASE:-}" ]; then train base_w0 "$BASE/src"; fi
