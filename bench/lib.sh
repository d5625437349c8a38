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
