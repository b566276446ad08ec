#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d).
# Two databases with their own owners: Airflow's metadata DB and skyops' provenance DB
# (skyops never touches Airflow's). Passwords come from Docker secrets, never from here.
set -eu
airflow_pw=$(cat /run/secrets/airflow_db_password)
skyops_pw=$(cat /run/secrets/skyops_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_pw="$airflow_pw" -v skyops_pw="$skyops_pw" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE skyops LOGIN PASSWORD :'skyops_pw';
CREATE DATABASE skyops_prov OWNER skyops;
SQL
