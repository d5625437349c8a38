#!/usr/bin/env bash
# Herald while slow clients hold connections: `/` (wrk -t1 -c8, 5 s, p99) quietly and while
# CLIENTS connections (default 2,000, from eight loopback addresses so the per-client cap of
# 256 is not what stops them) each announce a megabyte of form body and send one byte every
# 2 s. Also reports how many of the slow connections the server had closed 40 s later (a
# request may take 30 s in all; its body may pause 10 s).
#
#   bash bench/slow-clients.sh
#
# Knobs (environment): CLIENTS, PROFILE (cargo profile, default release), CARGO_TARGET_DIR.
# Exits non-zero only when something failed to run.
set -euo pipefail

CLIENTS="${CLIENTS:-2000}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"
TARGET_RATIO=2

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '%s\n' "$*" >&2; }
die() { log "slow-clients.sh: error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
need_tools_and_build wrk curl python3

TMP="$(mktemp -d -t herald-slow.XXXXXX)"
HERALD_PID=""
SLOW_PID=""
cleanup() {
    [[ -z "$SLOW_PID" ]] || kill "$SLOW_PID" 2>/dev/null || true
    [[ -z "$HERALD_PID" ]] || kill "$HERALD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start_demo_herald 18400

log "== quiet"
quiet="$(cached_p99)"

log "== $CLIENTS slow clients"
python3 - "$PORT" "$CLIENTS" >"$TMP/slow.txt" <<'PY' &
import asyncio, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
head = (b"POST /admin/login HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\nn")
async def one(i, opened, closed):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port,
                                             local_addr=(f"127.0.1.{1 + i % 8}", 0))
    except OSError:
        return
    opened.append(i)
    w.write(head)
    try:
        while True:
            try:
                if not await asyncio.wait_for(r.read(4096), 2):
                    break  # the server closed it
            except asyncio.TimeoutError:
                w.write(b"x")  # a byte every 2 s
                await w.drain()
    except (ConnectionError, OSError):
        pass
    closed.append(i)
async def main():
    opened, closed = [], []
    tasks = [asyncio.create_task(one(i, opened, closed)) for i in range(n)]
    await asyncio.sleep(40)
    print(len(opened), len(closed), flush=True)
    for t in tasks:
        t.cancel()
asyncio.run(main())
PY
SLOW_PID=$!
sleep 2
during="$(cached_p99)"
wait "$SLOW_PID" || true
SLOW_PID=""
read -r opened closed <"$TMP/slow.txt" || { opened=0; closed=0; }

python3 - "$quiet" "$during" "$TARGET_RATIO" "$opened" "$closed" <<'PY'
import sys
q, d, target = map(float, sys.argv[1:4])
opened, closed = int(sys.argv[4]), int(sys.argv[5])
ratio = d / q if q else float("inf")
print(f"cached / p99: quiet {q:.2f} ms, with slow clients {d:.2f} ms, ratio {ratio:.2f}  "
      f"{'PASS' if ratio <= target else 'FAIL'} (target <= {target:g})")
print(f"slow connections: {opened} opened, {closed} closed by the server within 40 s  "
      f"{'PASS' if opened and closed == opened else 'FAIL'}")
PY
