#!/usr/bin/env bash
# Builds the forcelogout package and installs it on this machine, the way its users do: the
# PAM module joins common-account and common-session (pam-auth-update), the daemon is enabled
# and started where systemd runs, and the store is created in /var/lib/forcelogout. Then it
# shows what is enforced. Undo with: apt-get purge forcelogout
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)

scripts/setup.sh
deb=$(packaging/build-deb.sh)
echo "== installing $deb"
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "./$deb"
echo
echo "== the PAM stacks"
grep -H pam_forcelogout /etc/pam.d/common-account /etc/pam.d/common-session
if [[ -d /run/systemd/system ]]; then
    echo
    echo "== the daemon"
    systemctl --no-pager status forcelogout.service | head -n 5
else
    echo
    echo "(no systemd here: start the daemon with '${sudo[*]:+${sudo[*]} }forcelogoutctl daemon &')"
fi
echo
echo "== schedules, live sessions, next logouts"
"${sudo[@]}" forcelogoutctl schedule list
"${sudo[@]}" forcelogoutctl sessions
"${sudo[@]}" forcelogoutctl next
