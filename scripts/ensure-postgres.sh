#!/usr/bin/env bash
# The store tests and `python -m evals.bench.store` start a throwaway PostgreSQL cluster with initdb and
# pg_ctl (playground/data/pg_cluster.py), from PATH or Debian's /usr/lib/postgresql/<version>/bin.
# Installs Debian's postgresql when they are missing and we may (root, or passwordless sudo);
# otherwise says what to do.
set -u
{ command -v pg_ctl && command -v initdb; } >/dev/null 2>&1 && exit 0
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "note: PostgreSQL is missing and cannot be installed without root; the PostgreSQL store tests will fail." >&2
  echo "      install it with: sudo apt-get install -y postgresql" >&2
  exit 0
fi
echo "installing Debian's postgresql for the store tests (once)…"
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  postgresql >/dev/null || echo "note: apt-get could not install postgresql; the PostgreSQL store tests will fail." >&2
exit 0
