#!/bin/sh
# Runs inside a chroot on an overlay of the host's root (see tests/tests/package.rs): installs
# the .deb, checks what a user of the package expects, purges it, and checks that nothing of
# the PAM configuration is left. Prints one "ok: …" line per check; stops at the first failure.
set -eu
deb=$1
ok() { echo "ok: $*"; }
cp -a /etc/pam.d /root/pam.d-before
pamtester login daemon acct_mgmt open_session close_session >/dev/null 2>&1 && ok "a login works before"

dpkg -i "$deb" >/root/dpkg.log 2>&1
grep -q '^account.*pam_forcelogout.so' /etc/pam.d/common-account && ok "module in common-account"
grep -q '^session.*pam_forcelogout.so' /etc/pam.d/common-session && ok "module in common-session"
[ "$(stat -c '%a %U %G' /var/lib/forcelogout)" = "750 root adm" ] && ok "state directory 0750 root:adm"

useradd -m flpkg
pamtester login flpkg acct_mgmt open_session close_session >/dev/null 2>&1 && ok "a throwaway user logs in through login"
events=$(sqlite3 /var/lib/forcelogout/forcelogout.db "SELECT group_concat(GroupName || ':' || Event, ' ') FROM LogoutEvents")
[ "$events" = "flpkg:online flpkg:removed flpkg:offline" ] && ok "online/removed/offline recorded"
[ "$(echo 'SELECT decode_days(62);' | sqlite3 -cmd '.load /usr/lib/sqlite3/forcelogout' :memory:)" = "Mon,Tue,Wed,Thu,Fri" ] \
    && ok "sqlite3 loads the extension from its installed path"
forcelogoutctl --help | grep -q 'Schedule forced logouts' && ok "forcelogoutctl --help"
zcat /usr/share/man/man8/forcelogoutctl.8.gz | grep -q '^\.TH forcelogoutctl 8' && ok "man page forcelogoutctl(8)"
zcat /usr/share/man/man8/pam_forcelogout.8.gz | grep -q '^\.TH PAM_FORCELOGOUT 8' && ok "man page pam_forcelogout(8)"
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify /lib/systemd/system/forcelogout.service && ok "systemd-analyze verify"
fi

dpkg --purge forcelogout >>/root/dpkg.log 2>&1
diff -r /root/pam.d-before /etc/pam.d && ok "/etc/pam.d byte-identical after purge"
[ ! -e /var/lib/forcelogout ] && ok "state removed by purge"
pamtester login flpkg acct_mgmt open_session close_session >/dev/null 2>&1 && ok "a login still works after purge"
