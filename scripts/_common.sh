# Shared steps of scripts/demo.sh and scripts/test.sh; sourced, not run.
# Each step prints what it does, prefixed with "==>".

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PROJECT_ROOT}/.venv"
PYTHON_FOR_VENV="${PYTHON:-python3.11}"
# The CPU build of torch: the default index would install the multi-gigabyte CUDA build.
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
TORCH_VERSION="2.13.0"

say() {
    printf '==> %s\n' "$*"
}

fail() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Create .venv with Python 3.11 if missing, and install REQUIREMENTS_FILE when it (or
# requirements.txt) changed since the last install.
ensure_venv() {
    local requirements_file="$1"
    if [ ! -x "${VENV}/bin/python" ]; then
        command -v "${PYTHON_FOR_VENV}" >/dev/null 2>&1 \
            || fail "${PYTHON_FOR_VENV} not found; install Python 3.11 or set PYTHON=/path/to/python3.11"
        "${PYTHON_FOR_VENV}" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
            || fail "${PYTHON_FOR_VENV} is not Python 3.11; set PYTHON=/path/to/python3.11"
        say "creating the virtual environment ${VENV} with ${PYTHON_FOR_VENV}"
        "${PYTHON_FOR_VENV}" -m venv "${VENV}"
    fi

    local stamp="${VENV}/.installed-$(basename "${requirements_file}" .txt).sha256"
    local wanted
    wanted="$(cat "${PROJECT_ROOT}/requirements.txt" "${PROJECT_ROOT}/${requirements_file}" | sha256sum | cut -d' ' -f1)"
    if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${wanted}" ]; then
        say "packages of ${requirements_file} already installed in .venv"
        return
    fi

    if ! "${VENV}/bin/python" -c "import torch, sys; sys.exit(not torch.__version__.startswith('${TORCH_VERSION}'))" >/dev/null 2>&1; then
        say "installing torch==${TORCH_VERSION} (CPU build) into .venv"
        local index_args=()
        if [ -n "${TORCH_INDEX_URL}" ]; then
            index_args=(--extra-index-url "${TORCH_INDEX_URL}")
        fi
        # Without dependencies, so only torch itself is looked up on the extra index; the next
        # step installs its dependencies from the usual index. Few retries: a machine without
        # access to that index (but with a local CPU wheel) should not wait long.
        "${VENV}/bin/pip" install --quiet --no-deps --retries 1 --timeout 20 "${index_args[@]}" "torch==${TORCH_VERSION}"
    fi
    say "installing ${requirements_file} into .venv (this takes a few minutes the first time)"
    "${VENV}/bin/pip" install --quiet -r "${PROJECT_ROOT}/${requirements_file}"
    printf '%s\n' "${wanted}" >"${stamp}"
}

# Write a random SECRET_KEY to data/.secret_key unless SECRET_KEY is set or the file exists.
ensure_secret_key() {
    local key_file="${PROJECT_ROOT}/data/.secret_key"
    if [ -n "${SECRET_KEY:-}" ]; then
        say "using SECRET_KEY from the environment"
    elif [ -s "${key_file}" ]; then
        say "using the secret key in data/.secret_key"
    else
        say "generating a secret key into data/.secret_key"
        mkdir -p "${PROJECT_ROOT}/data"
        (umask 077 && "${VENV}/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))' >"${key_file}")
    fi
}

# Print a database URL with any password replaced by ***.
redact_url() {
    printf '%s' "$1" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'
}
