#!/bin/sh
# Regenerates docs/report-demo.png: the demo's HTML report in headless
# Chromium (apt-get install chromium). Run as root from the repository root.
set -eu
out=${1:-docs/report-demo.png}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s build
./bin/nattrace demo --html "$tmp/report.html" >/dev/null
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$tmp/profile" --window-size=1300,1350 \
  --screenshot="$out" "file://$tmp/report.html" 2>/dev/null
echo "wrote $out"
