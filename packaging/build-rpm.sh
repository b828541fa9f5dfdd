#!/usr/bin/env bash
# Builds forcelogout-VERSION-1.ARCH.rpm with the same files as the .deb, in Fedora's places
# (the PAM module in /usr/lib64/security, the unit in /usr/lib/systemd/system). Prints its path.
# Usage: packaging/build-rpm.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/rpm}")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
stage=$(mktemp -d)
top=$(mktemp -d)
trap 'rm -rf "$stage" "$top"' EXIT
packaging/stage.sh "$stage" /usr/lib64/security
mkdir -p "$stage/usr/lib"
mv "$stage/lib/systemd" "$stage/usr/lib/systemd"
rmdir "$stage/lib"
rpmbuild -bb --quiet \
    --define "_topdir $top" --define "stage $stage" --define "version $version" \
    --define "_rpmdir $out" --define "_build_id_links none" \
    packaging/rpm/forcelogout.spec >&2
find "$out" -name "forcelogout-$version-1.*.rpm" | head -n1
