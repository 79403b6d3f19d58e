#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing: the real XMPP targets
# (ejabberd, prosody) and headless Chromium + ChromeDriver for the web UI's browser tests.
# Needs root (or sudo) and apt-get; prints what it does; a no-op when everything is there.
set -euo pipefail
want=(ejabberd prosody chromium chromium-driver)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need Debian packages ${missing[*]} and there is no apt-get here" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
# apt-get never starts the services here (policy-rc.d / no systemd): the tests start their own servers
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
