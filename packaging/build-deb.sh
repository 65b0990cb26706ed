#!/usr/bin/env bash
# Builds the Debian package: target/debian/signalbox_<version>_<arch>.deb.
#
#   packaging/build-deb.sh [--deb-revision N]   (extra arguments go to `cargo deb`)
#
# One release compile produces both the shipped binary and the man page generator
# (examples/gen-man.rs), then the files that are generated from the code are written under
# target/release/packaging/ and `cargo deb --no-build` packs them, so nothing is compiled twice:
#   - etc/signalbox/signalbox.toml: `signalbox config template` (every key, its default and
#     what it is for) with data_dir set to /var/lib/signalbox, so it never drifts from the code;
#   - usr/share/man/man1/signalbox*.1: clap_mangen over the clap definitions in src/cli.rs;
#   - usr/share/doc/signalbox/copyright: packaging/debian/copyright.in plus the linked crates.
# Files shipped as they are in the tree are listed in [package.metadata.deb] assets in Cargo.toml,
# among them usr/share/doc/signalbox/signalbox-dashboard.json (packaging/grafana/, for Grafana).
# Installs cargo-deb (crates.io, --locked) only when it is missing.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
out="$target_dir/release/packaging"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb"
    cargo install cargo-deb --locked
fi

cargo build --release --bin signalbox --example gen-man

# The built binary, without the caller's SIGNALBOX_* variables (they would change `config check`).
sb() { env -i PATH="$PATH" "$target_dir/release/signalbox" "$@"; }

rm -rf "$out"
mkdir -p "$out/man"
"$target_dir/release/examples/gen-man" "$out/man"
# Debian policy: man pages are gzip-compressed, without a timestamp (-n) for reproducibility.
gzip -9n "$out"/man/*.1

{
    echo "# /etc/signalbox/signalbox.toml: read by signalbox.service (signalbox serve --config ...)."
    echo "# Owned root:signalbox, mode 0640: it may hold secrets. A conffile: your edits survive"
    echo "# upgrades. After a change: signalbox config check --config /etc/signalbox/signalbox.toml"
    echo "# and systemctl restart signalbox."
    echo "#"
    sb config template
} > "$out/signalbox.toml.tmp"
# The one packaged difference from the built-in defaults: the data dir systemd manages.
sed -i 's|^#data_dir = .*$|data_dir = "/var/lib/signalbox"|' "$out/signalbox.toml.tmp"
if ! grep -qx 'data_dir = "/var/lib/signalbox"' "$out/signalbox.toml.tmp"; then
    echo "build-deb: 'signalbox config template' has no '#data_dir = ' line to set" >&2
    exit 1
fi
mv "$out/signalbox.toml.tmp" "$out/signalbox.toml"
# The packaged file must be valid as shipped.
sb config check --config "$out/signalbox.toml" >/dev/null

# DEP-5 copyright file: signalbox's own license plus every crate linked into the binary.
python3 packaging/gen-copyright.py packaging/debian/copyright.in "$out/copyright"

cargo deb --no-build -p signalbox "$@"
