#!/usr/bin/env bash
# Builds forcelogout in release mode and shows what it would enforce on this host: the
# current schedules and the next logouts from the default store (read-only: nothing is
# created or changed). Installation as a package arrives with the packaging issue.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked
ctl=target/release/forcelogoutctl
echo "built: $ctl"
echo
echo "== schedules ($ctl schedule list)"
"$ctl" schedule list
echo
echo "== next logouts ($ctl next)"
"$ctl" next
