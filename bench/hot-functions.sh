#!/usr/bin/env bash
# Regenerates bench/hot-functions.txt: the functions Herald runs to start and to serve its public
# pages, hottest first. build.rs hands the list to the linker (lld's --symbol-ordering-file),
# which lays these functions out together at the front of .text, so the code pages the kernel
# keeps resident are the ones Herald uses (bench/README.md, "hot code together").
#
#   bash bench/hot-functions.sh
#
# It builds Herald in release mode, runs it under valgrind's callgrind (every instruction
# counted, so a function run once at start-up is listed as surely as the request path) on a
# throwaway SQLite database with the demo data and a first admin from the environment,
# fetches every public page, feed and asset the pages link to in each encoding, then holds 256
# connections on / and a window page with wrk, and stops it with SIGTERM.
#
# Run it again after any change to Cargo.lock or rust-toolchain.toml (a crate's symbol names
# hash in its dependencies' versions and rustc's, so nearly every name changes; the list's
# fingerprint line records what it was made for, and bench/status-page.sh says when it no
# longer matches), and after large changes to the request path. Names the binary no longer
# has are skipped by the linker, so a stale list costs memory, never a failed build.
# Knob: CARGO_TARGET_DIR (default ~/.cache/herald-target).
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/bench/hot-functions.txt"

log() { printf '%s\n' "$*" >&2; }
die() { log "hot-functions.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "== installing missing packages: ${missing[*]}"
    as_root apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

log "== cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO" && cargo build --release >&2) || die "cargo build --release failed"
BIN="$CARGO_TARGET_DIR/release/herald"
[[ -x "$BIN" ]] || die "no binary at $BIN"
BIN="$(realpath "$BIN")" # as valgrind names it

TMP="$(mktemp -d -t herald-hot.XXXXXX)"
HERALD_PID=""
cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n "$HERALD_PID" ]] && kill -0 "$HERALD_PID" 2>/dev/null; then
        kill -KILL "$HERALD_PID" 2>/dev/null || true
    fi
    ((rc == 0)) || { [[ -s "$TMP/herald.log" ]] && tail -n 20 "$TMP/herald.log" >&2; }
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

PORT="$(free_port 18090)"
BASE="http://127.0.0.1:$PORT"
CURL=(curl --noproxy '*' -sS --max-time 30)

log "== starting Herald under callgrind on $BASE"
(
    cd "$TMP"
    first_start_env # as bench/status-page.sh starts it: start-up hashes the admin's password
    exec valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
        --compress-strings=no --compress-pos=no --demangle=no \
        "$BIN" serve --demo --listen "127.0.0.1:$PORT" \
        --database-url "sqlite://$TMP/herald.db" --drain-timeout 5s
) >"$TMP/herald.log" 2>&1 &
HERALD_PID=$!
ready=""
deadline=$((SECONDS + 120)) # everything runs ~50 times slower under callgrind
while ((SECONDS < deadline)); do
    kill -0 "$HERALD_PID" 2>/dev/null || die "Herald exited during start-up"
    code="$("${CURL[@]}" --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/readyz" 2>/dev/null || true)"
    if [[ "$code" == 200 ]]; then ready=1; break; fi
    sleep 0.2
done
[[ -n "$ready" ]] || die "Herald did not answer 200 on /readyz within 120 s"

log "== fetching the public pages, feeds and assets"
"${CURL[@]}" -o "$TMP/index.html" "$BASE/"
# Every same-site address the home page and the pages it links to mention, plus the API.
urls=(/ /history /feed.atom /calendar.ics /badge.svg /api /api/openapi.json /readyz /metrics
    /api/v2/summary.json /api/v2/status.json /api/v2/components.json
    /api/v2/scheduled-maintenances.json /api/v2/incidents.json /no/such/page)
mapfile -t linked < <(grep -o '\(href\|src\)="/[^"#]*"' "$TMP/index.html" | sed 's/^[a-z]*="//; s/"$//' | sort -u)
urls+=("${linked[@]}")
for u in "${linked[@]}"; do
    [[ "$u" == /maintenance/* || "$u" == /rollouts/* || "$u" == /history* ]] || continue
    "${CURL[@]}" -o "$TMP/page.html" "$BASE$u" || continue
    mapfile -t more < <(grep -o '\(href\|src\)="/[^"#]*"' "$TMP/page.html" | sed 's/^[a-z]*="//; s/"$//' | sort -u)
    urls+=("${more[@]}")
done
mapfile -t urls < <(printf '%s\n' "${urls[@]}" | sed 's/&amp;/\&/g' | sort -u)
window=""
for u in "${urls[@]}"; do
    [[ -z "$window" && "$u" == /maintenance/* ]] && window="$u"
    for enc in identity gzip br; do
        etag="$("${CURL[@]}" -o /dev/null -D - -H "accept-encoding: $enc" "$BASE$u" \
            | awk 'tolower($1) == "etag:" { sub(/\r$/, ""); print $2 }')"
        [[ -z "$etag" ]] || "${CURL[@]}" -o /dev/null -H "accept-encoding: $enc" \
            -H "if-none-match: $etag" "$BASE$u"
    done
    "${CURL[@]}" -o /dev/null -I "$BASE$u"
done
log "   ${#urls[@]} addresses"

log "== 256 connections on / and on ${window:-/}"
wrk -t1 -c256 -d5s "$BASE/" >/dev/null
wrk -t1 -c256 -d3s -H 'accept-encoding: br' "$BASE${window:-/}" >/dev/null

log "== stopping Herald"
kill -TERM "$HERALD_PID"
for ((i = 0; i < 600; i++)); do # 60 s to drain and write the profile
    kill -0 "$HERALD_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$HERALD_PID" 2>/dev/null && die "Herald did not stop within 60 s of SIGTERM"
wait "$HERALD_PID" || true
HERALD_PID=""
[[ -s "$TMP/callgrind.out" ]] || die "callgrind wrote no profile"

# Instructions per function of Herald's own binary (libc and ld.so are not ours to lay out).
# A cost line is "line count"; the one after "calls=" is a callee's inclusive cost. Code
# without a symbol (the PLT) shows as an address and is left out: only symbols can be ordered.
awk -v bin="$BIN" '
    /^ob=/ { ob = substr($0, 4); next }
    /^fn=/ { fn = substr($0, 4); sub(/\047[0-9]+$/, "", fn); next } # recursion depth suffix, as in f\0472
    /^calls=/ { callee = 1; next }
    /^[0-9]/ {
        if (callee) { callee = 0; next }
        if (ob == bin && fn !~ /^(0x|\()/) cost[fn] += $NF
    }
    END { for (f in cost) printf "%d %s\n", cost[f], f }
' "$TMP/callgrind.out" | LC_ALL=C sort -k1,1nr -k2 | awk '{ print $2 }' >"$TMP/names"
n="$(wc -l <"$TMP/names")"
((n > 1000)) || die "only $n functions found in the profile: is $BIN the binary that ran?"

{
    echo "# The functions Herald runs to start and to serve its public pages, hottest first:"
    echo "# lld lays them out together (build.rs). Made by bench/hot-functions.sh, $(date -u +%Y-%m-%d),"
    echo "# from $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo 'a work tree'). Do not edit by hand."
    echo "# fingerprint: $(hot_list_fingerprint) (of Cargo.lock and rust-toolchain.toml, whose changes rename functions)"
    cat "$TMP/names"
} >"$OUT"
log "== wrote $n functions to ${OUT#"$REPO"/}"
