#!/usr/bin/env bash
# Start a real fail2ban-server for a kernel scenario, isolated from the host's fail2ban:
# configuration copied from /etc/fail2ban into $OA_TMP/f2b (host jails removed), socket, pid
# file, log and an in-memory database in $OA_TMP, one jail `web` on ports http,https watching
# an empty log. Run inside the origin namespace (the scenario's [run] section); the harness
# kills the daemon with the namespace. Ban with:
#   fail2ban-client -c "$OA_TMP/f2b" set web banip ADDR
# Usage: fail2ban-lab.sh 'ACTION LINE'   e.g.  'banaction = iptables-multiport'
set -euo pipefail
: "${OA_TMP:?run me from a scenario [run] section}"
conf="$OA_TMP/f2b"
rm -rf "$conf"
cp -a /etc/fail2ban "$conf"
rm -f "$conf"/jail.d/* "$conf"/fail2ban.d/*
cat >"$conf/fail2ban.local" <<EOT
[DEFAULT]
logtarget = $OA_TMP/fail2ban.log
socket = $OA_TMP/fail2ban.sock
pidfile = $OA_TMP/fail2ban.pid
dbfile = :memory:
EOT
: >"$OA_TMP/web.log"
cat >"$conf/jail.local" <<EOT
[DEFAULT]
backend = polling
[web]
enabled = true
filter = apache-auth
logpath = $OA_TMP/web.log
port = http,https
$1
EOT
fail2ban-client -c "$conf" start
