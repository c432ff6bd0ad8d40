#!/bin/bash
# docker-compose lab, FLAVOR=percona: make this server a GTID replica of
# `percona-primary`. Runs once, from the image's entrypoint, on a fresh datadir.
# caching_sha2_password over plain TCP needs the source's public key.
# LAB-ONLY CREDENTIALS.
set -euo pipefail
mysql -uroot -p"${MYSQL_ROOT_PASSWORD}" <<'SQL'
CHANGE REPLICATION SOURCE TO
  SOURCE_HOST = 'percona-primary', SOURCE_PORT = 3306,
  SOURCE_USER = 'repl', SOURCE_PASSWORD = 'repl-secret',
  SOURCE_CONNECT_RETRY = 1, SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1;
START REPLICA;
SQL
