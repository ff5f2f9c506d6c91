#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, as root, installs
# what homeport needs, makes sure a Docker engine runs, then starts
# `homeport demo` (a throwaway Prosody with its own CA, a bot and an owner
# account, the bot itself, and a chat as the owner in this terminal).
# Arguments go to `homeport demo` (e.g. --no-chat, --dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/bootstrap.sh
bash deploy/services.sh ensure-dockerd
exec .venv/bin/homeport demo "$@"
