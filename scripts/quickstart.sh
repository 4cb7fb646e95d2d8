#!/usr/bin/env bash
# The main job on a fresh machine: venv + install, the real Fashion-MNIST, the default training.
# Extra arguments go to `resnetlab train` (e.g. --epochs 3).
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
have_data() { .venv/bin/python -c "from resnetlab.data import find_data; find_data('fashion-mnist')" 2>/dev/null; }
as_root=()
[ "$(id -u)" = 0 ] || as_root=(sudo -n)  # sudo only where it needs no password: never a prompt midway
if ! have_data && command -v apt-get >/dev/null 2>&1 && "${as_root[@]}" true 2>/dev/null; then
  echo "installing Fashion-MNIST from Debian (dataset-fashion-mnist)..."
  ("${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "apt-get failed; trying --download"
fi
download=()
have_data || download=(--download)
exec .venv/bin/resnetlab train "${download[@]}" "$@"
