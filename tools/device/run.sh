#!/usr/bin/env bash
# The GPU checks of issue 14 as one prepared script, for the device machine (one
# NVIDIA GPU, no network, no Rust): after tools/device/pack.sh ran on the development
# machine, a session lent a device calls (three calls: one carries 64 MiB at most)
#
#   run(command="tools/device/run.sh", carry=[".device/common", ".device/tch"], timeout_s=600)
#   run(command="STEPS='agreement autotune' AGREEMENT_DEVICES= tools/device/run.sh",
#       carry=[".device/common", ".device/autotune"], timeout_s=600)
#   run(command="STEPS=folder tools/device/run.sh", carry=[".device/common", ".device/cli"],
#       timeout_s=300)
#
# The steps on tch (and the direct wgpu of the same binary) run when .device/tch came
# along, the autotune steps when .device/autotune did, the folder when .device/cli did.
# Steps, each under its own time limit so that one hang does not cost the others
# (first run on an H200 on 2026-11-30: steps 1-5 in 229 s; docs/performance.md):
#   1. machine: GPU, driver, torch;
#   2. agreement: Lumen's maps on tch:cuda (f32, f16, bf16) and wgpu (Vulkan on the
#      GPU, f32) against pytorch-grad-cam and captum on the same GPU, TF32 off;
#   3. peers: the issue's table (resnet50, batch 32, TF32 defaults on both sides):
#      forward, GradCAM, GradCAM++, 8 CAMs, IG-50, SmoothGrad-50, ScoreCAM (the
#      end-to-end folder is step 7, with the lumen CLI of another call);
#   4. half precision: the same works on tch:cuda in f16 and bf16 (speed; step 2 has
#      their accuracy);
#   5. wgpu speed on the same works (forward, GradCAM, IG, SmoothGrad);
#   (variants, asked for by name: SmoothGrad and IG with one internal batch of 50,
#   with device-drawn noise, and with their stages timed);
#   6. with the gpu-autotune build (when the kit has it): the same wgpu works with an
#      empty tuning database, then again with the database read back (step 2 checks
#      its maps too, in a database of its own);
#   7. folder (when the kit's cli part came along): `lumen batch` end to end on
#      FOLDER (256) JPEGs against the Python pipeline, and its --profile.
# STEPS (default "agreement peers half wgpu autotune folder"; "variants" only when named)
# picks steps; AGREEMENT_DEVICES (default tch and wgpu; empty: none) the devices of
# peer_lumen that step 2 checks.
# DEADLINE (seconds, default 585) caps the whole: a step gets what is left of it, so
# the run ends inside the device call's limit and what it measured comes back.
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
DEADLINE="${DEADLINE:-585}"
STEPS=" ${STEPS:-agreement peers half wgpu autotune folder} "
FOLDER="${FOLDER:-256}"
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
step() { printf '\n## %s (at %d s)\n\n' "$*" "$SECONDS" | tee -a "$SUMMARY"; }
# Runs a step under a time limit (cut to what is left before DEADLINE); its output
# goes to the summary too.
limited() {
  local seconds="$1"
  shift
  local left=$((DEADLINE - SECONDS - 15))
  [ "$left" -lt "$seconds" ] && seconds="$left"
  if [ "$seconds" -lt 10 ]; then
    echo "(skipped: the run's deadline is near)" | tee -a "$SUMMARY"
    return
  fi
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$SUMMARY"
  local status="${PIPESTATUS[0]}"
  [ "$status" = 0 ] || echo "(step exited with $status; 124: over its ${seconds} s)" | tee -a "$SUMMARY"
}

step "setup"
[ -d "$KIT/common" ] || { echo "$KIT/common is missing: run tools/device/pack.sh first and carry it" | tee -a "$SUMMARY"; exit 1; }
if [ -n "$WGPU" ] && ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for package in "$KIT"/common/gl/*.deb; do dpkg -x "$package" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
SITE=/tmp/lumen-device-site
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$KIT"/common/wheels/*.whl || exit 1
# TQDM_DISABLE: pytorch-grad-cam's progress bars would fill the summary.
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The binaries of whichever parts this call carried (.device/tch, .device/autotune,
# .device/cli).
BIN=/tmp/lumen-device-bin
mkdir -p "$BIN"
for packed in "$KIT"/*/*.xz; do
  [ -f "$packed" ] || continue
  unpacked="$BIN/$(basename "$packed" .xz)"
  "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$packed" "$unpacked"
  chmod +x "$unpacked"
  "$unpacked" --help >/dev/null || { echo "$unpacked does not start here" | tee -a "$SUMMARY"; exit 1; }
done
ls "$BIN" | tee -a "$SUMMARY"

step "machine"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PYTHON" -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "timm", timm.__version__)'
  nproc
} 2>&1 | tee -a "$SUMMARY"

AUTOTUNE=()
[ -n "$WGPU" ] && [ -x "$BIN/peer_lumen_autotune" ] && wanted autotune &&
  AUTOTUNE=(--autotune-peer-lumen "$BIN/peer_lumen_autotune")
TCH_KIT=false
[ -x "$BIN/peer_lumen" ] && TCH_KIT=true
$TCH_KIT || echo "(no .device/tch in this call: the steps on $TCH are left out)" | tee -a "$SUMMARY"
if wanted agreement; then
  DEVICES="${AGREEMENT_DEVICES-$TCH${WGPU:+,$WGPU}}"
  $TCH_KIT || DEVICES=""
  step "agreement with pytorch-grad-cam and captum ($DEVICES; TF32 off)"
  NVIDIA_TF32_OVERRIDE=0 limited 150 "$PYTHON" tools/device/agreement.py --peer-lumen "$BIN/peer_lumen" "${AUTOTUNE[@]}" \
    --model "$MODEL" --torch-device "$TORCH_DEVICE" --devices "$DEVICES" \
    --half-devices "${HALF:+$TCH}" --half-precisions "${HALF// /,}" --json "$OUT/agreement.json"
fi

PEERS=("$PYTHON" benches/peers/peers.py --model "$MODEL" --batch "$BATCH" --heavy-images 1
  --repeats "$REPEATS" --device "$TORCH_DEVICE" --lumen-binary "$BIN/peer_lumen")
# No folder work here: it needs the lumen CLI, which travels in a call of its own.
if $TCH_KIT && wanted peers; then
  step "peers on $TCH (TF32 defaults)"
  limited 180 "${PEERS[@]}" --lumen-device "$TCH" --folder 0 \
    --works forward,gradcam,gradcam++,cams8,ig,smoothgrad,scorecam --json "$OUT/peers.json"
fi

if $TCH_KIT && wanted variants; then
  for variant in "--internal-batch-size 50" "--unseeded" "--profile"; do
    name="$(echo "$variant" | tr -cd 'a-z0-9')"
    step "Lumen on $TCH: SmoothGrad and IG with $variant"
    limited 45 "${PEERS[@]}" --lumen-only --lumen-device "$TCH" --lumen-extra="$variant" \
      --works ig,smoothgrad --json "$OUT/variant_$name.json"
  done
fi

if $TCH_KIT && wanted half; then
  for precision in $HALF; do
    step "Lumen on $TCH in $precision"
    limited 45 "${PEERS[@]}" --lumen-only --lumen-device "$TCH" --lumen-precision "$precision" \
      --works forward,gradcam,cams8,ig,smoothgrad --json "$OUT/precision_$precision.json"
  done
fi

if $TCH_KIT && [ -n "$WGPU" ] && wanted wgpu; then
  step "Lumen on $WGPU (Vulkan), f32"
  limited 90 "${PEERS[@]}" --lumen-only --lumen-device "$WGPU" --repeats 3 \
    --works forward,gradcam,ig,smoothgrad --json "$OUT/wgpu.json"
fi

if [ "${#AUTOTUNE[@]}" -gt 0 ]; then
  # The database lives under the Cargo workspace of the working directory (this
  # repository): empty on a fresh machine, since agreement.py ran elsewhere.
  for database in empty read_back; do
    step "Lumen on $WGPU with gpu-autotune, tuning database $database"
    limited 100 "${PEERS[@]}" --lumen-only --lumen-device "$WGPU" --lumen-binary "$BIN/peer_lumen_autotune" \
      --repeats 3 --works forward,gradcam,ig,smoothgrad --json "$OUT/wgpu_autotune_$database.json"
  done
fi
if [ -x "$BIN/lumen" ] && wanted folder; then
  # The lumen CLI (.device/cli, libtorch only): `lumen batch` on a folder of JPEGs
  # against the Python pipeline (PIL, timm transform, pytorch-grad-cam,
  # show_cam_on_image), then once more with --profile for where its time goes.
  step "end to end: $FOLDER JPEGs, lumen batch on $TCH against the Python pipeline"
  limited 240 "${PEERS[@]}" --lumen-device "$TCH" --works "" --folder "$FOLDER" --lumen-cli "$BIN/lumen" \
    --lumen-profile "$OUT/folder_profile.txt" --json "$OUT/folder.json"
  cat "$OUT/folder_profile.txt" 2>/dev/null | tee -a "$SUMMARY"
fi

step "done"
# Where the tuning databases landed (the empty-then-read-back claim rests on this).
find target/environment "$HOME/.cache/cubecl" -type f -exec ls -la {} + 2>/dev/null | tee -a "$SUMMARY"
