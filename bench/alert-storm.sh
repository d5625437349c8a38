#!/usr/bin/env bash
# An alert storm: Alertmanager-shaped notifications for 50 alert groups, about 10,000 posts in
# 60 s (nearly all of them repeats of a group's last state), while wrk loads `/`.
#
#   bash bench/alert-storm.sh
#
# Knobs (environment): DURATION (seconds of storm, default 60), ALERT_GROUPS (default 50), RATE
# (posts a second, default 167), PROFILE (cargo profile, default release), CARGO_TARGET_DIR.
#
# It builds Herald, starts it with the demo data on a throwaway SQLite database, alerts
# published at once (HERALD_ALERT_PUBLISH=alertmanager) and a Discord webhook channel (to a
# closed local port: every announcement is a delivery row, whether or not it gets through),
# then measures:
#   - `/` quietly: wrk -t1 -c8 for 10 s, its requests a second;
#   - the storm: a second wrk -t1 posts the notifications at RATE (a Lua script, 4
#     connections each pausing between posts), its latency p99, while the first wrk loads `/`
#     again for the same 10 s in the storm's middle.
# Then it counts, in the database: incidents (exactly ALERT_GROUPS), their updates (one each: the
# opening, no repeat added one) and deliveries (one each: no repeat was announced).
# Targets: intake p99 under 50 ms; `/` during the storm at least 80 % of its quiet req/s.
set -euo pipefail

DURATION="${DURATION:-60}"
ALERT_GROUPS="${ALERT_GROUPS:-50}"
RATE="${RATE:-167}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
CONNECTIONS=4

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '%s\n' "$*" >&2; }
die() { log "alert-storm.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need_tools_and_build wrk curl python3

TMP="$(mktemp -d -t herald-storm.XXXXXX)"
HERALD_PID=""
STORM_PID=""
cleanup() {
    [[ -z "$STORM_PID" ]] || kill "$STORM_PID" 2>/dev/null || true
    [[ -z "$HERALD_PID" ]] || kill "$HERALD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# The demo, with alerts published at once and a channel that announces them.
closed="$(free_port 18490)"
HERALD_EXTRA="HERALD_ALERT_PUBLISH=alertmanager HERALD_ALLOW_PRIVATE_TARGETS=true"
HERALD_EXTRA+=" HERALD_DISCORD_WEBHOOK_URL=http://127.0.0.1:$closed/api/webhooks/1/storm"
start_demo_herald 18400
TOKEN="$(HERALD_DATABASE_URL="$DB" HERALD_LOG=error "$BIN" token create storm --role reporter)"
export TOKEN

cat >"$TMP/storm.lua" <<LUA
local groups = $ALERT_GROUPS
local pause = $((1000 * CONNECTIONS / RATE))
local counter = 0
local bodies = {}
for g = 1, groups do
  bodies[g] = string.format([[{"version":"4","groupKey":"{}:{alertname=\"Storm%d\"}","status":"firing","receiver":"herald","groupLabels":{"alertname":"Storm%d"},"commonLabels":{"alertname":"Storm%d","component":"api","severity":"warning"},"commonAnnotations":{"summary":"Storm alert %d"},"externalURL":"http://alertmanager.example","truncatedAlerts":0,"alerts":[{"status":"firing","labels":{"alertname":"Storm%d","component":"api","severity":"warning","instance":"api-%d"},"annotations":{"summary":"Storm alert %d"},"startsAt":"2026-12-06T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus.example","fingerprint":"fp%d"}]}]], g, g, g, g, g, g, g, g)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/alerts/alertmanager", nil, bodies[(counter % groups) + 1])
end
delay = function() return pause end
LUA

# Requests a second of `/` (wrk -t1 -c8 for 10 s).
page_rps() {
    wrk -t1 -c8 -d10s "$BASE/" | awk '/^Requests\/sec:/ { print $2 }'
}

log "== quiet: / for 10 s"
quiet_rps="$(page_rps)"

log "== storm: $ALERT_GROUPS groups, $RATE posts/s for ${DURATION}s, / loaded in its middle"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$TMP/storm.lua" "$BASE/" \
    >"$TMP/storm.txt" 2>&1 &
STORM_PID=$!
sleep "$(( (DURATION - 10) / 2 ))"
storm_rps="$(page_rps)"
wait "$STORM_PID" || die "the storm's wrk failed: $(cat "$TMP/storm.txt")"
STORM_PID=""

python3 - "$TMP/storm.txt" "${DB#sqlite://}" "$ALERT_GROUPS" "$quiet_rps" "$storm_rps" <<'PY'
import re, sqlite3, sys
storm, db, groups, quiet, during = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
text = open(storm).read()
posts = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", text, re.M)
v, unit = float(m.group(1)), m.group(2)
p99 = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
con = sqlite3.connect(db)
one = lambda q: con.execute(q).fetchone()[0]
incidents = one("SELECT COUNT(*) FROM incidents WHERE source = 'alertmanager'")
updates = one("SELECT COUNT(*) FROM incident_updates u JOIN incidents i ON i.id = u.incident_id WHERE i.source = 'alertmanager'")
deliveries = one("SELECT COUNT(*) FROM deliveries d JOIN incidents i ON i.id = d.incident_id WHERE i.source = 'alertmanager'")
ratio = during / quiet if quiet else 0
rows = [
    ("posts (non-2xx)", f"{posts} ({bad})", "", bad == 0),
    ("intake p99", f"{p99:.2f} ms", "< 50 ms", p99 < 50),
    ("incidents", str(incidents), f"= {groups}", incidents == groups),
    ("updates", str(updates), f"= {groups} (no repeat adds one)", updates == groups),
    ("deliveries", str(deliveries), f"= {groups} (no repeat announced)", deliveries == groups),
    ("/ req/s quiet", f"{quiet:.0f}", "", True),
    ("/ req/s in storm", f"{during:.0f} ({ratio:.2f})", ">= 0.80 of quiet", ratio >= 0.8),
]
for name, value, target, ok in rows:
    verdict = ("PASS" if ok else "FAIL") if target or name.startswith("posts") else ""
    print(f"{name:18}{value:>22}  {verdict:5} {target}")
PY
