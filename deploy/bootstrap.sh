#!/usr/bin/env bash
# Prepares a Debian 12 machine (as root, reaching only the package
# registries) to run and test homeport: the Debian packages of the real
# services, and a virtualenv at <repo>/.venv with homeport installed in
# editable mode plus its test tools. Safe to run again: finished steps are
# skipped in well under a second.
#
#   bash deploy/bootstrap.sh            (PYTHON=python3.12 to pick another interpreter)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
STAMP=$VENV/.homeport-bootstrap
PYTHON=${PYTHON:-python3}

# What the bot, the quick start and the test suite run against.
PACKAGES=(
    docker.io containerd runc iptables cgroupfs-mount
    prosody docker-registry busybox-static openssl
    python3 python3-venv python3-pip ca-certificates sqlite3
)

say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: ERROR: $*" >&2; exit 1; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        say "Debian packages already installed"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "must run as root to install: ${missing[*]}"
    say "installing ${missing[*]}"

    # Maintainer scripts would start docker, prosody and Debian's registry
    # (with auth, on all interfaces) as services; deploy/services.sh starts
    # exactly what is needed instead. policy-rc.d 101 = "do not start".
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, from homeport deploy/bootstrap.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    "${apt[@]}" update </dev/null
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null
    if ((own_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi
    say "Debian packages installed"
}

python_ok() { # INTERPRETER: exists and is >= 3.11
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

ensure_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found on PATH"
    python_ok "$PYTHON" || die "homeport needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1)"
    if python_ok "$VENV/bin/python"; then
        return 0
    fi
    if [ -e "$VENV" ]; then
        say "replacing unusable virtualenv $VENV"
        "$PYTHON" -m venv --clear "$VENV"
    else
        say "creating virtualenv $VENV with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
}

# The stamp records what the last successful install was made from; a
# change to pyproject.toml or the interpreter triggers a new install.
install_python_deps() {
    local want
    want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $("$VENV/bin/python" -V 2>&1)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] &&
        "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("homeport")' 2>/dev/null; then
        say "Python dependencies up to date"
        return 0
    fi
    say "installing homeport and its test tools into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VENV/bin/python" -m pip install -q -e "$REPO[test]" </dev/null
    echo "$want" >"$STAMP"
    say "Python dependencies installed"
}

install_packages
ensure_venv
install_python_deps
