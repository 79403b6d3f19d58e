#!/usr/bin/env bash
# Set up (if needed: .venv from requirements*.txt, Debian packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/system-deps.sh   # ejabberd, prosody, chromium + chromium-driver (Debian) for the real-server and browser tests
exec .venv/bin/python -m pytest -q tests "$@"
