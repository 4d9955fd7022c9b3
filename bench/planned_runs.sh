#!/usr/bin/env bash
# Planned training runs, one after the other, each alone on the machine: train with no flags
# besides --model, --out and --time-limit, then evaluate the model file on the held-out cases in
# their original geometry (the product's inference: sliding window, mirroring TTA).
#
#   bench/planned_runs.sh OUT_DIR DATA_DIR "DATASET:MODEL" ["DATASET:MODEL" ...]
#   e.g. bench/planned_runs.sh /tmp/runs ../shared/data hippocampus:axunet ph2:danie
#
# Writes OUT_DIR/<dataset>_<model>/ (the run folder), <dataset>_<model>.log (progress),
# <dataset>_<model>.json (the run's summary),
# <dataset>_<model>.heldout.json (the evaluation) and appends a line per run to OUT_DIR/summary.txt.
# Record the figures in bench/RESULTS.md.
#
# INTERACTIVE=1 trains with --interactive and evaluates with the robot user
# (`attentionseg interactive-eval --clicks ${CLICKS:-5}`) instead of evaluate-dataset.
set -euo pipefail
out=$1 data=$2
shift 2
minutes=${TIME_LIMIT_MIN:-10}
interactive=${INTERACTIVE:-0}
train_flags=() suffix=""
if [ "$interactive" = 1 ]; then train_flags=(--interactive) suffix="_interactive"; fi
attentionseg=${ATTENTIONSEG:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/attentionseg"}
mkdir -p "$out"
for pair in "$@"; do
    dataset=${pair%%:*} model=${pair##*:}
    name="${dataset}_${model}${suffix}"
    json="$data/$dataset/dataset.json"
    start=$(date +%s)
    "$attentionseg" train "$json" --model "$model" --out "$out/$name" --time-limit "$minutes" "${train_flags[@]}" --json \
        >"$out/$name.json" 2>"$out/$name.log" || echo "train failed: see $out/$name.log"
    trained=$(($(date +%s) - start))
    # The summary is pretty-printed JSON: read it as JSON, not line by line.
    best=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("best", d["best_mean_dice"], d["best_dice"])' \
        "$out/$name.json" 2>/dev/null || true)
    if [ "$interactive" = 1 ]; then
        "$attentionseg" interactive-eval "$out/$name/model.pt" "$json" --clicks "${CLICKS:-5}" \
            --json "$out/$name.heldout.json" >"$out/$name.heldout.txt" 2>&1 \
            || echo "interactive-eval failed: see $out/$name.heldout.txt"
    else
        "$attentionseg" evaluate-dataset "$out/$name/model.pt" "$json" --json "$out/$name.heldout.json" \
            >"$out/$name.heldout.txt" 2>&1 || echo "evaluate failed: see $out/$name.heldout.txt"
    fi
    echo "$name  train ${trained}s  ${best:-no best}  heldout: $(grep -m1 -i -e "^mean Dice" -e "^final Dice" "$out/$name.heldout.txt" || true)" \
        | tee -a "$out/summary.txt"
done
