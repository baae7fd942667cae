#!/usr/bin/env bash
# GPU check of the FSDP2 full fine-tuning trainer: on a machine with NVIDIA GPUs, full fine-tune the
# embedded SmolLM2-135M-Instruct with `full_fsdp` (one process per GPU, NCCL, bf16 mixed precision,
# packed batches) on Bitext customer-support conversations, and print tokens/s and the model FLOPs
# utilisation (MFU).
#
#   bash benchmarks/gpu_check.sh                 # uses .venv (make setup with a CUDA torch first)
#   STEPS=40 BATCH=32 SEQ=1024 bash benchmarks/gpu_check.sh
#   PEAK_TFLOPS=989 bash benchmarks/gpu_check.sh # dense bf16 peak per GPU, if the name is not known
#
# MFU = 6 * parameters * tokens/s / (GPUs * peak dense bf16 FLOP/s): the forward and backward
# matmul FLOPs of a decoder per token (attention's s^2 term left out, as in the PaLM paper's
# definition without it), over what the GPUs could do.  Throughput is measured from the end of
# the warm-up steps to the last step, from the trainer's own progress events, so model loading,
# sharding and the first (compiling, allocating) steps are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
BATCH=${BATCH:-16}
SEQ=${SEQ:-1024}
EXAMPLES=${EXAMPLES:-2000}

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this check needs an NVIDIA GPU" >&2; exit 2; }
"$PY" - <<'EOF' || { echo "gpu_check: torch in $PY has no CUDA: make setup TORCH_SPEC='torch==2.13.0' (the CUDA wheel)" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
GPUS=${GPUS:-$("$PY" -c 'import torch; print(torch.cuda.device_count())')}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/gpu.yaml" <<YAML
name: gpu-check
seed: 0
model: smollm2-135m-instruct
data:
  - path: \${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv
    format: csv
    sample: $EXAMPLES
    user: "{instruction}"
    assistant: "{response}"
train:
  name: full_fsdp
  precision: bf16
  batching: packed
  batch_size: $BATCH
  max_length: $SEQ
  max_steps: $STEPS
  learning_rate: 1.0e-5
  save_every: 1000000
  launch: {nproc_per_node: $GPUS}
report: [json]
YAML

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -m harness.cli run "$WORK/gpu.yaml" --store "$WORK/store" --reports "$WORK/reports" --no-cache

"$PY" - "$WORK" "$GPUS" "$WARMUP" <<'EOF'
import json, os, sys
from pathlib import Path

import torch

work, gpus, warmup = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(events,) = work.glob("store/artifacts/train/*/events.jsonl")
progress = [e for e in map(json.loads, events.read_text().splitlines()) if e["kind"] == "progress"]
start = min(warmup, len(progress) - 2)
first, last = progress[start], progress[-1]
tokens = last["input_tokens"] - first["input_tokens"]
seconds = last["elapsed"] - first["elapsed"]
(sharding,) = work.glob("store/artifacts/train/*/sharding_rank0.json")
params = json.loads(sharding.read_text())["total_params"]
name = torch.cuda.get_device_name(0)
PEAKS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10G": 125, "A10": 125, "RTX 4090": 165, "V100": 125}
peak = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in PEAKS.items() if k in name), 0))
rate = tokens / seconds
print(f"GPU: {gpus} x {name}; model: SmolLM2-135M-Instruct ({params:,} parameters), FSDP2, bf16, packed")
print(f"steps {first['step'] + 1}-{last['step']}: {tokens:,} tokens in {seconds:.1f} s = {rate:,.0f} tokens/s "
      f"({rate / gpus:,.0f} per GPU), loss {progress[0]['loss']:.3f} -> {last['loss']:.3f}")
if peak:
    mfu = 6 * params * rate / (gpus * peak * 1e12)
    print(f"MFU: {mfu:.1%} of {gpus} x {peak:.0f} TFLOP/s dense bf16")
else:
    print(f"MFU: unknown peak for {name!r}; set PEAK_TFLOPS")
EOF
