#!/usr/bin/env bash
# Renders a tailor HTML report to a PNG with headless Chromium, to check its layout by eye.
#
#   tools/report/screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]
#
# Needs Debian's `chromium` (apt-get install chromium); the report is self-contained, so the
# browser never touches the network. The window is 1280x2400 unless given: the screenshot is
# of the window, not of the whole page, so make it taller for long reports.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
    exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1280x2400}

browser=""
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then
        browser=$candidate
        break
    fi
done
if [[ -z $browser ]]; then
    echo "$0: no chromium found; install it with: apt-get install chromium" >&2
    exit 1
fi

# A throwaway profile keeps the run from touching (or depending on) the user's browser state.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars \
    --user-data-dir="$profile" --no-first-run --no-default-browser-check \
    --screenshot="$out" --window-size="${size/x/,}" "file://$report" 2>/dev/null
[[ -s $out ]] || { echo "$0: $browser wrote no screenshot" >&2; exit 1; }
echo "wrote $out"
