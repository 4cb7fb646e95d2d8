#!/usr/bin/env bash
# The main job on a fresh machine: venv + install, the real Fashion-MNIST, the default training.
# Extra arguments go to `resnetlab train` (e.g. --epochs 3).
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
have_data() { .venv/bin/python -c "from resnetlab.data import find_data; find_data('fashion-mnist')" 2>/dev/null; }
if ! have_data && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Fashion-MNIST from Debian (dataset-fashion-mnist)..."
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || echo "apt-get failed; trying --download"
fi
download=()
have_data || download=(--download)
exec .venv/bin/resnetlab train "${download[@]}" "$@"
