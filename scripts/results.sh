#!/usr/bin/env bash
# The CPU comparison at the default settings: each policy with each seed s,
# which sets both the draw of rows (policy.seed) and training (train.seed), so
# seeds cover both variances (with one fixed draw, Duplicate's and (N)'s picks
# overlapped by construction); one test set, one teacher cache.
# Resumable: an experiment that already exists is skipped, and what a stopped
# run paid is kept by the teacher cache and DVC's run cache.
#
#   bash scripts/results.sh                     # R52: all 4 policies x 3 seeds
#   SEEDS=0 POLICIES="random adaptive" bash scripts/results.sh
#   DATASET=mcqa PARAMS="-S data.test_per_domain=100" POLICIES="random adaptive" bash scripts/results.sh
#   TARGETS=evaluate@s1 ...          # only what the final evaluation needs (no s0 or zero-shot evaluation)
#
# Experiments are named <prefix>-<policy>-seed<s> (PREFIX: the data set by
# default; r52v2 for the runs at the 2026-12 defaults, beside the older r52 ones).
# Each finished run appends "name, commit, wall seconds, finished at" to $LOG
# (with its header line if new); `baldistill report` adds
# the teacher's tokens/s from each run's ledger. A run stopped by Ctrl-C or
# SIGTERM writes its sitting's seconds to $SITTINGS; when it finishes in a
# later sitting, its wall seconds in $LOG are the sum of all its sittings.
# Each finished run's record (what `baldistill report` reads of it) is saved
# under $RECORDS: commit them, and `baldistill report --from-runs $RECORDS`
# rebuilds the report on a machine without the experiments.
# The teacher's answers live in the teacher cache on this machine only: the
# script imports $ANSWERS (if it exists) before the first run and exports the
# whole cache to it after each one, so a later session on a fresh machine pays
# for none of them again. Commit it (gzipped JSONL, about 0.2 KB an answer).
set -euo pipefail
cd "$(dirname "$0")/.."
export BALDISTILL_TEACHER_CACHE=${BALDISTILL_TEACHER_CACHE:-$PWD/.baldistill/teacher-cache}
# Run this checkout's code even where the venv's editable install points elsewhere.
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
DATASET=${DATASET:-r52}
PREFIX=${PREFIX:-$DATASET}
PARAMS=${PARAMS:-}
LOG=${LOG:-docs/results/${DATASET}_runs.tsv}
SITTINGS=${SITTINGS:-${LOG%.tsv}_sittings.tsv}
SEEDS=${SEEDS:-"0 1 2"}
POLICIES=${POLICIES:-"adaptive random naive duplicate"}
TARGETS=${TARGETS:-}
RECORDS=${RECORDS:-docs/results/runs}
ANSWERS=${ANSWERS:-docs/results/teacher-answers.jsonl.gz}
if [ -f "$ANSWERS" ]; then baldistill cache import "$ANSWERS"; fi

stopped() { # this sitting's seconds, added to the run's wall time when a later sitting finishes it
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - start))" "$(date -u +%FT%TZ)" >>"$SITTINGS"
  baldistill cache export "$ANSWERS" || true # what the stopped run paid for is kept too
  exit 130
}

for seed in $SEEDS; do
  for policy in $POLICIES; do
    name=$PREFIX-$policy-seed$seed
    # Finished: an experiment of this repo, or a line of $LOG (experiments fetched
    # from another clone's refs/exps are not listed by `dvc exp list`).
    if dvc exp list --all-commits --name-only 2>/dev/null | grep -qx "$name" ||
      cut -f1 "$LOG" 2>/dev/null | grep -qx "$name"; then
      echo "$name: exists, skipped"
      continue
    fi
    start=$(date +%s)
    trap stopped INT TERM
    # shellcheck disable=SC2086  # PARAMS is a list of -S options, TARGETS of stages
    dvc exp run --temp -n "$name" -S data.dataset="$DATASET" $PARAMS \
      -S policy.name="$policy" -S policy.seed="$seed" -S train.seed="$seed" $TARGETS
    trap - INT TERM
    earlier=$(awk -F'\t' -v n="$name" '$1 == n {s += $2} END {print s + 0}' "$SITTINGS" 2>/dev/null || echo 0)
    [ -s "$LOG" ] || printf 'experiment\tcommit\twall_s\tfinished\n' >"$LOG" # read_times needs its header
    printf '%s\t%s\t%s\t%s\n' "$name" "$(git rev-parse --short HEAD)" "$((earlier + $(date +%s) - start))" \
      "$(date -u +%FT%TZ)" >>"$LOG"
    baldistill report "$name" --save-runs "$RECORDS" --n-boot 1 --out "$(mktemp -d)" >/dev/null ||
      echo "$name: its record was not saved; run the line above by hand" >&2 # the next run goes on
    baldistill cache export "$ANSWERS"
  done
done
