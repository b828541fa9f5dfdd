#!/usr/bin/env bash
# Builds forcelogout in release mode and installs its files under STAGE, as a package lays them
# out. The package builders (build-deb.sh, build-rpm.sh) share it, so both ship the same files.
# Usage: packaging/stage.sh STAGE PAM_MODULE_DIR   (e.g. /lib/x86_64-linux-gnu/security)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$1
pam_dir=$2
cargo build --release --workspace --locked >&2
cargo build --release --manifest-path sql_ext/Cargo.toml --locked >&2

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
docs=$(mktemp -d)
target/release/forcelogoutctl-docs "$docs" >/dev/null

install -D -m 0755 target/release/forcelogoutctl "$stage/usr/bin/forcelogoutctl"
install -D -m 0755 target/release/forcelogoutd "$stage/usr/libexec/forcelogout/forcelogoutd"
install -D -m 0644 target/release/libpam_forcelogout.so "$stage$pam_dir/pam_forcelogout.so"
install -D -m 0644 sql_ext/target/release/libforcelogout.so "$stage/usr/lib/sqlite3/forcelogout.so"
strip --strip-unneeded "$stage/usr/bin/forcelogoutctl" "$stage/usr/libexec/forcelogout/forcelogoutd" \
    "$stage$pam_dir/pam_forcelogout.so" \
    "$stage/usr/lib/sqlite3/forcelogout.so"
install -D -m 0644 packaging/systemd/forcelogout.service "$stage/lib/systemd/system/forcelogout.service"
install -D -m 0644 packaging/tmpfiles/forcelogout.conf "$stage/usr/lib/tmpfiles.d/forcelogout.conf"
install -D -m 0644 packaging/pam-configs/forcelogout "$stage/usr/share/pam-configs/forcelogout"
install -D -m 0644 packaging/forcelogout.toml "$stage/etc/forcelogout/forcelogout.toml"
install -d -m 0755 "$stage/etc/forcelogout/hooks.d"
# Each page in the directory of its section: forcelogoutctl*(8), pam_forcelogout(8),
# forcelogout.toml(5), forcelogout-sql(7).
for page in "$docs"/man/*.[578] packaging/man/pam_forcelogout.8; do
    section=${page##*.}
    install -d -m 0755 "$stage/usr/share/man/man$section"
    gzip -9n < "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
done
install -D -m 0644 "$docs/completions/forcelogoutctl.bash" "$stage/usr/share/bash-completion/completions/forcelogoutctl"
install -D -m 0644 "$docs/completions/_forcelogoutctl" "$stage/usr/share/zsh/vendor-completions/_forcelogoutctl"
install -D -m 0644 "$docs/completions/forcelogoutctl.fish" "$stage/usr/share/fish/vendor_completions.d/forcelogoutctl.fish"
rm -rf "$docs"
doc="$stage/usr/share/doc/forcelogout"
install -D -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
# The reference, design and security documents the README links to, and the upstream changelog.
for page in docs/*.md; do
  install -D -m 0644 "$page" "$doc/$page"
  gzip -9n "$doc/$page"
done
install -D -m 0644 CHANGELOG.md "$doc/changelog"
gzip -9n "$doc/changelog"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: forcelogout

Files: *
Copyright: 2026 The forcelogout authors
License: MIT or Apache-2.0
 On Debian systems, the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
 Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 and associated documentation files, to deal in the software without restriction (MIT).
COPYRIGHT
printf 'forcelogout (%s-1) unstable; urgency=medium\n\n  * Package built from the source tree.\n\n -- forcelogout developers <dev@forcelogout.invalid>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/copyright" "$doc/changelog.Debian.gz"

