# shellcheck shell=bash
# Sourced by .ci/test and .ci/demo: creates .venv (if missing) at the repo root and
# installs the project into it in editable mode with the dev extras.
# Set PYTHON to choose the interpreter used to create the venv (default: python3).

ensure_venv() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    cd "$root" || return 1
    if [[ ! -x .venv/bin/python ]]; then
        local python=${PYTHON:-python3}
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "error: taskq needs Python >= 3.11; '$python' is missing or older (set PYTHON=...)" >&2
            return 1
        fi
        echo "creating .venv with $("$python" -c 'import sys; print(sys.executable)')"
        "$python" -m venv .venv
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/pip install -q -e '.[dev]' </dev/null
}
