#!/bin/sh
# The real servers Debian 12 does not ship, from Debian's own archive: a sid
# root filesystem (mmdebstrap) holding MySQL (with Group Replication),
# HAProxy 3.x and, unpacked beside them under /opt/mariadb, MariaDB 11.x
# (its packages conflict with MySQL's, its binaries do not). The lab runs
# them with chroot; they listen on 127.0.0.1 like everything else.
#
#   lab/sid-root.sh [DIR]     (default: $REMORA_SID_ROOT, else /var/cache/remora-lab/sid)
#
# Kept outside the clone, so a new clone on the same machine reuses it;
# rebuilt when it no longer answers `mysqld --version` (or is too old).
# Prints the versions it holds. sid moves: major versions are required
# (MySQL >= 8.4, HAProxy >= 3.0, MariaDB >= 11.4), not exact patches.
set -eu

root=${1:-${REMORA_SID_ROOT:-/var/cache/remora-lab/sid}}

# `VERSION MAJOR.MINOR` is at least MAJOR.MINOR.
at_least() {
    printf '%s\n%s\n' "$2" "$1" | sort -V -C
}

version_of() {
    chroot "$root" "$@" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1
}

answers() {
    [ -d "$root" ] || return 1
    mysql=$(version_of mysqld --version) || return 1
    haproxy=$(version_of haproxy -v) || return 1
    mariadb=$(version_of /opt/mariadb/usr/sbin/mariadbd --version) || return 1
    [ -n "$mysql" ] && [ -n "$haproxy" ] && [ -n "$mariadb" ] || return 1
    at_least "$mysql" 8.4 && at_least "$haproxy" 3.0 && at_least "$mariadb" 11.4
}

if answers; then
    echo "sid root $root: MySQL $mysql, HAProxy $haproxy, MariaDB $mariadb"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "the sid root $root needs building, as root (mmdebstrap, chroot): sudo $0 $root" >&2
    exit 1
fi
command -v mmdebstrap >/dev/null || {
    echo "installing mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
}

# The archive the host's own apt uses.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

echo "building the sid root in $root from $mirror (about a minute)"
rm -rf "$root.new"
mkdir -p "$(dirname "$root")"
# The archive's sid InRelease can be older than its Valid-Until.
# MariaDB's server and client cores are unpacked, not installed: their
# packages conflict with MySQL's, and only the binaries are needed.
mmdebstrap --quiet --variant=apt \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --include=mysql-server-core,mysql-client,haproxy,ca-certificates,libaio1t64,libnuma1,liburing2,libmariadb3,libedit2,libncurses6 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --customize-hook='chroot "$1" sh -c "cd /tmp && apt-get download -q mariadb-server-core mariadb-client-core >/dev/null && mkdir -p /opt/mariadb && for deb in ./*.deb; do dpkg-deb -x \$deb /opt/mariadb; done && rm -f ./*.deb"' \
    sid "$root.new" "$mirror"
rm -rf "$root"
mv "$root.new" "$root"
if ! answers; then
    echo "the sid root $root was built but does not answer as required:" \
        "MySQL ${mysql:-?} (>= 8.4), HAProxy ${haproxy:-?} (>= 3.0), MariaDB ${mariadb:-?} (>= 11.4)" >&2
    exit 1
fi
echo "sid root $root: MySQL $mysql, HAProxy $haproxy, MariaDB $mariadb"
