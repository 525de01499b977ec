#!/usr/bin/env bash
# pgvigil benchmark: pgvigil against the plain shell pipeline, side by side, on this machine.
#
#   bench/run.sh                 # databases of ~0.5 GB and ~5 GB on disk, 3 repetitions each
#   bench/run.sh 0.25 1          # other sizes (GB)
#   BENCH_REPS=5 bench/run.sh    # more repetitions
#   BENCH_ONLY=rto bench/run.sh 5   # only recovery: restores and verification of one backup
#   BENCH_ONLY=backup bench/run.sh 0.5   # only the backup cases (one and two destinations)
#   BENCH_SHAPE=spread bench/run.sh  # the data in four tables of similar size (bench/gen_spread.sql)
#                                    # instead of one table holding 95 % of it (bench/gen.sql)
#
# It starts its own PostgreSQL (as the postgres user when run as root) and its own S3 server
# (the s3s-fs server the test suite uses), then reports medians (repetitions interleaved) of wall time, ratios and the peak
# RSS of the pgvigil process as a Markdown table in bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a SIZES <<< "${*:-0.5 5}"
REPS=${BENCH_REPS:-3}
ONLY=${BENCH_ONLY:-all}
case "${BENCH_SHAPE:-one}" in
  one) GEN=bench/gen.sql ;;
  spread) GEN=bench/gen_spread.sql ;;
  *) echo "BENCH_SHAPE: one or spread" >&2; exit 2 ;;
esac
OUT=bench/out
mkdir -p "$OUT"
RESULT="$OUT/results.md"

# --- the status page: a year of synthetic history rendered (bench/run.sh page runs only this) ------
page_bench() {
  cargo build --release --quiet -p pgvigil-core --example render_page
  echo
  echo "| history | render ms (median of 21) | page size |"
  echo "|---|---|---|"
  target/release/examples/render_page 365 "$OUT/status-page-year.html"
}
if [ "${1:-}" = page ]; then
  page_bench | tee "$OUT/page.md"
  exit 0
fi

# --- tools --------------------------------------------------------------------------------------
command -v aws >/dev/null || python3 -m pip install --quiet awscli
command -v age-keygen >/dev/null || { apt-get update -qq && apt-get install -y -qq age; }
command -v minisign >/dev/null || { apt-get update -qq && apt-get install -y -qq minisign; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --quiet --bin pgvigil-backup --bin pgvigil-verify --bin pgvigil --bin pgvigil-test-s3
BIN="$PWD/target/release"
PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -1)

WORK=$(mktemp -d /tmp/pgvigil-bench.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PGPORT=$(free_port)
S3PORT=$(free_port)
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "${S3PID:-}" ]; then kill "$S3PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -N >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -w -l "$WORK/pg.log" \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null
"$BIN/pgvigil-test-s3" "$WORK/s3" "$S3PORT" 2>"$WORK/s3.log" &
S3PID=$!
sleep 1

export AWS_ACCESS_KEY_ID=pgvigil-test-access AWS_SECRET_ACCESS_KEY=pgvigil-test-secret-KEY-0123456789
export AWS_DEFAULT_REGION=us-east-1 AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
S3URL="http://127.0.0.1:$S3PORT"
BUCKET=pgvigil-test
BUCKET2=pgvigil-second
mkdir -p "$WORK/s3/$BUCKET2"
PSQL=("$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres)
DUMP=("$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U postgres --no-owner --no-privileges)

pgvigil_env() { # prefix, level
  env -i PATH="$PATH" RUST_LOG=warn S3_BUCKET=$BUCKET S3_ENDPOINT="$S3URL" S3_REGION=us-east-1 \
    S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    BACKUP_PREFIX="$1" COMPRESSION_LEVEL="${2:-6}" VERIFY_RANDOM_RATE=0 \
    DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT/$DB" \
    VERIFY_DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres" "${@:3}"
}

# An age key pair for the encrypted cases: the backup gets the public key, verify the identity.
age-keygen -o "$WORK/age.txt" 2>/dev/null
AGEPUB=$(age-keygen -y "$WORK/age.txt")
AGEKEY="$WORK/age.txt"
# A signing key for the signed cases: with BACKUP_TRUSTED_KEYS a parallel restore reads the object once.
minisign -G -W -p "$WORK/sign.pub" -s "$WORK/sign.key" >/dev/null
SIGNPUB=$(sed -n 2p "$WORK/sign.pub")

export -f pgvigil_env
export PGPORT S3URL BUCKET BUCKET2

# Cases run interleaved, one repetition of each in turn, so that drifts in machine speed hit all of
# them alike. CASES holds names in order; CMD the shell command of each. Records medians of wall
# seconds and the maximum peak RSS (KiB).
declare -A CMD WALL RSS
CASES=()
case_add() { CASES+=("$1"); CMD[$1]=$2; }
run_cases() {
  declare -A walls rsss
  for _ in $(seq "$REPS"); do
    for name in "${CASES[@]}"; do
      sync
      /usr/bin/time -f "%e %M" -o "$WORK/time" bash -c "${CMD[$name]}" >/dev/null 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
      read -r w r < "$WORK/time"
      walls[$name]+="$w "; rsss[$name]+="$r "
    done
  done
  for name in "${CASES[@]}"; do
    WALL[$name]=$(tr ' ' '\n' <<< "${walls[$name]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    RSS[$name]=$(tr ' ' '\n' <<< "${rsss[$name]}" | grep . | sort -n | tail -1)
  done
  CASES=()
}

{
  echo "# pgvigil benchmark"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $REPS repetitions (medians), data shape: ${BENCH_SHAPE:-one} ($GEN)."
  echo
  echo "| DB on disk | dump size (SQL) | case | wall s | ratio | peak RSS MiB |"
  echo "|---|---|---|---|---|---|"
} > "$RESULT"

for size in "${SIZES[@]}"; do
  DB="bench_${size//./_}"
  export DB
  rows=$(python3 -c "print(int(float('$size') * 1e9 / 330))")
  echo "--- building $DB (~$size GB, $rows rows)" >&2
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  "${PSQL[@]}" -d "$DB" -v rows="$rows" -f "$GEN"
  "${PSQL[@]}" -d "$DB" -c "VACUUM ANALYZE"
  disk=$("${PSQL[@]}" -d "$DB" -Atc "SELECT pg_size_pretty(pg_database_size('$DB'))")
  sqlsize=$("${DUMP[@]}" -d "$DB" | wc -c | awk '{printf "%.0f MB", $1/1e6}')

  echo "--- measuring $DB" >&2
  if [ "$ONLY" = rto ]; then
    # One backup to restore, not measured.
    pgvigil_env "b6-$DB" 6 "$BIN/pgvigil-backup" --once
  else
  case_add limit "${DUMP[*]} -d $DB > /dev/null"
  case_add peer "${DUMP[*]} -d $DB | gzip -6 | aws --endpoint-url $S3URL s3 cp - s3://$BUCKET/peer/$DB.sql.gz --only-show-errors"
  case_add backup6 "pgvigil_env b6-$DB 6 $BIN/pgvigil-backup --once"
  case_add backup1 "pgvigil_env b1-$DB 1 $BIN/pgvigil-backup --once"
  case_add backup6age "pgvigil_env b6a-$DB 6 env BACKUP_ENCRYPTION_RECIPIENTS=$AGEPUB $BIN/pgvigil-backup --once"
  case_add backup6nolatest "pgvigil_env b6n-$DB 6 env BACKUP_LATEST_COPY=false $BIN/pgvigil-backup --once"
  # The same backup to two destinations at once: a second bucket on the same S3 server.
  case_add backup6two "pgvigil_env b6t-$DB 6 env SECONDARY_S3_BUCKET=$BUCKET2 SECONDARY_S3_ENDPOINT=$S3URL SECONDARY_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID SECONDARY_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY $BIN/pgvigil-backup --once"
  run_cases
  fi
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
  mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
  if [ "$ONLY" != backup ]; then
  # A signed backup of the same database, for the signed recovery cases (not measured).
  pgvigil_env "b6s-$DB" 6 env BACKUP_SIGNING_KEY_FILE="$WORK/sign.key" "$BIN/pgvigil-backup" --once
  # (No peer or level-1 object when only recovery is measured.)
  peersize=$(aws --endpoint-url "$S3URL" s3 ls "s3://$BUCKET/peer/$DB.sql.gz" 2>/dev/null | awk '{print $3}' || true)
  aws --endpoint-url "$S3URL" s3 cp "s3://$BUCKET/b6-$DB/backup_latest.sql.gz" "$WORK/latest.sql.gz" --only-show-errors
  objsize=$(stat -c %s "$WORK/latest.sql.gz")
  obj1size=$(aws --endpoint-url "$S3URL" s3 ls "s3://$BUCKET/b1-$DB/backup_latest.sql.gz" 2>/dev/null | awk '{print $3}' || true)
  case_add floor "${PSQL[*]} -d postgres -c 'DROP DATABASE IF EXISTS floor_restore' -c 'CREATE DATABASE floor_restore' && gunzip -c $WORK/latest.sql.gz | ${PSQL[*]} -d floor_restore -v ON_ERROR_STOP=1 --single-transaction"
  case_add verify "pgvigil_env b6-$DB 6 env VERIFY_JOBS=1 $BIN/pgvigil-verify --once"
  case_add verifyjobs "pgvigil_env b6-$DB 6 env VERIFY_JOBS=2 $BIN/pgvigil-verify --once"
  case_add verifysigned "pgvigil_env b6s-$DB 6 env VERIFY_JOBS=2 BACKUP_TRUSTED_KEYS=$SIGNPUB $BIN/pgvigil-verify --once"
  if [ "$ONLY" != rto ]; then
  case_add check "pgvigil_env b6-$DB 6 $BIN/pgvigil check --last 1"
  case_add checkdeep "pgvigil_env b6-$DB 6 $BIN/pgvigil check --deep --last 1"
  case_add verifyage "pgvigil_env b6a-$DB 6 env BACKUP_ENCRYPTION_IDENTITY_FILE=$AGEKEY $BIN/pgvigil-verify --once"
  fi
  # Recovery: the whole database, and one table of about 5 % of the data, each into a new database.
  fresh="${PSQL[*]} -d postgres -c 'DROP DATABASE IF EXISTS rto_restore' -c 'CREATE DATABASE rto_restore'"
  case_add restore "$fresh && pgvigil_env b6-$DB 6 $BIN/pgvigil restore --to postgresql://postgres@127.0.0.1:$PGPORT/rto_restore"
  case_add table "$fresh && pgvigil_env b6-$DB 6 $BIN/pgvigil restore --table public.invoices --to postgresql://postgres@127.0.0.1:$PGPORT/rto_restore"
  case_add restorejobs "${PSQL[*]} -d postgres -c 'DROP DATABASE IF EXISTS rto_jobs' && pgvigil_env b6-$DB 6 $BIN/pgvigil restore --create rto_jobs --jobs 2 --to postgresql://postgres@127.0.0.1:$PGPORT/postgres"
  case_add restoresigned "${PSQL[*]} -d postgres -c 'DROP DATABASE IF EXISTS rto_jobs' && pgvigil_env b6s-$DB 6 env BACKUP_TRUSTED_KEYS=$SIGNPUB $BIN/pgvigil restore --create rto_jobs --jobs 2 --to postgresql://postgres@127.0.0.1:$PGPORT/postgres"
  # The anchor users would pick instead: pg_restore -j 2 from a directory dump of the same database.
  rm -rf "$WORK/dirdump"
  "${DUMP[@]}" -Fd -j 2 -f "$WORK/dirdump" -d "$DB"
  case_add pgrestore "${PSQL[*]} -d postgres -c 'DROP DATABASE IF EXISTS pgr_restore' -c 'CREATE DATABASE pgr_restore' && $PGBIN/pg_restore -h 127.0.0.1 -p $PGPORT -U postgres -j 2 -d pgr_restore $WORK/dirdump"
  run_cases
  rm -rf "$WORK/dirdump"
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS rto_jobs" -c "DROP DATABASE IF EXISTS pgr_restore"
  # What the one-table restore read from storage (its own line), against the object's size.
  bash -c "$fresh" >/dev/null
  tableread=$(pgvigil_env "b6-$DB" 6 "$BIN/pgvigil" restore --table public.invoices --to "postgresql://postgres@127.0.0.1:$PGPORT/rto_restore" | awk '/^read / {print $2, $3}')
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS rto_restore"
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS floor_restore"
  rm -f "$WORK/latest.sql.gz"
  fi
  if [ "$ONLY" = backup ]; then
    aws --endpoint-url "$S3URL" s3 cp "s3://$BUCKET/b6-$DB/backup_latest.sql.gz" "$WORK/latest.sql.gz" --only-show-errors
    objsize=$(stat -c %s "$WORK/latest.sql.gz")
    peersize=$(aws --endpoint-url "$S3URL" s3 ls "s3://$BUCKET/peer/$DB.sql.gz" 2>/dev/null | awk '{print $3}' || true)
    obj1size=$(aws --endpoint-url "$S3URL" s3 ls "s3://$BUCKET/b1-$DB/backup_latest.sql.gz" 2>/dev/null | awk '{print $3}' || true)
    rm -f "$WORK/latest.sql.gz"
  fi
  if [ "$ONLY" != rto ]; then {
    echo "| $disk | $sqlsize | \`pg_dump > /dev/null\` (limit) | ${WALL[limit]} | 1.00 × limit | — |"
    echo "| | | \`pg_dump \| gzip -6 \| aws s3 cp -\` (peer, $(awk -v s="$peersize" 'BEGIN {printf "%.0f MB", s/1e6}') object) | ${WALL[peer]} | 1.00 × peer | — |"
    echo "| | | pgvigil backup, level 6 ($(awk -v s="$objsize" 'BEGIN {printf "%.0f MB", s/1e6}') object) | ${WALL[backup6]} | $(ratio "${WALL[backup6]}" "${WALL[peer]}") × peer | $(mib "${RSS[backup6]}") |"
    echo "| | | pgvigil backup, level 1 ($(awk -v s="$obj1size" 'BEGIN {printf "%.0f MB", s/1e6}') object) | ${WALL[backup1]} | $(ratio "${WALL[backup1]}" "${WALL[limit]}") × limit | $(mib "${RSS[backup1]}") |"
    echo "| | | pgvigil backup, level 6, without the \`backup_latest\` copy (\`BACKUP_LATEST_COPY=false\`) | ${WALL[backup6nolatest]} | $(ratio "${WALL[backup6nolatest]}" "${WALL[peer]}") × peer (the copy: $(awk -v a="${WALL[backup6]}" -v b="${WALL[backup6nolatest]}" 'BEGIN {printf "%.2f s", a - b}')) | $(mib "${RSS[backup6nolatest]}") |"
    echo "| | | pgvigil backup, level 6, encrypted with age | ${WALL[backup6age]} | $(ratio "${WALL[backup6age]}" "${WALL[peer]}") × peer ($(ratio "${WALL[backup6age]}" "${WALL[backup6]}") × plain) | $(mib "${RSS[backup6age]}") |"
    echo "| | | pgvigil backup, level 6, to two destinations (a second bucket) | ${WALL[backup6two]} | $(ratio "${WALL[backup6two]}" "${WALL[backup6]}") × one destination | $(mib "${RSS[backup6two]}") |"
  } >> "$RESULT"; else
    echo "| $disk | $sqlsize | pgvigil backup, level 6 ($(awk -v s="$objsize" 'BEGIN {printf "%.0f MB", s/1e6}') object; not measured) | — | — | — |" >> "$RESULT"
  fi
  [ "$ONLY" = backup ] || {
    echo "| | | \`gunzip -c \| psql\` (restore floor) | ${WALL[floor]} | 1.00 × floor | — |"
    echo "| | | \`pg_restore -j 2\` (directory dump of the same database) | ${WALL[pgrestore]} | $(ratio "${WALL[pgrestore]}" "${WALL[floor]}") × floor | — |"
    echo "| | | pgvigil verify, one stream (\`VERIFY_JOBS=1\`) | ${WALL[verify]} | $(ratio "${WALL[verify]}" "${WALL[floor]}") × floor | $(mib "${RSS[verify]}") |"
    echo "| | | pgvigil verify over 2 sessions (\`VERIFY_JOBS=2\`; unsigned: the object read twice) | ${WALL[verifyjobs]} | $(ratio "${WALL[verifyjobs]}" "${WALL[floor]}") × floor ($(ratio "${WALL[verifyjobs]}" "${WALL[pgrestore]}") × pg_restore -j 2) | $(mib "${RSS[verifyjobs]}") |"
    echo "| | | pgvigil verify over 2 sessions, signed (\`BACKUP_TRUSTED_KEYS\`: read once) | ${WALL[verifysigned]} | $(ratio "${WALL[verifysigned]}" "${WALL[floor]}") × floor ($(ratio "${WALL[verifysigned]}" "${WALL[pgrestore]}") × pg_restore -j 2) | $(mib "${RSS[verifysigned]}") |"
    [ "$ONLY" = rto ] || echo "| | | pgvigil verify, encrypted | ${WALL[verifyage]} | $(ratio "${WALL[verifyage]}" "${WALL[floor]}") × floor ($(ratio "${WALL[verifyage]}" "${WALL[verify]}") × plain) | $(mib "${RSS[verifyage]}") |"
    echo "| | | pgvigil restore (whole database, into a new one) | ${WALL[restore]} | $(ratio "${WALL[restore]}" "${WALL[floor]}") × floor | $(mib "${RSS[restore]}") |"
    echo "| | | pgvigil restore --create --jobs 2 (unsigned: read twice) | ${WALL[restorejobs]} | $(ratio "${WALL[restorejobs]}" "${WALL[floor]}") × floor ($(ratio "${WALL[restorejobs]}" "${WALL[pgrestore]}") × pg_restore -j 2) | $(mib "${RSS[restorejobs]}") |"
    echo "| | | pgvigil restore --create --jobs 2, signed (read once) | ${WALL[restoresigned]} | $(ratio "${WALL[restoresigned]}" "${WALL[floor]}") × floor ($(ratio "${WALL[restoresigned]}" "${WALL[pgrestore]}") × pg_restore -j 2) | $(mib "${RSS[restoresigned]}") |"
    echo "| | | pgvigil restore --table (~5 % of the data; read $tableread) | ${WALL[table]} | $(ratio "${WALL[table]}" "${WALL[restore]}") × full restore | $(mib "${RSS[table]}") |"
    [ "$ONLY" = rto ] || echo "| | | pgvigil check ($(awk -v s="$objsize" 'BEGIN {printf "%.0f MB", s/1e6}') object, size + SHA-256) | ${WALL[check]} | $(awk -v s="$objsize" -v t="${WALL[check]}" 'BEGIN { if (t > 0) printf "%.0f MB/s", s/1e6/t; else print "-" }') | $(mib "${RSS[check]}") |"
    [ "$ONLY" = rto ] || echo "| | | pgvigil check --deep (inflated) | ${WALL[checkdeep]} | $(awk -v s="$objsize" -v t="${WALL[checkdeep]}" 'BEGIN { if (t > 0) printf "%.0f MB/s", s/1e6/t; else print "-" }') | $(mib "${RSS[checkdeep]}") |"
  } >> "$RESULT"
  "${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"
  # Free the space of this size's objects before the next, larger one.
  aws --endpoint-url "$S3URL" s3 rm "s3://$BUCKET/" --recursive --only-show-errors
  aws --endpoint-url "$S3URL" s3 rm "s3://$BUCKET2/" --recursive --only-show-errors
done

{
  echo
  echo "Peak RSS is the maximum resident set of the measured process as reported by GNU time (pgvigil; its pg_dump/psql children are smaller)."
  [ "$ONLY" = rto ] || page_bench
} >> "$RESULT"
cat "$RESULT"
