#!/usr/bin/env bash
# Builds forcelogout_VERSION-1_ARCH.deb from the release build: stages the tree (multiarch PAM
# directory from dpkg-architecture), writes the control files, and runs dpkg-deb. Prints the
# path of the package. Usage: packaging/build-deb.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/deb}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
packaging/stage.sh "$stage" "/lib/$multiarch/security"

install -d -m 0755 "$stage/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
install -m 0644 packaging/deb/triggers "$stage/DEBIAN/"
echo /etc/forcelogout/forcelogout.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: forcelogout
Version: $version-1
Architecture: $arch
Maintainer: forcelogout developers <dev@forcelogout.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1 (>= 4.2), libpam0g (>= 1.4.0), libsqlite3-0 (>= 3.35.0), libdbus-1-3 (>= 1.9.14), libpam-runtime (>= 1.0.1-6), adduser, tzdata
Recommends: sqlite3
Section: admin
Priority: optional
Homepage: https://forcelogout.invalid/
Description: scheduled and immediate forced logouts, with an audited log
 Administrators schedule forced logouts of users and groups (once, daily
 or weekly at a time of day in a time zone) or log someone out now. Users
 get a countdown with the administrator's message; a kick disconnects
 them at the end, a warning lets them choose to keep working. A PAM module
 records every login and logout and refuses logins during a lockout; a
 daemon enforces the schedules. Every event lands in an append-only SQLite
 log, queryable from the sqlite3 shell with the included extension,
 followed live, and handed to subscriber hooks and syslog.
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"
mkdir -p "$out"
deb="$out/forcelogout_${version}-1_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
