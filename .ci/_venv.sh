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

# The newest Python 3.12 or 3.13 on this machine, if newer than the one given (default
# .venv/bin/python): `python3.13` and `python3.12` on PATH, then every pyenv version's
# bin/python3.13 and bin/python3.12 (pyenv's shims fail for versions not selected, so each
# candidate is run, not just found). Prints the interpreter's path, or nothing.
newest_python() {
    local than=${1:-.venv/bin/python} candidates=() candidate version best="" best_version=""
    local minimum
    minimum=$("$than" -c 'import sys; print("%d %d %d" % sys.version_info[:3])' 2>/dev/null) ||
        minimum="0 0 0"
    for candidate in python3.13 python3.12; do
        command -v "$candidate" >/dev/null 2>&1 && candidates+=("$(command -v "$candidate")")
    done
    if command -v pyenv >/dev/null 2>&1; then
        local pyenv_root
        pyenv_root=$(pyenv root 2>/dev/null) || pyenv_root=""
        for candidate in "$pyenv_root"/versions/*/bin/python3.1[23]; do
            [[ -x $candidate ]] && candidates+=("$candidate")
        done
    fi
    for candidate in "${candidates[@]}"; do
        # "major minor micro" of a working 3.12 or 3.13 (a free-threaded build is no python3.1N).
        version=$("$candidate" -c 'import sys
assert (3, 12) <= sys.version_info[:2] <= (3, 13)
print("%d %d %d" % sys.version_info[:3])' 2>/dev/null) || continue
        if version_newer "$version" "${best_version:-$minimum}"; then
            best=$("$candidate" -c 'import sys; print(sys.executable)') && best_version=$version
        fi
    done
    [[ -n $best ]] && printf '%s\n' "$best"
    return 0
}

# Whether version "A B C" is newer than "X Y Z".
version_newer() {
    local -a a=($1) b=($2)
    local i
    for i in 0 1 2; do
        ((a[i] > b[i])) && return 0
        ((a[i] < b[i])) && return 1
    done
    return 1
}

# Creates DIR (e.g. .venv-3.13) with the interpreter PYTHON, or recreates it when it no longer
# runs that interpreter's version (a pyenv upgrade), and installs the project into it as
# ensure_venv does: ensure_python_venv PYTHON DIR.
ensure_python_venv() {
    local python=$1 dir=$2 root want have
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    cd "$root" || return 1
    want=$("$python" -c 'import sys; print(sys.version)') || {
        echo "error: '$python' does not run" >&2
        return 1
    }
    have=$("$dir/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null) || have=""
    if [[ $have != "$want" ]]; then
        echo "creating $dir with $python"
        "$python" -m venv --clear "$dir"
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/pip" install -q -e '.[dev]' </dev/null
}
