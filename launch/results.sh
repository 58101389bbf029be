# Shared by the launch/results-* scripts (sourced after common.sh): the budget options every table takes, method
# variants, and running trainings a few at a time, each resumable and skipped once complete.
#
# Budget options (defaults: results_options' shared budget, unless the script sets its own first): --out DIR,
# --methods 'M ...', --train-subset N, --validation V, --epochs E, --eval-every K (evaluate every K epochs and at
# the last), --seeds 'S ...', --threads T, --jobs J, --drop-last true|false (true, as every committed table was
# run: the last partial batch of each epoch dropped; the trainer's own default keeps it); a script adds its own with RESULTS_EXTRA (a function given the
# option and its value, returning non-zero for an unknown option).
# A method may carry keys as a variant, NAME:key=value[,key=value]: a plain key is the method's (`dml:temperature=3`
# sets method.temperature), a dotted one the run's (`dkd:optimizer.lr=0.05`); the run's directory is named
# NAME_key=value_... (`dml_temperature=3`).

# results_options SCRIPT "$@": reads the budget options into out, methods, subset, validation, epochs, every, seeds,
# threads and jobs, and the run keys they set into the array `budget` (--set options for every run).
results_options() {
    local script="$1"; shift
    # The budget every table shares unless its script sets its own first (README, "Why this budget").
    subset=${subset:-2000} validation=${validation:-1000} epochs=${epochs:-200} every=${every:-25}
    seeds=${seeds:-0 1 2} threads=${threads:-1} jobs=${jobs:-2} drop_last=${drop_last:-true}
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || [[ "$1" == -h || "$1" == --help ]] || { echo "launch/$script: option '$1' needs a value (see --help)" >&2; exit 2; }
        case "$1" in
            --out) out="$2" ;;
            --methods) methods="$2" ;;
            --train-subset) subset="$2" ;;
            --validation) validation="$2" ;;
            --epochs) epochs="$2" ;;
            --eval-every) every="$2" ;;
            --seeds) seeds="$2" ;;
            --threads) threads="$2" ;;
            --jobs) jobs="$2" ;;
            --drop-last) drop_last="$2" ;;
            -h|--help) sed -n '2,/^set -euo/p' "launch/$script" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) if ! { declare -F results_extra >/dev/null && results_extra "$1" "$2"; }; then
                   echo "launch/$script: unknown option '$1' (see --help)" >&2; exit 2
               fi ;;
        esac
        shift 2
    done
    for n in "$subset" "$validation" "$epochs" "$every" "$threads" "$jobs"; do
        [[ "$n" =~ ^[0-9]+$ ]] || { echo "launch/$script: budget options take whole numbers, got '$n'" >&2; exit 2; }
    done
    [[ "$drop_last" == true || "$drop_last" == false ]] || { echo "launch/$script: --drop-last takes true or false, got '$drop_last'" >&2; exit 2; }
    budget=(--set dataset.train_subset="$subset" --set dataset.validation="$validation" --set epochs="$epochs"
            --set eval_every="$every" --set threads="$threads" --set drop_last="$drop_last")
    mkdir -p "$out"
    results_failed=0
}

# The directory name of a variant.
variant_name() { local v="${1/:/_}"; echo "${v//,/_}"; }

# The --set options of a variant, one per line.
variant_sets() {
    local name="${1%%:*}" keys
    echo "--set method.name=$name"
    [ "$name" = "$1" ] && return
    keys="${1#*:}"
    for kv in ${keys//,/ }; do
        case "${kv%%=*}" in *.*) echo "--set $kv" ;; *) echo "--set method.$kv" ;; esac
    done
}

# results_run DIR ARGS...: `distill train ARGS --out DIR` in the background (log DIR.log) unless DIR holds a complete
# run of $epochs epochs, resuming a partial one; at most $jobs at a time.
results_run() {
    local dir="$1"; shift
    [ -f "$dir/checkpoints/state.json" ] && [ "$(grep -c . "$dir/metrics.jsonl")" -ge "$epochs" ] && return 0
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || results_failed=1; done
    echo "== $dir (log $dir.log)" >&2
    local resume=()
    [ -f "$dir/checkpoints/state.json" ] && resume=(--resume)
    mkdir -p "$(dirname "$dir")"
    .build/release/distill train "$@" --out "$dir" "${resume[@]}" > "$dir.log" 2>&1 &
}

# results_wait SCRIPT: waits for every run; stops the script if one failed.
results_wait() {
    while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || results_failed=1; done
    [ "$results_failed" = 0 ] || { echo "launch/$1: a run failed; see the logs in $out" >&2; exit 1; }
}
