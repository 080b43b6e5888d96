#!/usr/bin/env bash
# Installs the Debian packages quantrac's local stack needs, only those missing.
# Each line: a command or file that proves the package is there, then the package.
set -euo pipefail

need=()
check() { if ! command -v "$1" >/dev/null 2>&1 && ! compgen -G "$1" >/dev/null; then need+=("$2"); fi; }
check mosquitto mosquitto
check /usr/sbin/mosquitto mosquitto
check mosquitto_pub mosquitto-clients
check '/usr/lib/postgresql/*/bin/postgres' postgresql
check java openjdk-17-jre-headless
check mvn maven
check kcat kcat
check /usr/bin/chromium chromium
check node nodejs
check npm npm

# A name may be listed twice (binary not on PATH yet); keep each once.
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | sed '/^$/d')
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; run: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
# The Debian packages start their own mosquitto/postgresql services where systemd runs;
# quantrac runs its own instances on its own ports, so stop the system ones if they started.
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
