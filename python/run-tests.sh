#!/usr/bin/env bash
# Builds the Python package into a virtual environment under the
# repository's target/pyvenv (made on first use, with maturin and pytest)
# and runs the Python tests. Works from any directory; exits with pytest's
# status. Extra arguments go to pytest (e.g. -k signals).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/target/pyvenv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "run-tests.sh: making $venv" >&2
    mkdir -p "$root/target"
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import pytest" 2>/dev/null || [[ ! -x "$venv/bin/maturin" ]]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "maturin>=1.5,<2" pytest
fi

# maturin develop: an incremental cargo build of the extension, installed
# editable (the package's Python sources are used in place).
(
    cd "$root"
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
        "$venv/bin/maturin" develop --release --quiet -m "$here/Cargo.toml"
)

cd "$root"
set +e
"$venv/bin/python" -m pytest -q "$here/tests" "$@"
status=$?
exit $status
