#!/usr/bin/env bash
# The GPU checks of issue 14 as one prepared script, for the device machine (one
# NVIDIA GPU, no network, no Rust): after tools/device/pack.sh ran on the development
# machine, a session lent a device calls
#
#   run(command="tools/device/run.sh", carry=[".device"], timeout_s=540)
#
# Steps, each under its own time limit so that one hang does not cost the others (at
# most 8.5 min in all with the limits below; never run on a GPU yet):
#   1. machine: GPU, driver, torch;
#   2. agreement: Lumen's maps on tch:cuda (f32, f16, bf16) and wgpu (Vulkan on the
#      GPU, f32) against pytorch-grad-cam and captum on the same GPU, TF32 off;
#   3. peers: the issue's table (resnet50, batch 32, TF32 defaults on both sides):
#      forward, GradCAM, GradCAM++, 8 CAMs, IG-50, SmoothGrad-50, ScoreCAM (not the
#      end-to-end folder: it needs the lumen CLI, which does not fit in the kit);
#   4. half precision: the same works on tch:cuda in f16 and bf16 (speed; step 2 has
#      their accuracy);
#   5. wgpu speed on the same works (forward, GradCAM, IG, SmoothGrad).
# Everything lands in $OUT (the device tool brings it back): summary.md with every
# table, and one JSON per step.
#
# A dry run on a CPU machine checks the script itself (not the GPU numbers): PYTHON a
# torch 2.11 with timm, OpenCV, matplotlib and scikit-learn beside it (as the image has);
# the CPU is slow enough that some steps reach their limits:
#   PYTHON=... TORCH_DEVICE=cpu TCH=tch:cpu WGPU= MODEL=resnet18 BATCH=2 REPEATS=1 \
#     HALF=f16 OUT=/tmp/dry-out tools/device/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
KIT="$ROOT/.device"
OUT="${OUT:-$ROOT/device-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
MODEL="${MODEL:-resnet50}"
BATCH="${BATCH:-32}"
REPEATS="${REPEATS:-5}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
TCH="${TCH:-tch:cuda:0}"
WGPU="${WGPU-wgpu}"
HALF="${HALF-f16 bf16}"
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
step() { printf '\n## %s (at %d s)\n\n' "$*" "$SECONDS" | tee -a "$SUMMARY"; }
# Runs a step under a time limit; its output goes to the summary too.
limited() {
  local seconds="$1"
  shift
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$SUMMARY"
  local status="${PIPESTATUS[0]}"
  [ "$status" = 0 ] || echo "(step exited with $status; 124: over its ${seconds} s)" | tee -a "$SUMMARY"
}

step "setup"
[ -d "$KIT/bin" ] || { echo "$KIT is missing: run tools/device/pack.sh first and carry .device" | tee -a "$SUMMARY"; exit 1; }
if [ -n "$WGPU" ] && ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for package in "$KIT"/gl/*.deb; do dpkg -x "$package" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
SITE=/tmp/lumen-device-site
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$KIT"/wheels/*.whl || exit 1
# TQDM_DISABLE: pytorch-grad-cam's progress bars would fill the summary.
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
BIN=/tmp/lumen-device-bin
mkdir -p "$BIN"
for packed in "$KIT"/bin/*.xz; do
  "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$packed" "$BIN/$(basename "$packed" .xz)"
done
chmod +x "$BIN"/*
TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$BIN/peer_lumen" --help >/dev/null || { echo "peer_lumen does not start here" | tee -a "$SUMMARY"; exit 1; }

step "machine"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PYTHON" -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "timm", timm.__version__)'
  nproc
} 2>&1 | tee -a "$SUMMARY"

DEVICES="$TCH${WGPU:+,$WGPU}"
step "agreement with pytorch-grad-cam and captum ($DEVICES; TF32 off)"
NVIDIA_TF32_OVERRIDE=0 limited 120 "$PYTHON" tools/device/agreement.py --peer-lumen "$BIN/peer_lumen" \
  --model "$MODEL" --torch-device "$TORCH_DEVICE" --devices "$DEVICES" \
  --half-devices "${HALF:+$TCH}" --half-precisions "${HALF// /,}" --json "$OUT/agreement.json"

PEERS=("$PYTHON" benches/peers/peers.py --model "$MODEL" --batch "$BATCH" --heavy-images 1
  --repeats "$REPEATS" --device "$TORCH_DEVICE" --lumen-binary "$BIN/peer_lumen")
# No folder work: it needs the lumen CLI, which does not fit in the kit (pack.sh).
step "peers on $TCH (TF32 defaults)"
limited 180 "${PEERS[@]}" --lumen-device "$TCH" --folder 0 \
  --works forward,gradcam,gradcam++,cams8,ig,smoothgrad,scorecam --json "$OUT/peers.json"

for precision in $HALF; do
  step "Lumen on $TCH in $precision"
  limited 45 "${PEERS[@]}" --lumen-only --lumen-device "$TCH" --lumen-precision "$precision" \
    --works forward,gradcam,cams8,ig,smoothgrad --json "$OUT/precision_$precision.json"
done

if [ -n "$WGPU" ]; then
  step "Lumen on $WGPU (Vulkan), f32"
  limited 90 "${PEERS[@]}" --lumen-only --lumen-device "$WGPU" --repeats 3 \
    --works forward,gradcam,ig,smoothgrad --json "$OUT/wgpu.json"
fi
step "done"
