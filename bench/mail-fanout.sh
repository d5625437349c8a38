#!/usr/bin/env bash
# One announcement to 100,000 confirmed subscribers, through a local SMTP server that accepts
# everything (aiosmtpd, tests/ecosystem/smtp_sink.py), while wrk loads `/`.
#
#   bash bench/mail-fanout.sh
#
# Knobs (environment): SUBSCRIBERS (default 100000), PROFILE (cargo profile, default release),
# CARGO_TARGET_DIR.
#
# It builds Herald, starts it with the demo data on a throwaway SQLite database and mail to the
# sink, imports the subscribers (`herald subscribers import --confirmed`), then measures:
#   - `/` quietly: wrk -t1 -c8 for 10 s, its requests a second;
#   - the maintainer's click: the time of the POST that announces a window;
#   - `/` during the fan-out: wrk -t1 -c8 for 10 s, started right after the click;
#   - the time until the sink has accepted the last mail;
#   - Herald's peak memory (VmHWM).
# Targets: the last mail within 10 minutes; `/` during the fan-out at least 80 % of quiet;
# Herald's peak memory under 100 MiB.
set -euo pipefail

SUBSCRIBERS="${SUBSCRIBERS:-100000}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '%s\n' "$*" >&2; }
die() { log "mail-fanout.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need_tools_and_build wrk curl python3
PY="$(bash "$REPO/.ci/pytools")"

TMP="$(mktemp -d -t herald-mail.XXXXXX)"
HERALD_PID=""
SINK_PID=""
cleanup() {
    [[ -z "$HERALD_PID" ]] || kill "$HERALD_PID" 2>/dev/null || true
    [[ -z "$SINK_PID" ]] || kill "$SINK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

SMTP="$(free_port 18525)"
"$PY" "$REPO/tests/ecosystem/smtp_sink.py" "$SMTP" "$TMP/mail.jsonl" count >"$TMP/sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 50); do grep -q ready "$TMP/sink.log" 2>/dev/null && break; sleep 0.1; done

HERALD_EXTRA="HERALD_SMTP_URL=smtp://127.0.0.1:$SMTP?tls=none HERALD_MAIL_FROM=status@bench.example"
start_demo_herald 18600
log "== importing $SUBSCRIBERS subscribers"
python3 -c "
import sys
print('email,components,kinds,confirmed')
for n in range(int(sys.argv[1])):
    print(f's{n}@bench.example,,,true')
" "$SUBSCRIBERS" >"$TMP/subscribers.csv"
HERALD_DATABASE_URL="$DB" HERALD_LOG=error "$BIN" subscribers import "$TMP/subscribers.csv" --confirmed >&2
TOKEN="$(HERALD_DATABASE_URL="$DB" HERALD_LOG=error "$BIN" token create bench --role maintainer)"

page_rps() {
    wrk -t1 -c8 -d10s "$BASE/" | awk '/^Requests\/sec:/ { print $2 }'
}
log "== / quietly"
quiet_rps="$(page_rps)"

id="$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"title": "Database upgrade", "starts_at": "2031-06-01T20:00:00Z", "ends_at": "2031-06-01T22:00:00Z"}' \
    "$BASE/api/v1/maintenances" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
start="$(date +%s.%N)"
click="$(curl -fsS -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{}' "$BASE/api/v1/maintenances/$id/announce")"
log "== / during the fan-out"
during_rps="$(page_rps)"
log "== waiting for the last mail"
while :; do
    n="$(wc -l <"$TMP/mail.jsonl" 2>/dev/null || echo 0)"
    ((n >= SUBSCRIBERS)) && break
    now="$(date +%s)"
    (( ${now} - ${start%.*} < 1800 )) || die "only $n mails after 30 minutes"
    sleep 0.5
done
end="$(date +%s.%N)"
peak_kib="$(awk '/^VmHWM:/ { print $2 }' "/proc/$HERALD_PID/status")"

python3 - "$quiet_rps" "$during_rps" "$click" "$start" "$end" "$peak_kib" "$SUBSCRIBERS" <<'PY'
import sys
quiet, during, click, start, end, peak, n = sys.argv[1:]
quiet, during, click = float(quiet), float(during), float(click)
elapsed = float(end) - float(start)
peak_mib = int(peak) / 1024
ratio = during / quiet if quiet else 0
rows = [
    ("subscribers", n, "", True),
    ("last mail accepted after", f"{elapsed:.0f} s ({int(n) / elapsed:.0f} mails/s)", "< 600 s", elapsed < 600),
    ("maintainer's click", f"{click * 1000:.1f} ms", "", True),
    ("/ req/s quiet", f"{quiet:.0f}", "", True),
    ("/ req/s during fan-out", f"{during:.0f} ({ratio:.2f})", ">= 0.80 of quiet", ratio >= 0.8),
    ("Herald peak memory", f"{peak_mib:.1f} MiB", "< 100 MiB", peak_mib < 100),
]
for name, value, target, ok in rows:
    print(f"{name:28} {value:28} {target:18} {'ok' if ok else 'MISSED'}")
sys.exit(0 if all(r[3] for r in rows) else 1)
PY
