#!/usr/bin/env bash
# Installs what building and testing forcelogout needs on Debian 12, and nothing that is
# already there. Needs root (or sudo) only when a package is missing.
set -euo pipefail

packages=(
  build-essential pkg-config
  libsqlite3-dev sqlite3          # the system SQLite every crate links (SPEC §1)
  libpam0g-dev                    # PAM headers: libpam for the module, a probe module in a test
  pamtester openssh-server openssh-client   # real PAM and sshd tests
  util-linux procps bsdutils      # runuser, unshare, script; ps
  dpkg-dev binutils lintian rpm   # building and checking the .deb and the .rpm
  man-db                          # man -l: ctl/tests/man_pages.rs renders every man page
  systemd dbus libpam-systemd dbus-user-session   # a real systemd + logind, booted in namespaces by the systemd_* tests
  libdbus-1-dev                   # desktop notifications: the dbus crate links libdbus-1
  dbus xvfb dunst xdotool imagemagick python3-dbus   # the desktop test: a real bus, X, notification server
  postgresql-15 libssl-dev        # the fleet: a real PostgreSQL in tests; TLS (openssl-sys) for the client
  pgbouncer                       # the fleet through a transaction pooler: failover tests, the fleet_sim benchmark
  python3-gi                      # systemd_desktop: the notification server (python3-dbus) on a GLib main loop
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "setup: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (rustup, stable >= 1.82) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
