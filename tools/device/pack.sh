#!/usr/bin/env bash
# Packs what the GPU checks of issue 14 need into .device/ (git-ignored), on the
# development machine, so that a session lent a GPU machine spends its 15 minutes
# measuring, not building: the machine has no network and no Rust toolchain.
#
#   tools/device/pack.sh     # here: about 40 min cold per burn build, seconds warm
#
# .device/common    the Python peers the machine's image lacks (captum,
#                   pytorch-grad-cam and its ttach: pure Python; torch, timm, numpy,
#                   opencv are there), and the Vulkan/EGL loader packages wgpu needs
#                   there (/work/.library/device)
# .device/tch       peer_lumen, release, built with --features tch,wgpu against PyPI's
#                   torch 2.11.0 (the GPU machines' version), stripped, xz-compressed
# .device/autotune  peer_lumen built with wgpu and gpu-autotune (PACK_AUTOTUNE=0: not)
# .device/cli       the lumen CLI with libtorch only, for the end-to-end folder run
#                   (PACK_CLI=0: not; with wgpu too it is 28 MB, too big to carry)
#
# A call carries the tracked tree plus what it names, 64 MiB at most; the tracked tree
# is 42 MiB, so one call carries common with ONE of tch (11 MB), autotune (19 MB) and
# cli:
#
#   run(command="tools/device/run.sh", carry=[".device/common", ".device/tch"], timeout_s=600)
#   run(command="STEPS='agreement autotune' AGREEMENT_DEVICES= tools/device/run.sh",
#       carry=[".device/common", ".device/autotune"], timeout_s=600)
#   run(command="STEPS=folder tools/device/run.sh", carry=[".device/common", ".device/cli"],
#       timeout_s=300)
#
# The script checks each of those sums against 62 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.device
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lumen-ci/target}"
TORCH_VENV="${TORCH_VENV:-$HOME/.cache/lumen-ci/torch-2.11.0}"
if ! "$TORCH_VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
  python3 -m venv "$TORCH_VENV"
  "$TORCH_VENV/bin/pip" install --quiet --disable-pip-version-check torch==2.11.0
fi
TORCH_LIB="$("$TORCH_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
export PATH="$TORCH_VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
  LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cargo build --release -p lumen-cli -p lumen-benches --bins \
  --features lumen-cli/tch,lumen-cli/wgpu,lumen-benches/tch,lumen-benches/wgpu

rm -rf "$KIT" && mkdir -p "$KIT/common/wheels" "$KIT/common/gl" "$KIT/tch"
# peer_lumen alone: it times the works and saves the maps the agreement check reads.
# The lumen CLI (for the end-to-end folder work) is 28 MB compressed with both
# backends: with the tracked tree, over the 64 MiB a call carries.
strip -o "$KIT/tch/peer_lumen" "$CARGO_TARGET_DIR/release/peer_lumen"
xz -T0 -6 "$KIT/tch/peer_lumen"
# And wgpu with gpu-autotune (Burn's autotune, fusion and on-disk tuning database), to
# measure on a real GPU whether it should become wgpu's default: another burn build
# (about 30 min cold).
if [ "${PACK_AUTOTUNE:-1}" = 1 ]; then
  mkdir -p "$KIT/autotune"
  cargo build --release -p lumen-benches --bin peer_lumen \
    --features lumen-benches/wgpu,lumen-benches/gpu-autotune
  strip -o "$KIT/autotune/peer_lumen_autotune" "$CARGO_TARGET_DIR/release/peer_lumen"
  xz -T0 -6 "$KIT/autotune/peer_lumen_autotune"
fi
# The lumen CLI for the folder run, libtorch only (another burn build: 15-20 min cold).
if [ "${PACK_CLI:-1}" = 1 ]; then
  mkdir -p "$KIT/cli"
  cargo build --release -p lumen-cli --bin lumen --features lumen-cli/tch
  strip -o "$KIT/cli/lumen" "$CARGO_TARGET_DIR/release/lumen"
  xz -T0 -6 "$KIT/cli/lumen"
fi

# Wheels for Python 3.12 (the machine's); grad-cam publishes only a source archive,
# built here into a pure-Python wheel.
WHEEL_PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --quiet --no-deps --only-binary=:all: "${WHEEL_PLATFORMS[@]}" \
  -d "$KIT/common/wheels" captum==0.9.0 ttach==0.0.3
python3 -m pip wheel --quiet --no-deps -w "$KIT/common/wheels" grad-cam==1.5.7

# The loaders, as /work/.library/device/README.md says (amd64 packages whatever this
# machine is).
APT_OPTIONS=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
mkdir -p /tmp/amd64/partial
apt-get "${APT_OPTIONS[@]}" update -qq
(cd "$KIT/common/gl" && apt-get "${APT_OPTIONS[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

tracked_bytes="$(git ls-files -z | xargs -0 cat | wc -c)"
common_bytes="$(du -sb "$KIT/common" | cut -f1)"
ls -la "$KIT"/*/*
status=0
for part in tch autotune cli; do
  [ -d "$KIT/$part" ] || continue
  part_bytes="$(du -sb "$KIT/$part" | cut -f1)"
  total_mib=$(( (tracked_bytes + common_bytes + part_bytes) / 1048576 ))
  echo "a call with $KIT/common and $KIT/$part carries $total_mib MiB (tracked $(( tracked_bytes / 1048576 )) MiB)"
  if [ "$total_mib" -gt 62 ]; then
    echo "  over the 64 MiB a device call carries (with margin): leave something out" >&2
    status=1
  fi
done
[ "$status" = 0 ] && sed -n '/^#   run(/,/^# *timeout_s=300)/p' "$0" | sed 's/^#   //; s/^#       /    /'
exit "$status"
