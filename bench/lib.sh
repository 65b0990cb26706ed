# Shell helpers shared by the benchmark scripts in bench/ (sourced, not run).

# server_address PID DATA_DIR: waits up to 30 s for the server started as PID with its output in
# DATA_DIR/server.out to print its address and write its JWT secret, and prints the address
# (host:port). Exits the script if the server dies or never prints it.
server_address() {
    local pid=$1 data=$2 addr=
    for _ in $(seq 1 300); do
        addr=$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$data/server.out" | head -n1)
        [ -n "$addr" ] && [ -s "$data/jwt-secret" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$data/server.err" >&2; echo "server exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "server did not print its address" >&2; exit 1; }
    echo "$addr"
}
