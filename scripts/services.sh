#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis the tests use are up.
#   scripts/services.sh check     report only (exit 0 either way)
#   scripts/services.sh start     start them if they are installed but down
#   scripts/services.sh install   apt-get install them when missing (root, CI on a fresh machine), then start
# Prints one line per service; never fails the caller: tests skip loudly when a service is absent.
set -u
mode=${1:-start}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}

pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { command -v redis-cli >/dev/null 2>&1 && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null 2>&1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

start_pg() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    [ "$mode" = install ] && apt_install postgresql
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 30); do pg_up && return 0; sleep 0.5; done
  fi
  return 1
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    [ "$mode" = install ] && apt_install redis-server
  fi
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do redis_up && return 0; sleep 0.25; done
  fi
  return 1
}

if pg_up; then echo "postgresql: up"
elif [ "$mode" != check ] && start_pg; then echo "postgresql: started"
else echo "postgresql: NOT AVAILABLE"; fi

if redis_up; then echo "redis: up"
elif [ "$mode" != check ] && start_redis; then echo "redis: started"
else echo "redis: NOT AVAILABLE"; fi
exit 0
