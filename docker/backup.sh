#!/bin/sh
# Take one backup now, through the same code path as the service (the runbook's forced backup).
# Usage: railway ssh --service backup -- /app/backup.sh   or   docker compose exec backup /app/backup.sh
set -eu
exec pgvigil backup-now "$@"
