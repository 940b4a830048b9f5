#!/usr/bin/env bash
# Make sure the services the integration tests talk to are installed and running:
# PostgreSQL on 127.0.0.1:5432 (trust auth for local connections) and Redis on 127.0.0.1:6379.
# Installs the Debian packages when they are missing. Safe to run again and again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=""

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: $* missing and no apt-get here; install it by hand" >&2
    exit 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
pg_version() { ls /etc/postgresql | sort -V | tail -n 1; }
# Every service of a system under test keeps a pool of its own (up to 20 connections each), and
# the suites run one system at a time beside the tests' own connections: 100 is too few.
PG_MAX_CONNECTIONS=400
pg_max_connections() {
  psql -h 127.0.0.1 -U postgres -Atc "SHOW max_connections" 2>/dev/null || echo 0
}

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-services: installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
version=$(pg_version)
conf=/etc/postgresql/$version/main
if [ ! -f "$conf/conf.d/pizzeria-test.conf" ]; then
  $SUDO mkdir -p "$conf/conf.d"
  echo "max_connections = $PG_MAX_CONNECTIONS  # pizzeria-test" | $SUDO tee "$conf/conf.d/pizzeria-test.conf" >/dev/null
fi
if pg_up && [ "$(pg_max_connections)" -lt "$PG_MAX_CONNECTIONS" ]; then
  echo "ensure-services: restarting PostgreSQL for max_connections=$PG_MAX_CONNECTIONS"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main restart || $SUDO pg_ctlcluster "$version" main restart
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
if ! pg_up; then
  echo "ensure-services: starting PostgreSQL"
  # Local test clusters only: trust loopback connections so tests need no password.
  if ! grep -q "pizzeria-test" "$conf/pg_hba.conf"; then
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust # pizzeria-test\nhost all all ::1/128 trust # pizzeria-test\nlocal all all trust # pizzeria-test' "$conf/pg_hba.conf"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || $SUDO pg_ctlcluster "$version" main start
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
pg_up || { echo "ensure-services: PostgreSQL did not start" >&2; exit 1; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-services: installing Redis"
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ensure-services: starting Redis"
  mkdir -p /tmp/pizzeria-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/pizzeria-redis --logfile /tmp/pizzeria-redis/redis.log
  for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "ensure-services: Redis did not start" >&2; exit 1; }
echo "ensure-services: PostgreSQL and Redis are up"

# The Kafka tests run Apache Kafka from its Maven artifacts (tests/support/kafka.py): Java 17+ and Maven.
if ! command -v java >/dev/null 2>&1; then
  echo "ensure-services: installing Java (for the Kafka test broker)"
  apt_install --no-install-recommends openjdk-17-jre-headless
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "ensure-services: installing Maven (fetches the Kafka test broker)"
  apt_install --no-install-recommends maven
fi

# The MQTT tests start a Mosquitto broker of their own (tests/support/mosquitto.py); the package's
# own service is not needed (nor started here).
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "ensure-services: installing Mosquitto (the MQTT broker of the telemetry tests)"
  apt_install --no-install-recommends mosquitto
fi

# promtool checks the Prometheus configuration, alert rules and their unit tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "ensure-services: installing promtool (Debian's prometheus package)"
  apt_install --no-install-recommends prometheus
fi

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; no browser is
# ever downloaded by Playwright itself.
if [ ! -x /usr/bin/chromium ]; then
  echo "ensure-services: installing Chromium (for the browser tests)"
  apt_install chromium
fi
