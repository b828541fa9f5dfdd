#!/usr/bin/env bash
# A look at forcelogout before installing it. On a private sshd on 127.0.0.1, with a private
# PAM stack and a throwaway user that exist only in a private mount namespace (nothing of the
# host's configuration is touched), it logs the user in over ssh, issues a logout ten seconds
# ahead, and shows the countdown and the kick as the user sees them, then the events table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run it as root (it needs a private mount namespace); nothing on the host changes" >&2
    exit 1
fi
scripts/setup.sh
cargo build --release --workspace --locked
ctl=$PWD/target/release/forcelogoutctl
module=$PWD/target/release/libpam_forcelogout.so

t=$(mktemp -d)
chmod 0755 "$t"
server=""
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null
    [[ -f $t/daemon.pid ]] && kill "$(cat "$t/daemon.pid")" 2>/dev/null
    rm -rf "$t"
}
trap cleanup EXIT

user=demo uid=4343
mkdir -p "$t/home/.ssh" "$t/state" "$t/pam.d"
cp /etc/passwd /etc/group /etc/shadow "$t/"
echo "$user:x:$uid:$uid:forcelogout demo:$t/home:/bin/bash" >> "$t/passwd"
echo "$user:x:$uid:" >> "$t/group"
echo "$user:*:19000:0:99999:7:::" >> "$t/shadow"
db=$t/state/forcelogout.db
cat > "$t/pam.d/sshd" <<PAM
auth required pam_permit.so
account required $module db=$db config=$t/forcelogout.toml
account required pam_permit.so
session required $module db=$db config=$t/forcelogout.toml
session required pam_permit.so
PAM
ssh-keygen -q -t ed25519 -N '' -f "$t/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$t/client_key"
cp "$t/client_key.pub" "$t/home/.ssh/authorized_keys"
chown -R "$uid:$uid" "$t/home"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$t/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $t/hostkey
PidFile $t/sshd.pid
UsePAM yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $t/home/.ssh/authorized_keys
StrictModes no
PrintMotd no
CONF
printf 'socket = "%s/socket"\n' "$t" > "$t/forcelogout.toml"
unshare -m --propagation private sh -ec "
    for f in passwd group shadow; do mount --bind $t/\$f /etc/\$f; done
    mount --bind $t/pam.d /etc/pam.d
    mount -t tmpfs tmpfs /run; mkdir -m 0755 /run/sshd
    FORCELOGOUT_CONFIG=$t/forcelogout.toml $ctl --db $db daemon 2>$t/daemon.log & echo \$! > $t/daemon.pid
    exec /usr/sbin/sshd -D -e -f $t/sshd_config 2>$t/sshd.log" &
server=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

echo "== $user logs in over ssh (127.0.0.1:$port)"
ssh -tt -p "$port" -i "$t/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR "$user@127.0.0.1" "echo \"logged in as \$(id -un); working...\"; sleep 120" &
client=$!
sleep 2
echo "== the administrator: forcelogoutctl logout $user --kick --in 10s"
FORCELOGOUT_CONFIG=$t/forcelogout.toml "$ctl" --db "$db" logout "$user" --kick --in 10s \
    --message "The demo lab closes now. Save your work." >/dev/null
wait "$client" || true
sleep 1
echo
echo "== forcelogoutctl events"
"$ctl" --db "$db" events
