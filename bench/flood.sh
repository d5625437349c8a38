#!/usr/bin/env bash
# Herald under a flood of made-up addresses: `/` while 300 connections ask for random window
# ids (each a page that does not exist).
#
#   bash bench/flood.sh
#
# Knobs (environment): SAMPLES (changed renders timed per phase, default 200), FLOOD_CONNECTIONS
# (default 300), PROFILE (cargo profile, default release), CARGO_TARGET_DIR.
#
# It builds Herald, starts it with the demo data on a throwaway SQLite database and measures,
# first quietly and then during the flood (wrk -t1, so the server keeps a core of its own):
#   - the cached `/`: wrk -t1 -c8 for 5 s, its p99;
#   - a changed `/`: SAMPLES times, an update posted through the API and then `/` fetched
#     (the fetch renders the page anew), the p99 of the fetches.
# It prints both p99s per phase and their ratio (flood / quiet) against the target (at most
# 2), and exits non-zero only when something failed to run.
set -euo pipefail

SAMPLES="${SAMPLES:-200}"
FLOOD_CONNECTIONS="${FLOOD_CONNECTIONS:-300}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
TARGET_RATIO=2

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '%s\n' "$*" >&2; }
die() { log "flood.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need_tools_and_build wrk curl python3

TMP="$(mktemp -d -t herald-flood.XXXXXX)"
HERALD_PID=""
FLOOD_PID=""
cleanup() {
    [[ -z "$FLOOD_PID" ]] || kill "$FLOOD_PID" 2>/dev/null || true
    [[ -z "$HERALD_PID" ]] || kill "$HERALD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

start_demo_herald 18300
TOKEN="$(HERALD_DATABASE_URL="$DB" HERALD_LOG=error "$BIN" token create bench --role maintainer)"
WINDOW="$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/maintenances?state=in_progress" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"

cat >"$TMP/random.lua" <<'LUA'
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/maintenance/" .. math.random(1000, 2000000000))
end
LUA

# p99 of `/` right after a change (milliseconds): each fetch renders the page anew.
changed_p99() {
    local i
    for i in $(seq "$SAMPLES"); do
        curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d "{\"body\": \"Progress note $i.\", \"announce\": false}" \
            "$BASE/api/v1/maintenances/$WINDOW/updates"
        curl -fs -o /dev/null -w '%{time_total}\n' "$BASE/"
    done | python3 -c '
import sys
xs = sorted(float(x) * 1000 for x in sys.stdin)
print(round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 3))
'
}

log "== quiet"
quiet_cached="$(cached_p99)"
quiet_changed="$(changed_p99)"

log "== flood: $FLOOD_CONNECTIONS connections asking for random window ids"
wrk -t1 -c"$FLOOD_CONNECTIONS" -d600s -s "$TMP/random.lua" "$BASE/" >"$TMP/flood.txt" 2>&1 &
FLOOD_PID=$!
sleep 2
flood_cached="$(cached_p99)"
flood_changed="$(changed_p99)"
kill "$FLOOD_PID" 2>/dev/null || true
wait "$FLOOD_PID" 2>/dev/null || true
FLOOD_PID=""

python3 - "$quiet_cached" "$flood_cached" "$quiet_changed" "$flood_changed" "$TARGET_RATIO" <<'PY'
import sys
qc, fc, qr, fr, target = map(float, sys.argv[1:])
print(f"{'':22}{'quiet p99':>12}{'flood p99':>12}{'ratio':>8}")
for name, q, f in (("cached /", qc, fc), ("/ after a change", qr, fr)):
    ratio = f / q if q else float("inf")
    verdict = "PASS" if ratio <= target else "FAIL"
    print(f"{name:22}{q:>10.2f}ms{f:>10.2f}ms{ratio:>8.2f}  {verdict} (target <= {target:g})")
PY
