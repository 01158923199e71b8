#!/usr/bin/env bash
# Check the commands nattrace (and with "test", its tests) use; on Debian, as root, install
# the missing packages. Prints what it does; exits non-zero if something is
# still missing.
set -euo pipefail
declare -A pkg=(
  [ip]=iproute2 [nft]=nftables [iptables-nft-save]=iptables [iptables-legacy-save]=iptables
  [iptables-legacy-restore]=iptables [nsenter]=util-linux [conntrack]=conntrack
  [tcpdump]=tcpdump
)
# "deps.sh test": also what only the tests use (the report tests open pages
# in a real Chromium; capture tests read pcapng with tshark).
if [ "${1:-}" = test ]; then
  pkg[chromium]=chromium
  pkg[tshark]=tshark
fi
missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
exit 1
