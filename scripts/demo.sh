#!/usr/bin/env bash
# Set up and run the demo: ./scripts/demo.sh
#
# Creates .venv, installs requirements.txt, migrates the SQLite database in data/, creates the
# role groups and a demo user (its password is printed), then runs the web server on
# http://127.0.0.1:8000 and one task worker until Ctrl-C. DEBUG is on: this is not a
# production set-up (see README.md for that).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
cd "${PROJECT_ROOT}"

HOST_PORT="${DEMO_ADDRESS:-127.0.0.1:8000}"

ensure_venv requirements.txt
ensure_secret_key

export DEBUG=true
export DATABASE_URL="${DATABASE_URL:-sqlite:///data/db.sqlite3}"
say "database: $(redact_url "${DATABASE_URL}")"
manage() {
    "${VENV}/bin/python" manage.py "$@"
}

say "applying database migrations"
manage migrate --no-input

say "creating the role groups"
manage setup_roles

load_demo_cohort() {
    # TODO: load the synthetic demo cohort here once the generator and the upload pipeline
    # exist; until then the case list starts empty.
    say "loading the synthetic demo cohort: not available yet, skipped"
}
load_demo_cohort

say "creating the demo user"
manage create_demo_user --username demo

host="${HOST_PORT%:*}"
port="${HOST_PORT##*:}"
if ! "${VENV}/bin/python" -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('${host}', ${port})) == 0)"; then
    fail "${HOST_PORT} is already in use; stop the other server or set DEMO_ADDRESS=127.0.0.1:8001"
fi

# Each process gets its own process group, so stopping it also stops its autoreload child.
server_pid=""
worker_pid=""
stop_all() {
    trap - INT TERM EXIT
    say "stopping the web server and the worker"
    for pid in ${server_pid} ${worker_pid}; do
        kill -TERM -- "-${pid}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

say "starting the web server on http://${HOST_PORT}/"
setsid "${VENV}/bin/python" manage.py runserver "${HOST_PORT}" &
server_pid=$!
say "starting one task worker (python manage.py db_worker)"
setsid "${VENV}/bin/python" manage.py db_worker --queue-name '*' &
worker_pid=$!

say "open http://${HOST_PORT}/ and log in as 'demo' with the password printed above; Ctrl-C stops both"
# Returns when either process exits; the trap then stops the other.
wait -n "${server_pid}" "${worker_pid}" || true
