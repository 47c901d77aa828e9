#!/usr/bin/env bash
# Installs the Debian packages the project runs on, when they are missing:
# Java 17 and Maven (to assemble and run Apache Kafka), PostgreSQL 15, Node.js (front-end
# assets from npm); with --test also Chromium for the browser tests.
# Idempotent and quiet when everything is present.
set -euo pipefail

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v npm >/dev/null || need+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
# Browser tests drive Debian's Chromium (no browser download is possible here).
if [[ "${1:-}" == "--test" ]]; then
  command -v chromium >/dev/null || need+=(chromium)
fi

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps: missing ${need[*]}; install them with apt-get (needs root)" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's package starts its own cluster on 5432; the project runs its own under LPT_HOME.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | while read -r v c; do
      pg_ctlcluster "$v" "$c" stop 2>/dev/null || true
    done
  fi
fi
