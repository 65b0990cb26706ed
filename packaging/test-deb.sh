#!/usr/bin/env bash
# End-to-end test of the Debian package (issue 6). Needs root (debootstrap, chroot, mount).
#
#   packaging/test-deb.sh
#
# 1. builds the .deb (packaging/build-deb.sh: one release compile) and a second one with a
#    higher revision from the same binary, for the upgrade;
# 2. lintian: no errors;
# 3. systemd-analyze security --offline=true: exposure at most 3.0;
# 4. in a clean Debian bookworm chroot (debootstrap --variant=minbase, plus systemd so the
#    unit can be verified where it is installed; the debootstrap result is cached as a
#    tarball under $DEB_TEST_CACHE, default /var/cache/signalbox-test, and every run
#    unpacks a fresh copy):
#    - apt-get install ./signalbox_*.deb; account, file modes, enablement symlink;
#    - systemd-analyze verify on the installed unit prints nothing;
#    - the binary runs as the service user with the packaged config and answers /healthz;
#      secrets are generated on first start with mode 0600; a token can be minted;
#    - with the unit's one capability (CAP_NET_BIND_SERVICE, given by setpriv as systemd
#      would), it serves HTTPS on a port below 1024;
#    - edit the config, add an account, upgrade to the second package: the edit, the
#      account and the secrets survive, and the server starts again;
#    - apt-get remove keeps data, config and account; apt-get purge removes them and leaves
#      no file behind that was not there before the install.
# Environment: CARGO_TARGET_DIR (as for cargo), DEBIAN_MIRROR, DEB_TEST_CACHE.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
# DEBIAN_MIRROR overrides debootstrap's default mirror.
mirror=(${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"})
cache="${DEB_TEST_CACHE:-/var/cache/signalbox-test}"
# Packages added to minbase. Changing this list changes the cache key.
include="adduser,systemd"
base_tar="$cache/bookworm-minbase-${include//,/-}.tar"

start_all=$SECONDS
step_start=$SECONDS
step() { echo; echo "== [$((SECONDS - start_all))s] $*"; step_start=$SECONDS; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "   ok: $* ($((SECONDS - step_start))s)"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot, mount)"
for tool in lintian debootstrap curl systemd-analyze man python3; do
    command -v "$tool" >/dev/null || { "$repo/scripts/install-test-deps"; break; }
done

work="$(mktemp -d /var/tmp/signalbox-test.XXXXXX)"
root="$work/root"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if mountpoint -q "$root/proc"; then umount "$root/proc" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
step "build the package (release)"
"$repo/packaging/build-deb.sh" --quiet
version="$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="signalbox"))')"
arch="$(dpkg --print-architecture)"
built="$target_dir/debian/signalbox_${version}-1_${arch}.deb"
[ -f "$built" ] || fail "no $built"
deb="$work/$(basename "$built")"
cp "$built" "$deb"
# Same binary, higher version: the upgrade path (prerm upgrade, unpack, postinst configure).
cargo deb --no-build -p signalbox --quiet --deb-revision 1+upgradetest --fast -o "$work/"
deb2="$work/signalbox_${version}-1+upgradetest_${arch}.deb"
[ -f "$deb2" ] || fail "no $deb2"
ok "$(basename "$deb") ($(du -h "$deb" | cut -f1))"

# ---------------------------------------------------------------------------------------
step "lintian"
lintian --fail-on error "$deb" | tee "$work/lintian.txt" || fail "lintian reports errors"
echo "   lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors, $(grep -c '^W:' "$work/lintian.txt" || true) warnings"
ok lintian

# ---------------------------------------------------------------------------------------
step "systemd-analyze security --offline=true"
dpkg-deb -x "$deb" "$work/unpacked"
unit="$work/unpacked/usr/lib/systemd/system/signalbox.service"
[ -f "$unit" ] || fail "no unit in the package"
systemd-analyze security --offline=true --threshold=30 "$unit" > "$work/security.txt" ||
    { cat "$work/security.txt"; fail "exposure above 3.0"; }
score="$(sed -n 's/.*Overall exposure level for signalbox.service: \([0-9.]*\).*/\1/p' "$work/security.txt")"
[ -n "$score" ] || { cat "$work/security.txt"; fail "no exposure level printed"; }
python3 -c "import sys; sys.exit(0 if float('$score') <= 3.0 else 1)" || fail "exposure $score > 3.0"
echo "   exposure level: $score (at most 3.0)"
ok security

# ---------------------------------------------------------------------------------------
step "clean Debian chroot"
if [ ! -f "$base_tar" ]; then
    mkdir -p "$cache"
    rm -rf "$cache/build"
    debootstrap --variant=minbase --include="$include" bookworm "$cache/build" "${mirror[@]}" > "$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log"; fail "debootstrap"; }
    chroot "$cache/build" apt-get clean
    tar -C "$cache/build" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$cache/build"
    echo "   debootstrap done, cached in $base_tar"
fi
mkdir -p "$root"
tar -C "$root" -xf "$base_tar"
# Every path in the chroot before the package arrives, to compare with after the purge.
snapshot() {
    (cd "$root" && find . -xdev \
        -path ./proc -prune -o -path ./dev -prune -o -path ./sys -prune -o -path ./run -prune -o \
        -path ./tmp -prune -o -path ./var/tmp -prune -o -path ./var/log -prune -o \
        -path ./var/cache/apt -prune -o -path ./var/cache/debconf -prune -o \
        -path ./var/lib/apt -prune -o -path ./var/lib/dpkg -prune -o \
        -path ./etc/passwd- -prune -o -path ./etc/group- -prune -o \
        -path ./etc/shadow- -prune -o -path ./etc/gshadow- -prune -o \
        -print | sort)
}
snapshot > "$work/before.txt"
ok "chroot ready"

in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
as_service() {
    chroot --userspec=signalbox:signalbox "$root" \
        env -i PATH=/usr/bin:/bin HOME=/var/lib/signalbox LANG=C.UTF-8 "$@"
}
apt_in_root() {
    in_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" </dev/null > "$work/apt.log" 2>&1 ||
        { cat "$work/apt.log"; fail "apt-get $*"; }
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts the packaged binary as the service user with the packaged config, on loopback ports.
run_server() {
    local port turn_port
    port="$(free_port)"; turn_port="$(free_port)"
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    # chroot execs env, env execs signalbox: $! is the server itself.
    chroot --userspec=signalbox:signalbox "$root" env -i PATH=/usr/bin:/bin HOME=/var/lib/signalbox \
        /usr/bin/signalbox serve --config /etc/signalbox/signalbox.toml \
        --listen "127.0.0.1:$port" --turn-listen "127.0.0.1:$turn_port" --sfu-listen 127.0.0.1:0 \
        > "$work/server.out" 2> "$work/server.err" &
    server_pid=$!
    for _ in $(seq 1 100); do
        grep -q "listening on http://127.0.0.1:$port" "$work/server.out" && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err"; fail "server exited"; }
        sleep 0.1
    done
    grep -q "listening on http://127.0.0.1:$port" "$work/server.out" ||
        { cat "$work/server.out" "$work/server.err"; fail "no 'listening on' line"; }
    local body
    body="$(curl -fsS --max-time 5 "http://127.0.0.1:$port/healthz")" || fail "/healthz"
    echo "$body" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("status") != "ok")' ||
        fail "/healthz answered $body"
    echo "   /healthz on 127.0.0.1:$port: $body"
    [ "$(stat -c %u "/proc/$server_pid")" = "$(in_root id -u signalbox)" ] || fail "server does not run as signalbox"
}
stop_server() {
    kill -TERM "$server_pid"
    local rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
    [ "$rc" -eq 0 ] || { cat "$work/server.err"; fail "server exited $rc on SIGTERM"; }
}
# Names as the chroot resolves them (the host's /etc/passwd knows nothing of signalbox).
mode_owner() { in_root stat -c '%a %U:%G' "$1"; }

# ---------------------------------------------------------------------------------------
step "install"
cp "$deb" "$deb2" "$root/tmp/"
apt_in_root install "/tmp/$(basename "$deb")"
account="$(in_root getent passwd signalbox)" || fail "no signalbox account"
grep -q ':/var/lib/signalbox:/usr/sbin/nologin$' <<< "$account" || fail "account: $account"
[ "$(mode_owner /etc/signalbox/signalbox.toml)" = "640 root:signalbox" ] ||
    fail "config is $(mode_owner /etc/signalbox/signalbox.toml)"
grep -qx 'data_dir = "/var/lib/signalbox"' "$root/etc/signalbox/signalbox.toml" || fail "data_dir not set"
[ "$(mode_owner /var/lib/signalbox)" = "750 signalbox:signalbox" ] ||
    fail "data dir is $(mode_owner /var/lib/signalbox)"
[ -z "$(ls -A "$root/var/lib/signalbox")" ] || fail "the package put files (secrets?) in the data dir"
[ -L "$root/etc/systemd/system/multi-user.target.wants/signalbox.service" ] || fail "unit not enabled"
[ -f "$root/usr/share/man/man1/signalbox.1.gz" ] || fail "no man page"
grep -qx '/etc/signalbox/signalbox.toml' "$root/var/lib/dpkg/info/signalbox.conffiles" || fail "not a conffile"
ok "installed $(in_root dpkg-query -W -f='${Version}' signalbox)"

step "systemd-analyze verify (installed unit)"
out="$(MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" /usr/lib/systemd/system/signalbox.service 2>&1)" ||
    { echo "$out"; fail "systemd-analyze verify failed"; }
[ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify printed something"; }
ok "verify printed nothing"

step "run as the service user with the packaged config"
as_service /usr/bin/signalbox config check --config /etc/signalbox/signalbox.toml > /dev/null || fail "config check"
run_server
stop_server
for f in "$root"/var/lib/signalbox/*secret*; do
    [ -e "$f" ] || fail "no secret generated on first start"
    f="${f#"$root"}"
    [ "$(mode_owner "$f")" = "600 signalbox:signalbox" ] || fail "$f is $(mode_owner "$f")"
done
token="$(as_service /usr/bin/signalbox token --config /etc/signalbox/signalbox.toml --user alice --ttl 1h)"
[ "$(echo "$token" | tr -cd . | wc -c)" -eq 2 ] || fail "token: $token"
ok "secrets 0600 owned by signalbox; token minted"

# ---------------------------------------------------------------------------------------
step "a privileged port with the unit's one capability (the 443-only setup)"
# The unit grants CAP_NET_BIND_SERVICE as its only capability; setpriv gives the process the
# same (ambient, bounding set of one, service user), as systemd does, and the server binds a
# port below 1024 with HTTPS and TURN over TLS on it.
unit_file="$root/usr/lib/systemd/system/signalbox.service"
grep -qx 'AmbientCapabilities=CAP_NET_BIND_SERVICE' "$unit_file" || fail "unit: no ambient CAP_NET_BIND_SERVICE"
grep -qx 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' "$unit_file" || fail "unit: bounding set is not CAP_NET_BIND_SERVICE alone"
! grep -q '^PrivateUsers=yes' "$unit_file" || fail "unit: PrivateUsers=yes keeps the capability from binding"
low_port="$(python3 -c '
import socket
for p in range(443, 1024):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()')"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$root/tmp/tls.key" -out "$root/tmp/tls.crt" 2> /dev/null ||
    fail "openssl: test certificate"
chmod 644 "$root/tmp/tls.key" "$root/tmp/tls.crt"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/var/lib/signalbox \
    setpriv --reuid=signalbox --regid=signalbox --clear-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service \
    /usr/bin/signalbox serve --config /etc/signalbox/signalbox.toml --listen "127.0.0.1:$low_port" \
    --tls-cert /tmp/tls.crt --tls-key /tmp/tls.key --turn-listen "127.0.0.1:$(free_port)" \
    --turn-tls-listen "127.0.0.1:$(free_port)" --sfu-listen 127.0.0.1:0 \
    > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
    grep -q "listening on https://127.0.0.1:$low_port" "$work/server.out" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err"; fail "server exited on port $low_port"; }
    sleep 0.1
done
body="$(curl -fsS --max-time 5 --cacert "$root/tmp/tls.crt" --resolve "localhost:$low_port:127.0.0.1" \
    "https://localhost:$low_port/healthz")" || { cat "$work/server.err"; fail "/healthz over HTTPS on $low_port"; }
caps="$(sed -n 's/^CapEff:\s*//p' "/proc/$server_pid/status")"
[ "$caps" = "0000000000000400" ] || fail "effective capabilities $caps, not CAP_NET_BIND_SERVICE alone"
[ "$(stat -c %u "/proc/$server_pid")" = "$(in_root id -u signalbox)" ] || fail "server does not run as signalbox"
stop_server
rm -f "$root/tmp/tls.key" "$root/tmp/tls.crt"
ok "HTTPS on 127.0.0.1:$low_port as signalbox with CapEff $caps: $body"

# ---------------------------------------------------------------------------------------
step "upgrade keeps data and the edited config"
sed -i 's|^#log_format = .*|log_format = "json"|' "$root/etc/signalbox/signalbox.toml"
echo "# edited by test-deb.sh" >> "$root/etc/signalbox/signalbox.toml"
echo "correct horse battery" | as_service /usr/bin/signalbox user --config /etc/signalbox/signalbox.toml \
    add alice --password-stdin > /dev/null || fail "user add"
sums_before="$(cd "$root/var/lib/signalbox" && sha256sum ./*secret*)"
apt_in_root install "/tmp/$(basename "$deb2")"
[ "$(in_root dpkg-query -W -f='${Version}' signalbox)" = "${version}-1+upgradetest" ] || fail "not upgraded"
grep -qx '# edited by test-deb.sh' "$root/etc/signalbox/signalbox.toml" || fail "config edit lost"
grep -qx 'log_format = "json"' "$root/etc/signalbox/signalbox.toml" || fail "config edit lost"
[ "$(mode_owner /etc/signalbox/signalbox.toml)" = "640 root:signalbox" ] || fail "config mode after upgrade"
[ "$sums_before" = "$(cd "$root/var/lib/signalbox" && sha256sum ./*secret*)" ] || fail "secrets changed"
# Capture before grepping: `grep -q` exits at the first match, and with pipefail the
# writer's SIGPIPE would fail the pipeline at random.
users="$(as_service /usr/bin/signalbox user --config /etc/signalbox/signalbox.toml list)"
grep -q '^alice' <<< "$users" || fail "account lost in the upgrade"
effective="$(as_service /usr/bin/signalbox config check --config /etc/signalbox/signalbox.toml)"
grep -q '^log_format = "json"  # file /etc/signalbox/signalbox.toml' <<< "$effective" ||
    fail "edited config not in effect"
run_server
stop_server
ok "config edit, account and secrets survived the upgrade"

# ---------------------------------------------------------------------------------------
step "remove keeps data, purge leaves nothing"
apt_in_root remove signalbox
[ -f "$root/etc/signalbox/signalbox.toml" ] || fail "remove deleted the config"
[ -d "$root/var/lib/signalbox" ] || fail "remove deleted the data"
in_root getent passwd signalbox > /dev/null || fail "remove deleted the account"
apt_in_root purge signalbox
! in_root getent passwd signalbox > /dev/null || fail "purge kept the account"
! in_root getent group signalbox > /dev/null || fail "purge kept the group"
rm -f "$root/tmp/"*.deb
snapshot > "$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt" > "$work/leftovers.diff"; then
    cat "$work/leftovers.diff"; fail "purge left files behind (or removed others)"
fi
ok "purge removed data, config, account; no file left behind"

echo
echo "test-deb: all package checks passed in $((SECONDS - start_all))s (lintian: 0 errors; security exposure: $score)"
