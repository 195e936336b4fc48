#!/bin/bash
# Submit the array of lumen-batch.sbatch with N tasks and a merge that runs when all
# of them succeeded. Prints the merge job's id.
#
#   IMAGES=/data/images OUT=/data/out docs/scale/run_slurm.sh 8
set -euo pipefail
TASKS="${1:?usage: run_slurm.sh TASKS}"
HERE="$(cd "$(dirname "$0")" && pwd)"
: "${IMAGES:?set IMAGES}" "${OUT:?set OUT}"
LUMEN="${LUMEN:-lumen}"
mkdir -p "$OUT"
ARRAY=$(sbatch --parsable --array="0-$((TASKS - 1))" --chdir="$OUT" --export=ALL "$HERE/lumen-batch.sbatch")
sbatch --parsable --dependency="afterok:$ARRAY" --chdir="$OUT" --job-name=lumen-merge \
  --output=lumen-merge-%j.log --wrap="\"$LUMEN\" merge \"$OUT\""
