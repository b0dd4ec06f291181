#!/usr/bin/env bash
# Builds target/deb/pqvpn_VERSION_ARCH.deb with dpkg-deb: the `pqvpn` binary, the daemon's
# systemd unit (not enabled), the group `pqvpn` (created on install), /etc/pqvpn/profiles,
# the man page and shell completions generated from the CLI. Prints the package's path.
#   scripts/deb.sh            # builds the release binary first (shares target/)
#   PQVPN=path scripts/deb.sh # packages that binary instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
if [ -z "${PQVPN:-}" ]; then
    cargo build --release --locked -p pqvpn-cli >&2
    PQVPN=$target/release/pqvpn
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' desktop/cli/Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$target/deb/pqvpn_${version}_${arch}
rm -rf "$root"
install -D -m 755 "$PQVPN" "$root/usr/bin/pqvpn"
install -D -m 644 assets/pqvpn.service "$root/lib/systemd/system/pqvpn.service"
install -d -m 755 "$root/etc/pqvpn/profiles"
install -d -m 755 "$root/usr/share/man/man1"
"$PQVPN" man | gzip -9n >"$root/usr/share/man/man1/pqvpn.1.gz"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"
"$PQVPN" completions bash >"$root/usr/share/bash-completion/completions/pqvpn"
"$PQVPN" completions zsh >"$root/usr/share/zsh/vendor-completions/_pqvpn"
"$PQVPN" completions fish >"$root/usr/share/fish/vendor_completions.d/pqvpn.fish"
install -d -m 755 "$root/usr/share/doc/pqvpn"
install -m 644 README.md docs/control-protocol.md "$root/usr/share/doc/pqvpn/"
install -d "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: pqvpn
Version: $version
Architecture: $arch
Maintainer: pqvpn developers <pqvpn@users.noreply.github.com>
Section: net
Priority: optional
Depends: iproute2, passwd
Recommends: systemd
Installed-Size: $(du -sk "$root" | cut -f1)
Homepage: https://github.com/pqvpn/pqvpn
Description: post-quantum IPsec VPN client (hybrid IKEv2 with ML-KEM)
 pqvpn connects to IKEv2 gateways (strongSwan 6, Cloudflare, Cisco, Fortinet) with a
 classical key exchange plus ML-KEM-768, so recorded traffic stays safe against a future
 quantum computer. The daemon (pqvpn.service) keeps tunnels up and lets members of group
 pqvpn control them without root.
CONTROL
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    getent group pqvpn >/dev/null || groupadd --system pqvpn
    chmod 755 /etc/pqvpn /etc/pqvpn/profiles
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
POSTINST
cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && systemctl is-active --quiet pqvpn.service; then
    systemctl stop pqvpn.service || true
fi
PRERM
cat >"$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/pqvpn
    if getent group pqvpn >/dev/null; then groupdel pqvpn || true; fi
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$root" >&2
echo "$root.deb"
