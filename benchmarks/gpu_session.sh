#!/usr/bin/env bash
# The GPU measurements of RESULTS.md in one call: the speed table at 256 px (bf16 and fp32, with the
# paper-faithful step in the same process) and MultiMix trained at 256 px on real chest X-rays, scored on
# its held-out validation splits beside the paper's Table 2.
#
#   bash benchmarks/gpu_session.sh DATA OUT [STEPS]
#
# DATA holds chest_xray/ (Kermany layout) and lungs/images + lungs/masks (image/mask pairs);
# OUT receives speed-bf16.txt, speed-fp32.txt (and .json), train.log, eval.json and the run directory.
# STEPS: training steps (default 3000). Environment overrides, for a dry run on a CPU: DEVICE (cuda),
# SIZE (256), PRECISIONS ("bf16 fp32"; bf16 is emulated, so very slow, on CPUs without it), SPEED_STEPS (5),
# SPEED_FLAGS (extra speed.py options, e.g. --no-memory), EVAL_EVERY (500), PYTHON (python3: the interpreter
# that has torch and mtssl).
set -euo pipefail
cd "$(dirname "$0")/.."

data=${1:?usage: gpu_session.sh DATA OUT [STEPS]}
out=${2:?usage: gpu_session.sh DATA OUT [STEPS]}
steps=${3:-3000}
device=${DEVICE:-cuda}
size=${SIZE:-256}
python=${PYTHON:-python3}
mkdir -p "$out"

for precision in ${PRECISIONS:-bf16 fp32}; do
  "$python" benchmarks/speed.py --device "$device" --sizes "$size" --precision "$precision" \
    --steps "${SPEED_STEPS:-5}" --warmup 2 --json "$out/speed-$precision.json" ${SPEED_FLAGS:-} \
    | tee "$out/speed-$precision.txt"
done

"$python" -m mtssl train --task cls:fixmatch --task seg:kl --bridge saliency \
  --cls-data "kermany:$data/chest_xray" --cls-labels 100 --cls-val-fraction 0.1 \
  --seg-data "pairs:$data/lungs/images,$data/lungs/masks" --seg-labels 10 --seg-val-fraction 0.2 \
  --size "$size" --steps "$steps" --eval-every "${EVAL_EVERY:-500}" --device "$device" --precision auto \
  --out "$out/runs" --name multimix-paper-scale --cache-dir "$out/cache" 2>&1 | tee "$out/train.log"

"$python" -m mtssl eval "$out/runs/multimix-paper-scale" --checkpoint last --device "$device" | tee "$out/eval.txt"
cp "$out/runs/multimix-paper-scale/eval.json" "$out/eval.json"
