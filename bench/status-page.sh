#!/usr/bin/env bash
# Herald status-page benchmark: Herald's `/` against nginx serving the same bytes from a file.
#
#   bash bench/status-page.sh
#
# Knobs (environment): DURATION (wrk run length, default 10s), ROUNDS (default 3),
# WARMUP (default 2s), CONNECTIONS (default "64 256"), WRK_THREADS (default "1 2"),
# CARGO_TARGET_DIR (default ~/.cache/herald-target). See bench/README.md.
#
# It builds Herald in release mode (or the cargo profile PROFILE names), starts it on a
# throwaway SQLite database with the demo
# data, saves `/` as served to a client without Accept-Encoding, serves that file with nginx,
# and runs wrk against both, alternating, on 127.0.0.1 only. It prints medians per connection
# count, Herald's peak RSS and PASS/FAIL against the targets. It exits 0 whatever the numbers
# say, and non-zero only when something failed to run.
set -euo pipefail

DURATION="${DURATION:-10s}"
PROFILE="${PROFILE:-release}" # another cargo profile to compare, e.g. one with fat LTO
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-64 256}"
# nginx copies the file with sendfile(2) by default here, as real file-serving configs do;
# NGINX_SENDFILE=off makes it copy through user space like Herald does.
NGINX_SENDFILE="${NGINX_SENDFILE:-on}"
[[ "$NGINX_SENDFILE" == on || "$NGINX_SENDFILE" == off ]] || { echo "NGINX_SENDFILE must be on or off" >&2; exit 1; }
# wrk with one thread leaves the server a core of its own on a 2-core machine (the figure
# that counts); with two, wrk starves both servers alike and the ratio flatters Herald.
WRK_THREADS="${WRK_THREADS:-1 2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"

# Targets (checked at 256 connections).
TARGET_RATIO_T1=0.90  # wrk -t1: Herald req/s >= 90% of nginx req/s
TARGET_RATIO_T2=0.80  # wrk -t2: Herald req/s >= 80% of nginx req/s
TARGET_P99_MS=10      # Herald p99 < 10 ms
TARGET_ANON_MIB=14    # Herald anonymous memory under load <= 14 MiB (what a host pays; the rest
                      # of the RSS is the binary and libraries, clean pages the kernel may drop)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '%s\n' "$*" >&2; }
die() { log "status-page.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
for c in $CONNECTIONS; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be positive integers, not '$c'"
done
for t in $WRK_THREADS; do
    [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "WRK_THREADS must be positive integers, not '$t'"
done

# wrk duration ("10s", "2m", "1h", or bare seconds) -> whole seconds, for the time limits.
seconds_of() {
    local d="$1"
    case "$d" in
        *h) echo $(( ${d%h} * 3600 )) ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *s) echo $(( ${d%s} )) ;;
        *) echo $(( d )) ;;
    esac
}
[[ "$DURATION" =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION must look like 10s, 2m or 1h, not '$DURATION'"
[[ "$WARMUP" =~ ^[1-9][0-9]*[smh]?$ ]] || die "WARMUP must look like 2s, not '$WARMUP'"

# --- tools -----------------------------------------------------------------------------------

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

NGINX_BIN="$(command -v nginx || true)"
[[ -n "$NGINX_BIN" || ! -x /usr/sbin/nginx ]] || NGINX_BIN=/usr/sbin/nginx
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v cmp >/dev/null || missing+=(diffutils)
command -v timeout >/dev/null || missing+=(coreutils)
[[ -n "$NGINX_BIN" ]] || missing+=(nginx)
if ((${#missing[@]})); then
    log "== installing missing packages: ${missing[*]}"
    # Keep the package's init script from starting a system nginx on :80 (container without
    # systemd); only when no policy is in place already.
    policy_added=""
    if [[ " ${missing[*]} " == *" nginx "* && ! -e /usr/sbin/policy-rc.d ]]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        policy_added=1
    fi
    as_root apt-get update -q >&2
    pkgs=()
    for p in "${missing[@]}"; do [[ "$p" == nginx ]] || pkgs+=("$p"); done
    export DEBIAN_FRONTEND=noninteractive
    ((${#pkgs[@]} == 0)) || as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
    if [[ " ${missing[*]} " == *" nginx "* ]]; then
        as_root apt-get install -y -q --no-install-recommends nginx-light >&2 \
            || as_root apt-get install -y -q --no-install-recommends nginx >&2
    fi
    [[ -z "$policy_added" ]] || as_root rm -f /usr/sbin/policy-rc.d
    NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x "$NGINX_BIN" ]] || die "nginx did not install"
    command -v wrk >/dev/null || die "wrk did not install"
fi

# --- build -----------------------------------------------------------------------------------

log "== cargo build --profile $PROFILE (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO" && cargo build --profile "$PROFILE" >&2) || die "cargo build --profile $PROFILE failed"
HERALD_BIN="$CARGO_TARGET_DIR/$PROFILE/herald"
[[ -x "$HERALD_BIN" ]] || die "no binary at $HERALD_BIN"

# --- scratch space and cleanup ---------------------------------------------------------------

TMP="$(mktemp -d -t herald-bench.XXXXXX)"
HERALD_PID=""
NGINX_PID=""
WRK_PID=""

stop_pid() { # pid, seconds to wait after SIGTERM before SIGKILL
    local pid="$1" wait_s="$2" i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" 5
    stop_pid "$HERALD_PID" 10
    stop_pid "$NGINX_PID" 5
    if ((rc != 0)); then
        for f in "$TMP/herald.log" "$TMP/nginx/error.log"; do
            [[ -s "$f" ]] && { log "--- tail of ${f#"$TMP"/}:"; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "status-page.sh: interrupted"; exit 130' INT
trap 'log "status-page.sh: terminated"; exit 143' TERM


CURL=(curl --noproxy '*' -sS --max-time 5)

# --- Herald ----------------------------------------------------------------------------------

HERALD_PORT="$(free_port 18080)"
log "== starting Herald on 127.0.0.1:$HERALD_PORT (database in $TMP)"
(
    # Only the flags below configure it: no herald.toml from the caller's directory, no
    # HERALD_* settings from the caller's environment. The peak RSS target includes the
    # first admin's password hash (first_start_env).
    cd "$TMP"
    first_start_env
    exec "$HERALD_BIN" serve --demo \
        --listen "127.0.0.1:$HERALD_PORT" \
        --database-url "sqlite://$TMP/herald.db" \
        --drain-timeout 5s
) >"$TMP/herald.log" 2>&1 &
HERALD_PID=$!

ready=""
for ((i = 0; i < 300; i++)); do # 30 s
    kill -0 "$HERALD_PID" 2>/dev/null || die "Herald exited during start-up"
    code="$("${CURL[@]}" --max-time 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HERALD_PORT/readyz" 2>/dev/null || true)"
    if [[ "$code" == 200 ]]; then ready=1; break; fi
    sleep 0.1
done
[[ -n "$ready" ]] || die "Herald did not answer 200 on /readyz within 30 s"

# The page as a client without Accept-Encoding gets it: identity bytes.
mkdir -p "$TMP/www"
code="$("${CURL[@]}" -o "$TMP/www/index.html" -D "$TMP/herald-headers.txt" -w '%{http_code}' "http://127.0.0.1:$HERALD_PORT/")"
[[ "$code" == 200 ]] || die "Herald answered $code for /"
grep -qi '^content-encoding:' "$TMP/herald-headers.txt" && die "Herald compressed / although no Accept-Encoding was sent"
PAGE_BYTES="$(wc -c <"$TMP/www/index.html")"
((PAGE_BYTES > 0)) || die "Herald's / is empty"
CONTENT_TYPE="$(awk 'tolower($1) == "content-type:" { sub(/^[^:]*:[ \t]*/, ""); sub(/\r$/, ""); print; exit }' "$TMP/herald-headers.txt")"
CONTENT_TYPE="${CONTENT_TYPE:-text/html}"

# --- nginx -----------------------------------------------------------------------------------

NGINX_PORT="$(free_port $((HERALD_PORT + 1)))"
mkdir -p "$TMP/nginx"
# nginx's workers may run as another user when started by root: let them read the page.
chmod 755 "$TMP" "$TMP/www"
chmod 644 "$TMP/www/index.html"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;

events {
    worker_connections 1024;
}

http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    types {}
    sendfile $NGINX_SENDFILE;
    tcp_nopush $NGINX_SENDFILE;
    open_file_cache max=16;
    # Herald (hyper) keeps a connection open for any number of requests; so does nginx here.
    keepalive_requests 1000000;

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = / {
            default_type "$CONTENT_TYPE";
            root $TMP/www;
            try_files /index.html =404;
        }
        location / {
            return 404;
        }
    }
}
EOF

log "== starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX_BIN" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" -t >/dev/null 2>&1 \
    || { "$NGINX_BIN" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" -t || true; die "nginx rejects the generated configuration"; }
"$NGINX_BIN" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
ok=""
for ((i = 0; i < 100; i++)); do # 10 s
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during start-up"
    code="$("${CURL[@]}" --max-time 1 -o "$TMP/nginx-page.html" -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || true)"
    if [[ "$code" == 200 ]]; then ok=1; break; fi
    [[ "$code" == 000 || -z "$code" ]] || die "nginx answered $code for /"
    sleep 0.1
done
[[ -n "$ok" ]] || die "nginx did not serve / within 10 s"
cmp "$TMP/www/index.html" "$TMP/nginx-page.html" >&2 || die "nginx's / differs from Herald's"
log "   nginx's / is byte-for-byte Herald's ($PAGE_BYTES bytes, $CONTENT_TYPE)"

# --- wrk -------------------------------------------------------------------------------------

# "850.00us" / "1.23ms" / "2.01s" / "1.00m" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9.]+/)) exit 1
        n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1)
        if (u == "us") f = 0.001; else if (u == "ms") f = 1; else if (u == "s") f = 1000
        else if (u == "m") f = 60000; else if (u == "h") f = 3600000; else exit 1
        printf "%.3f\n", n * f
    }'
}

declare -A RPS P50 P99 ERRS NON2XX
WRK_LAST=""

# Herald's resident set now, in KiB: "total anonymous file-backed".
herald_rss_kb() {
    awk '/^VmRSS:/ { t = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
        END { print t + 0, a + 0, f + 0 }' "/proc/$HERALD_PID/status" 2>/dev/null || echo "0 0 0"
}
RSS_LOAD_KB=0
RSS_LOAD_ANON_KB=0
RSS_LOAD_FILE_KB=0

# run_wrk NAME PORT THREADS CONNECTIONS DURATION -> raw output in $WRK_LAST
run_wrk() {
    local name="$1" port="$2" threads="$3" conns="$4" dur="$5" limit rss
    limit=$(( $(seconds_of "$dur") + 30 ))
    WRK_LAST="$TMP/wrk-$name-t$threads-c$conns-$RANDOM.txt"
    # In the background and waited for, so that a signal to this script is handled at once.
    timeout --kill-after=5 "$limit" \
        wrk -t"$threads" -c"$conns" -d"$dur" --latency "http://127.0.0.1:$port/" >"$WRK_LAST" 2>&1 &
    WRK_PID=$!
    if [[ "$name" == herald ]]; then
        # Herald's RSS under load: sampled while wrk runs, the largest kept.
        local anon file
        while kill -0 "$WRK_PID" 2>/dev/null; do
            read -r rss anon file < <(herald_rss_kb)
            if ((rss > RSS_LOAD_KB)); then
                RSS_LOAD_KB=$rss RSS_LOAD_ANON_KB=$anon RSS_LOAD_FILE_KB=$file
            fi
            sleep 0.2
        done
    fi
    wait "$WRK_PID" || { cat "$WRK_LAST" >&2; die "wrk against $name ($conns connections) failed"; }
    WRK_PID=""
    [[ "$name" != herald ]] || kill -0 "$HERALD_PID" 2>/dev/null || die "Herald died under load"
    [[ "$name" != nginx ]] || kill -0 "$NGINX_PID" 2>/dev/null || die "nginx died under load"
}

# measure NAME PORT THREADS CONNECTIONS ROUND: one timed run, parsed and recorded
measure() {
    local name="$1" port="$2" threads="$3" conns="$4" round="$5" rps p50 p99 errs non2xx key
    run_wrk "$name" "$port" "$threads" "$conns" "$DURATION"
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$WRK_LAST")"
    p50="$(awk '$1 == "50%" { print $2 }' "$WRK_LAST")"
    p99="$(awk '$1 == "99%" { print $2 }' "$WRK_LAST")"
    [[ -n "$rps" && -n "$p50" && -n "$p99" ]] || { cat "$WRK_LAST" >&2; die "cannot parse wrk's output"; }
    p50="$(to_ms "$p50")" || die "unknown latency unit in '$p50'"
    p99="$(to_ms "$p99")" || die "unknown latency unit in '$p99'"
    errs="$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$WRK_LAST")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WRK_LAST")"
    key="$name,$threads,$conns"
    RPS[$key]+="$rps "
    P50[$key]+="$p50 "
    P99[$key]+="$p99 "
    ERRS[$key]=$(( ${ERRS[$key]:-0} + ${errs:-0} ))
    NON2XX[$key]=$(( ${NON2XX[$key]:-0} + ${non2xx:-0} ))
    log "$(printf '   round %d/%d  %-6s t=%s c=%-4s %10s req/s  p50 %8s ms  p99 %8s ms%s' \
        "$round" "$ROUNDS" "$name" "$threads" "$conns" "$rps" "$p50" "$p99" \
        "$( ((${errs:-0} + ${non2xx:-0})) && echo "  (socket errors ${errs:-0}, non-2xx ${non2xx:-0})")")"
}

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

for threads in $WRK_THREADS; do
    for conns in $CONNECTIONS; do
        log "== wrk -t$threads, $conns connections: warm-up ($WARMUP each), then $ROUNDS rounds of $DURATION per server"
        run_wrk herald "$HERALD_PORT" "$threads" "$conns" "$WARMUP"
        run_wrk nginx "$NGINX_PORT" "$threads" "$conns" "$WARMUP"
        for ((r = 1; r <= ROUNDS; r++)); do
            # Alternate who goes first so a drift in the machine's speed hits both alike.
            if ((r % 2)); then
                measure herald "$HERALD_PORT" "$threads" "$conns" "$r"
                measure nginx "$NGINX_PORT" "$threads" "$conns" "$r"
            else
                measure nginx "$NGINX_PORT" "$threads" "$conns" "$r"
                measure herald "$HERALD_PORT" "$threads" "$conns" "$r"
            fi
        done
    done
done

# Herald's peak resident set over the whole run.
hwm_kb="$(awk '/^VmHWM:/ { print $2 }' "/proc/$HERALD_PID/status")"
[[ -n "$hwm_kb" ]] || die "cannot read VmHWM of Herald (pid $HERALD_PID)"
RSS_MIB="$(awk -v k="$hwm_kb" 'BEGIN { printf "%.1f", k / 1024 }')"
RSS_LOAD_MIB="$(awk -v k="$RSS_LOAD_KB" 'BEGIN { printf "%.1f", k / 1024 }')"
file_kb="$(awk '/^Pss_File:/ { print $2 }' "/proc/$HERALD_PID/smaps_rollup" 2>/dev/null || echo 0)"
anon_kb="$(awk '/^Anonymous:/ { print $2 }' "/proc/$HERALD_PID/smaps_rollup" 2>/dev/null || echo 0)"

# Herald still serves the page it served at the start (re-rendered at most every 30 s; relative
# times such as "40 min" may change its bytes, which is no error).
"${CURL[@]}" -o "$TMP/herald-after.html" "http://127.0.0.1:$HERALD_PORT/" || die "Herald stopped answering /"

# --- report ----------------------------------------------------------------------------------

cpu_model="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
echo
echo "Herald status page vs nginx (same bytes from a file) — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}; wrk runs on the same machine"
echo "page: GET / identity, $PAGE_BYTES bytes; wrk -d$DURATION × $ROUNDS rounds per server, medians"
echo "herald: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$REPO" && git diff --quiet HEAD -- 2>/dev/null || echo ' (+ uncommitted changes)'), $PROFILE build"

bad_responses=0
declare -A RATIO
for threads in $WRK_THREADS; do
for conns in $CONNECTIONS; do
    echo
    echo "wrk -t$threads, $conns connections"
    printf '  %-8s %12s %10s %10s %15s\n' server 'req/s' 'p50 ms' 'p99 ms' 'errors/non-2xx'
    for name in herald nginx; do
        key="$name,$threads,$conns"
        # shellcheck disable=SC2086
        printf '  %-8s %12.0f %10.2f %10.2f %15s\n' "$name" \
            "$(median ${RPS[$key]})" "$(median ${P50[$key]})" "$(median ${P99[$key]})" \
            "${ERRS[$key]}/${NON2XX[$key]}"
        bad_responses=$((bad_responses + ${NON2XX[$key]}))
    done
    # shellcheck disable=SC2086
    RATIO[$threads,$conns]="$(awk -v h="$(median ${RPS[herald,$threads,$conns]})" -v n="$(median ${RPS[nginx,$threads,$conns]})" \
        'BEGIN { printf "%.2f", (n > 0 ? h / n : 0) }')"
    echo "  herald/nginx req/s: ${RATIO[$threads,$conns]}"
done
done
echo
echo "Herald RSS under load (largest sample): $RSS_LOAD_MIB MiB ($(awk -v a="$RSS_LOAD_ANON_KB" -v f="$RSS_LOAD_FILE_KB" 'BEGIN { printf "%.1f MiB anonymous, %.1f MiB file-backed", a / 1024, f / 1024 }'))"
echo "Herald peak RSS over the run, start-up included (VmHWM): $RSS_MIB MiB"
echo "  at the end: $(awk -v k="$anon_kb" 'BEGIN { printf "%.1f", k / 1024 }') MiB anonymous, $(awk -v k="$file_kb" 'BEGIN { printf "%.1f", k / 1024 }') MiB of the binary and libraries mapped"

verdict() { # condition-true? label value
    if [[ "$1" == 1 ]]; then echo "  PASS  $2: $3"; else echo "  FAIL  $2: $3"; fi
}
echo
echo "Targets"
if [[ " $CONNECTIONS " == *" 256 "* ]]; then
    for threads in $WRK_THREADS; do
        case "$threads" in
            1) target="$TARGET_RATIO_T1" ;;
            2) target="$TARGET_RATIO_T2" ;;
            *) continue ;;
        esac
        ratio="${RATIO[$threads,256]}"
        # shellcheck disable=SC2086
        p99="$(median ${P99[herald,$threads,256]})"
        verdict "$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (r >= t) }')" \
            "wrk -t$threads, 256 connections: Herald >= $(awk -v t="$target" 'BEGIN { printf "%.0f%%", t * 100 }') of nginx req/s" \
            "$(awk -v r="$ratio" 'BEGIN { printf "%.0f%%", r * 100 }')"
        verdict "$(awk -v p="$p99" -v t="$TARGET_P99_MS" 'BEGIN { print (p < t) }')" \
            "wrk -t$threads, 256 connections: Herald p99 < $TARGET_P99_MS ms" "$(printf '%.2f ms' "$p99")"
    done
else
    echo "  n/a   256 connections not measured (CONNECTIONS=\"$CONNECTIONS\")"
fi
verdict "$(awk -v a="$RSS_LOAD_ANON_KB" -v t="$TARGET_ANON_MIB" 'BEGIN { print (a / 1024 <= t) }')" \
    "Herald anonymous memory under load <= $TARGET_ANON_MIB MiB" \
    "$(awk -v a="$RSS_LOAD_ANON_KB" 'BEGIN { printf "%.1f MiB", a / 1024 }')"

# Error responses make the req/s meaningless: that is a failed run, not a measurement.
((bad_responses == 0)) || die "$bad_responses non-2xx/3xx responses during the runs"
