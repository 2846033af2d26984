#!/usr/bin/env bash
# Worker-pool throughput of mulproc against pymulproc 0.1.2 (and optionally
# plain multiprocessing.Queue), 1 parent + W workers, 64-byte tasks.
#
#   benches/compare_pymulproc.sh [--with-mpqueue]
#
# Runs the pools in turn (A B A B A B, or A B C ... with --with-mpqueue) because
# this shared machine drifts by 2-4x between minutes; each round's ratio compares
# two runs taken seconds apart, and the median ratio is the result. The last
# line is `ratio_vs_pymulproc=<median of mulproc tasks/s / pymulproc tasks/s>`.
#
# Environment (defaults in brackets):
#   BENCH_WORKERS     workers per pool [4]
#   BENCH_ROUNDS      rounds [3]
#   MULPROC_TASKS     tasks per mulproc run [2000000]
#   PYMULPROC_TASKS   tasks per pymulproc run [80000]
#   MPQUEUE_TASKS     tasks per multiprocessing.Queue run [80000]
#   MULPROC_POOL_CMD  command run instead of the worker_pool example, split on
#                     spaces, given `--workers W --tasks N` (skips the cargo
#                     build; for testing this script, e.g. a fake printer)
#   PYTHON            interpreter that creates the venv [python3]
#
# The Python pools run in a virtual environment at target/bench-venv (created if
# missing, reused if present) with benches/requirements-pymulproc.txt installed.
# Task counts are chosen so each run takes a couple of seconds; each run's rate
# is taken from the last line of its stdout, `tasks_per_sec=<value>`.
set -euo pipefail

with_mpqueue=0
for arg in "$@"; do
    case "$arg" in
        --with-mpqueue) with_mpqueue=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

workers="${BENCH_WORKERS:-4}"
rounds="${BENCH_ROUNDS:-3}"
mulproc_tasks="${MULPROC_TASKS:-2000000}"
pymulproc_tasks="${PYMULPROC_TASKS:-80000}"
mpqueue_tasks="${MPQUEUE_TASKS:-80000}"
for v in workers rounds mulproc_tasks pymulproc_tasks mpqueue_tasks; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $v must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done

# --- Python environment -------------------------------------------------------
venv="$repo/target/bench-venv"
requirements="$repo/benches/requirements-pymulproc.txt"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtual environment in $venv" >&2
    mkdir -p "$repo/target"
    "${PYTHON:-python3}" -m venv "$venv"
fi
# Install only when the requirements changed since the last install.
stamp="$venv/.requirements-installed"
if ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
py="$venv/bin/python"

# --- mulproc example ------------------------------------------------------------
if [[ -n "${MULPROC_POOL_CMD:-}" ]]; then
    read -r -a mulproc_cmd <<<"$MULPROC_POOL_CMD"
    echo "note: MULPROC_POOL_CMD set, using '${MULPROC_POOL_CMD}' instead of the worker_pool example" >&2
else
    cargo build --release --example worker_pool
    mulproc_cmd=("${CARGO_TARGET_DIR:-$repo/target}/release/examples/worker_pool")
fi

# --- helpers --------------------------------------------------------------------
# run_pool NAME CMD... : runs CMD, echoes its tasks/s; on failure shows its output and exits.
run_pool() {
    local name="$1" out rate
    shift
    if ! out="$("$@" 2>&1)"; then
        printf 'error: %s run failed: %s\n%s\n' "$name" "$*" "$out" >&2
        exit 1
    fi
    rate="$(printf '%s\n' "$out" | sed -e 's/[[:space:]]*$//' -e '/^$/d' | tail -n 1)"
    rate="${rate#tasks_per_sec=}"
    if ! [[ "$rate" =~ ^[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$ ]] || [[ "$rate" =~ ^0*\.?0*$ ]]; then
        printf 'error: %s did not end with tasks_per_sec=<positive number>: %s\n%s\n' \
            "$name" "$*" "$out" >&2
        exit 1
    fi
    printf '%s\n' "$rate"
}

# calc EXPR...: python3 arithmetic (no bc), arguments become sys.argv[1:].
calc() {
    local expr="$1"
    shift
    "$py" -c "import statistics, sys; a = [float(x) for x in sys.argv[1:]]; print($expr)" "$@"
}

# --- rounds ---------------------------------------------------------------------
header="worker pool, $workers workers, $rounds rounds: mulproc $mulproc_tasks tasks, pymulproc $pymulproc_tasks tasks"
if ((with_mpqueue)); then
    header+=", multiprocessing.Queue $mpqueue_tasks tasks"
fi
echo "$header"
ratios_pym=()
ratios_mpq=()
for ((r = 1; r <= rounds; r++)); do
    a="$(run_pool mulproc "${mulproc_cmd[@]}" --workers "$workers" --tasks "$mulproc_tasks")"
    b="$(run_pool pymulproc "$py" benches/pool_pymulproc.py --workers "$workers" --tasks "$pymulproc_tasks")"
    ratio="$(calc 'a[0] / a[1]' "$a" "$b")"
    ratios_pym+=("$ratio")
    line="round $r: mulproc=$a pymulproc=$b ratio=$(calc 'f"{a[0]:.2f}"' "$ratio")"
    if ((with_mpqueue)); then
        c="$(run_pool mpqueue "$py" benches/pool_mpqueue.py --workers "$workers" --tasks "$mpqueue_tasks")"
        ratio_c="$(calc 'a[0] / a[1]' "$a" "$c")"
        ratios_mpq+=("$ratio_c")
        line+=" | mp.Queue=$c ratio=$(calc 'f"{a[0]:.2f}"' "$ratio_c")"
    fi
    echo "$line"
done

if ((with_mpqueue)); then
    echo "ratio_vs_mpqueue=$(calc 'f"{statistics.median(a):.2f}"' "${ratios_mpq[@]}")"
fi
echo "ratio_vs_pymulproc=$(calc 'f"{statistics.median(a):.2f}"' "${ratios_pym[@]}")"
