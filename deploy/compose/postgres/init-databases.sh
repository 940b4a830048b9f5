#!/bin/sh
# Runs once, when the PostgreSQL container starts on an empty data directory: one database per
# service, `pizzeria_<service>`, owned by POSTGRES_USER. PIZZERIA_DATABASES lists the services.
set -eu

for service in ${PIZZERIA_DATABASES:?list the services that own a database}; do
  echo "init-databases: creating pizzeria_${service}"
  psql --variable ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
    --command "CREATE DATABASE \"pizzeria_${service}\" OWNER \"${POSTGRES_USER}\""
done
