#!/usr/bin/env bash
# Set up (if needed) and run the bounded demo: all four scenarios for ~60 s against the
# embedded reference server on loopback. Extra arguments go to locust (e.g. -t 20s).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
set +e
.venv/bin/locust -f locustfile.py --headless -u 40 -r 20 -t 60s --only-summary "$@"
code=$?
set -e
echo "results: $(readlink -f results/latest) (exit code $code; open report.html in that folder)"
exit $code
