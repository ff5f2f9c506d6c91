#!/usr/bin/env bash
# THE test command of homeport, for people and for CI (.ci/run calls it):
# prepares a Debian 12 machine (packages, venv), makes sure dockerd and the
# test registry run, builds the test images, then runs pytest with the
# arguments given (the whole suite by default).
#
#   bash tests/run.sh                      everything
#   bash tests/run.sh tests/unit -x        anything pytest accepts
#
# HOMEPORT_TEST_TIMEOUT (seconds, default 1500) caps the pytest run so a
# hang ends with a teardown and a report instead of a killed CI job.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo "==> $*"; }

step bootstrap
bash deploy/bootstrap.sh
step "docker engine"
bash deploy/services.sh ensure-dockerd
step "test registry"
bash deploy/services.sh ensure-registry
step "test images"
.venv/bin/python tests/images.py

step "pytest $*"
set +e
# SIGINT (not TERM) on timeout: pytest treats it like Ctrl-C and still
# runs fixture teardown (spare dockerd, test containers, Prosody).
# --foreground keeps pytest in the terminal's process group, so Ctrl-C works.
timeout --foreground --signal=INT --kill-after=60 "${HOMEPORT_TEST_TIMEOUT:-1500}" \
    .venv/bin/pytest -p no:cacheprovider -ra "$@" </dev/null
rc=$?
set -e
case $rc in
    5) echo "run.sh: pytest collected no tests; that is a failure" >&2; exit 1 ;;
    124) echo "run.sh: pytest exceeded ${HOMEPORT_TEST_TIMEOUT:-1500}s" >&2 ;;
esac
exit $rc
