#!/usr/bin/env bash
# Builds the Debian package pagewire_VERSION_ARCH.deb with dpkg-deb: the
# binary, the systemd unit, /etc/pagewire/pagewire.toml (a conffile), the man
# pages (docs/man/), shell completions, the nginx snippets and docs, and the
# maintainer scripts that create the service user.
#
#   scripts/build-deb.sh [OUT_DIR]        (default: target/debian)
#
# PAGEWIRE_DEB_BIN  the binary to package (default: `cargo build --release`'s)
#                   it is copied without its debug information
# Prints the path of the package.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-$repo/target/debian}"

bin="${PAGEWIRE_DEB_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --bin pagewire >&2
  bin="$repo/target/release/pagewire"
fi

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
arch="$(dpkg --print-architecture)"
mkdir -p "$out"
stage="$(mktemp -d "$out/stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/pagewire" \
  "$stage/usr/share/man/man1" "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d" \
  "$stage/usr/share/doc/pagewire/examples/nginx"

objcopy --strip-debug "$bin" "$stage/usr/bin/pagewire"
chmod 0755 "$stage/usr/bin/pagewire"
install -m 0644 packaging/pagewire.service "$stage/lib/systemd/system/pagewire.service"
install -m 0644 packaging/pagewire.toml "$stage/etc/pagewire/pagewire.toml"
for page in docs/man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
"$stage/usr/bin/pagewire" completions bash >"$stage/usr/share/bash-completion/completions/pagewire"
"$stage/usr/bin/pagewire" completions zsh >"$stage/usr/share/zsh/vendor-completions/_pagewire"
"$stage/usr/bin/pagewire" completions fish >"$stage/usr/share/fish/vendor_completions.d/pagewire.fish"
install -m 0644 packaging/nginx/*.conf "$stage/usr/share/doc/pagewire/examples/nginx/"
install -m 0644 packaging/Caddyfile "$stage/usr/share/doc/pagewire/examples/Caddyfile"
install -m 0644 README.md docs/CONFIG.md docs/SECURITY.md "$stage/usr/share/doc/pagewire/"
cat >"$stage/usr/share/doc/pagewire/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pagewire

Files: *
License: MIT or Apache-2.0
COPYRIGHT

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/pagewire/pagewire.toml >"$stage/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: pagewire
Version: $version
Architecture: $arch
Maintainer: pagewire maintainers <pagewire@localhost>
Installed-Size: $size
Depends: libc6, libgcc-s1, adduser
Section: net
Priority: optional
Description: serve web pages and keep a live WebSocket to each of them
 pagewire is one daemon that serves web pages and keeps a live, addressable
 WebSocket to each; an operator writes text into elements of live pages,
 calls JS functions on them or closes them, from a console, a CLI, HTTP or
 another page. This package runs it as a hardened systemd service
 (pagewire.service, user pagewire), not started until enabled.
CONTROL

deb="$out/pagewire_${version}_${arch}.deb"
# gzip: quick to build, and every dpkg reads it.
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >&2
echo "$deb"
