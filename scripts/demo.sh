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

host="${HOST_PORT%:*}"
port="${HOST_PORT##*:}"
# Checked before anything changes, so a second run cannot reset the password of a running demo.
if (exec 3<>"/dev/tcp/${host}/${port}") 2>/dev/null; then
    fail "${HOST_PORT} is already in use; stop the other server or choose a free port with DEMO_ADDRESS=${host}:$((port + 1))"
fi

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
    # Synthetic cases only, no patients. DEMO_CASES=111 loads the full cohort with the source
    # study's class sizes. A second run skips the cases already loaded.
    local cases="${DEMO_CASES:-12}"
    say "loading ${cases} synthetic demo cases (the worker analyses them once it starts)"
    manage load_demo_cohort --cases "${cases}"
}
load_demo_cohort

say "creating the demo team (one login per role, one password)"
team_output="$(manage create_demo_user --username demo)"
printf '%s\n' "${team_output}"
# Said again in the last line, which the server's and worker's logs would otherwise bury.
password_line="$(printf '%s\n' "${team_output}" | grep '^password' || true)"


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

say "open http://${HOST_PORT}/ and log in as 'demo' (or demo-reader1, demo-reader2, demo-adjudicator); ${password_line:-the password is printed above}; Ctrl-C stops both"
# Returns when either process exits; the trap then stops the other.
wait -n "${server_pid}" "${worker_pid}" || true
