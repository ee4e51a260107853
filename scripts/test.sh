#!/usr/bin/env bash
# Run the whole test suite: ./scripts/test.sh [pytest arguments]
#
# Database: DATABASE_URL when set; otherwise a throwaway PostgreSQL cluster when the server
# binaries (initdb, pg_ctl) are installed; otherwise SQLite, with a notice.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
cd "${PROJECT_ROOT}"

ensure_venv requirements-dev.txt
ensure_secret_key

find_postgres_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    # Debian and Ubuntu keep the server binaries outside PATH; take the newest version.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "${dir}" ] && [ -x "${dir}/initdb" ] && [ -x "${dir}/pg_ctl" ]; then
        printf '%s\n' "${dir}"
    fi
}

CLUSTER_DIR=""
PG_BIN=""
# Runs a command as the postgres user when this script runs as root (initdb rejects root).
as_cluster_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop_cluster() {
    if [ -n "${CLUSTER_DIR}" ] && [ -d "${CLUSTER_DIR}" ]; then
        say "stopping the throwaway PostgreSQL cluster"
        as_cluster_owner "${PG_BIN}/pg_ctl" -D "${CLUSTER_DIR}/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "${CLUSTER_DIR}"
    fi
}

start_cluster() {
    PG_BIN="$1"
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        say "running as root without a postgres user, so no throwaway cluster can be started"
        return 1
    fi
    CLUSTER_DIR="$(mktemp -d -t ceht-pg.XXXXXX)"
    trap stop_cluster EXIT
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "${CLUSTER_DIR}"
    fi
    local port
    port="$("${VENV}/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    say "starting a throwaway PostgreSQL cluster from ${PG_BIN} on 127.0.0.1:${port} in ${CLUSTER_DIR}"
    as_cluster_owner "${PG_BIN}/initdb" -D "${CLUSTER_DIR}/data" -U postgres -A trust --no-sync >"${CLUSTER_DIR}/initdb.log" 2>&1 \
        || { cat "${CLUSTER_DIR}/initdb.log" >&2; fail "initdb failed"; }
    # fsync and friends off: the cluster is thrown away, so durability only costs time.
    as_cluster_owner "${PG_BIN}/pg_ctl" -D "${CLUSTER_DIR}/data" -l "${CLUSTER_DIR}/server.log" -w -t 60 \
        -o "-p ${port} -k ${CLUSTER_DIR} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null \
        || { cat "${CLUSTER_DIR}/server.log" >&2; fail "the throwaway PostgreSQL cluster did not start"; }
    export DATABASE_URL="postgres://postgres@127.0.0.1:${port}/ceht_test"
}

if [ -n "${DATABASE_URL:-}" ]; then
    say "database: DATABASE_URL=$(redact_url "${DATABASE_URL}") (pytest-django creates and drops test_<name>)"
else
    pg_bin="$(find_postgres_bin || true)"
    if [ -n "${pg_bin}" ] && start_cluster "${pg_bin}"; then
        say "database: throwaway PostgreSQL at $(redact_url "${DATABASE_URL}")"
    else
        say "NOTICE: no DATABASE_URL and no PostgreSQL server binaries found; running on SQLite."
        say "NOTICE: SQLite skips PostgreSQL-only behaviour (row locks); CI runs on PostgreSQL."
    fi
fi

# Browser tests drive Debian's Chromium through Playwright's Python package; Playwright's own
# browser download is never used.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -x /usr/bin/chromium ]; then
    export CEHT_CHROMIUM_PATH="${CEHT_CHROMIUM_PATH:-/usr/bin/chromium}"
    say "browser tests: ${CEHT_CHROMIUM_PATH}"
else
    say "NOTICE: /usr/bin/chromium not found; browser tests will be skipped (apt-get install chromium)"
fi

say "running pytest $*"
status=0
"${VENV}/bin/python" -m pytest "$@" || status=$?
exit "${status}"
