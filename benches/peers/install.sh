#!/usr/bin/env bash
# install.sh - install the peers the `peers` benchmark compares against, from Debian packages:
# Redis (server, CLI, redis-benchmark) and PostgreSQL (server, psql, pgbench). Needs root.
# The packages' own services are not started (the benchmark starts private instances on
# 127.0.0.1 and stops them after).
set -euo pipefail
need=()
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || need+=(redis-server redis-tools)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v pgbench >/dev/null || need+=(postgresql postgresql-contrib)
command -v runuser >/dev/null || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then echo "peers: already installed"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "peers: need root to install ${need[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}"
echo "peers: installed ${need[*]}"
