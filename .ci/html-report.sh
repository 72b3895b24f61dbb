#!/usr/bin/env bash
# The HTML report, checked in a real browser: `procpool overhead --quick
# --html` writes one self-contained page; headless Chromium must render it
# to a non-blank screenshot. Needs `chromium` (Debian: apt-get install -y
# chromium) and python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/overhead-report}"
mkdir -p "$out"
cargo run -q --release -p procpool-cli -- overhead --quick --html "$out/report.html" > "$out/report.txt"
grep -q '<svg id="stacked"' "$out/report.html"
grep -q '<svg id="throughput"' "$out/report.html"
if grep -qiE '<script|https?://' "$out/report.html"; then
    echo "report.html is not self-contained (script or URL)" >&2
    exit 1
fi
page="file://$(realpath "$out/report.html")"
# What the browser parsed: the three charts, with their bars.
chromium --headless --no-sandbox --disable-gpu --dump-dom "$page" > "$out/dom.html"
for id in stacked latency throughput; do
    grep -q "<svg id=\"$id\"" "$out/dom.html" || { echo "chart $id not in the rendered page" >&2; exit 1; }
done
bars=$(grep -o '<rect' "$out/dom.html" | wc -l)
echo "rendered page: $bars bars"
test "$bars" -ge 20
# What it looks like: a screenshot that is not blank.
rm -f "$out/report.png"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1000,2000 --screenshot="$out/report.png" "$page"
test -s "$out/report.png"
python3 .ci/png_nonblank.py "$out/report.png"
