#!/bin/bash
# docker-compose lab: make this server a GTID replica of `primary`.
# Runs once, from the MariaDB image's entrypoint, on a fresh datadir.
# LAB-ONLY CREDENTIALS.
set -euo pipefail
mariadb -uroot -p"${MARIADB_ROOT_PASSWORD}" <<'SQL'
SET GLOBAL gtid_slave_pos = '';
CHANGE MASTER TO
  MASTER_HOST = 'primary', MASTER_PORT = 3306,
  MASTER_USER = 'repl', MASTER_PASSWORD = 'repl-secret',
  MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos;
START SLAVE;
SQL
