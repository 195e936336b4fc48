#!/bin/bash
# Run docs/scale/run_slurm.sh (a 3-task array of lumen-batch.sbatch, then the merge)
# on the local Slurm of start_local_slurm.sh, and check that the merged index and
# grid equal those of one unsharded `lumen batch` on the same images.
#
#   LUMEN=target/release/lumen tools/scale/check_sharded_run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
LUMEN="$(realpath "${LUMEN:?set LUMEN to the lumen binary}")"
WORK="$(mktemp -d)"
mkdir "$WORK/images"
cp docs/figures/*.png crates/lumen-cli/tests/data/*.jpg "$WORK/images/"
# Batches of 2: the 7 images make 4 batches, split 1 | 1 | 2 over the 3 tasks.
"$LUMEN" batch --model shapes-cnn "$WORK/images" --batch-size 2 --out "$WORK/single" --quiet
MERGE_JOB="$(IMAGES="$WORK/images" OUT="$WORK/sharded" LUMEN="$LUMEN" LUMEN_ARGS="--batch-size 2" \
  docs/scale/run_slurm.sh 3)"
echo "merge job $MERGE_JOB queued after the array"
for _ in $(seq 300); do
  [ -z "$(squeue -h 2>/dev/null)" ] && break
  sleep 1
done
if [ -n "$(squeue -h)" ]; then
  squeue; echo "the Slurm jobs did not finish within 300 s" >&2; exit 1
fi
cat "$WORK"/sharded/*.log
ls "$WORK"/sharded/index.shard-000{0,1,2}-of-0003.jsonl
normalise() { sed "s#$2#OUT#g" "$1"; }
diff <(normalise "$WORK/single/index.jsonl" "$WORK/single") \
     <(normalise "$WORK/sharded/index.jsonl" "$WORK/sharded")
cmp "$WORK/single/batch_grid.png" "$WORK/sharded/batch_grid.png"
echo "Slurm array of 3 + merge == one run ($(wc -l < "$WORK/single/index.jsonl") images)"
rm -rf "$WORK"
