# Shared by the benchmark scripts (sourced, after they define `die`).

# A loopback port nothing listens on, from $1 upwards.
free_port() {
    local p="$1"
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
        ((p < $1 + 200)) || die "no free port near $1"
    done
    echo "$p"
}

# The environment Herald is started with, in the subshell that execs it: none of the caller's
# HERALD_* settings, warnings only in the log, and a first start as deployed, where the first
# admin's password from the environment is hashed (argon2, 7 MiB) while start-up runs.
first_start_env() {
    while read -r v; do unset "$v"; done < <(compgen -e HERALD_ || true)
    export HERALD_LOG=warn
    export HERALD_ADMIN_USER=bench-admin
    HERALD_ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64)"
    export HERALD_ADMIN_PASSWORD
}

# Check for the tools a load script needs and build Herald ($PROFILE); sets BIN.
need_tools_and_build() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $*)"
    done
    log "== cargo build --profile $PROFILE"
    (cd "$REPO" && cargo build --profile "$PROFILE" >&2) || die "cargo build failed"
    BIN="$CARGO_TARGET_DIR/$PROFILE/herald"
}

# Start Herald with the demo data on a throwaway SQLite database in $TMP, on a free port from
# $1 up; sets PORT, BASE, DB and HERALD_PID, and waits until it is ready.
start_demo_herald() {
    PORT="$(free_port "$1")"
    BASE="http://127.0.0.1:$PORT"
    DB="sqlite://$TMP/herald.db"
    (
        first_start_env
        export HERALD_DATABASE_URL="$DB" HERALD_LISTEN="127.0.0.1:$PORT"
        # Settings the calling script chose (KEY=VALUE words in HERALD_EXTRA).
        for kv in ${HERALD_EXTRA:-}; do export "${kv?}"; done
        exec "$BIN" serve --demo
    ) 2>"$TMP/herald.log" &
    HERALD_PID=$!
    local _
    for _ in $(seq 100); do
        curl -fs "$BASE/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "Herald did not start (see $TMP/herald.log)"
}

# The p99 (milliseconds) of the cached `/` at $BASE: wrk -t1 -c8 for 5 s.
cached_p99() {
    wrk -t1 -c8 -d5s --latency "$BASE/" | python3 -c '
import re, sys
for line in sys.stdin:
    m = re.match(r"\s+99%\s+([\d.]+)(us|ms|s)", line)
    if m:
        v, unit = float(m.group(1)), m.group(2)
        print(round(v / 1000 if unit == "us" else v * 1000 if unit == "s" else v, 3))
'
}
