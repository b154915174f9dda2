# shellcheck shell=sh
# Shared by the check, the steps and seed.sh, which set $here (this
# directory) and source it. Not run on its own.

die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# -init /dev/null: a ~/.sqliterc could switch the output mode (headers,
# columns) and break the parsing below. -bail: stop at the first error, so
# a failed statement is rolled back instead of a later COMMIT keeping the
# statements around it. .timeout: wait a while for a lock the app holds
# rather than fail at once with "database is locked".
sql() { sqlite3 -init /dev/null -batch -bail -cmd '.timeout 10000' "$@"; }

# Sets db: $DB in a form no tool misreads (sqlite3 takes "-x" as an option
# and "file:x" as a URI), and dir/base, to make temp files beside it (a
# rename is only atomic within one file system).
need_db() {
  [ -n "${DB-}" ] || { printf '%s: DB is not set (the database file)\n' "${0##*/}" >&2; exit 2; }
  # A relative DB is below the home stead manages ($STEAD_HOME, which
  # stead gives every check and step), else below the working directory.
  case $DB in /*) db=$DB ;; *) db=${STEAD_HOME:-.}/$DB ;; esac
  case $db in /*|./*) ;; *) db=./$db ;; esac
  dir=${db%/*}; dir=${dir:-/}; base=${db##*/}
}

# Sets m, the schema the config declares: the highest schema/N.sql. A gap
# below it is a broken config, not a version to stop at.
wanted_version() {
  m=0
  for f in "$here"/schema/*.sql; do
    n=${f##*/}; n=${n%.sql}
    case $n in ''|0*|*[!0-9]*) die "schema/${f##*/}: not named N.sql (N = 1, 2, ...)" ;; esac
    [ "$n" -le "$m" ] || m=$n
  done
  k=1
  while [ "$k" -le "$m" ]; do
    [ -f "$here/schema/$k.sql" ] || die "schema/$k.sql is missing (schema/$m.sql exists)"
    k=$((k + 1))
  done
}

# Sets v (user_version), free (free pages) and pages. Read-only: a check
# must not change what it checks.
read_db() {
  out=$(sql -readonly "$db" 'PRAGMA user_version; PRAGMA freelist_count; PRAGMA page_count;') ||
    die "cannot read $DB as an SQLite database"
  # shellcheck disable=SC2086 # split into its three numbers
  set -- $out
  [ $# -eq 3 ] || die "unexpected answer from sqlite3 about $DB: $out"
  case $1$2$3 in *[!0-9]*) die "unexpected answer from sqlite3 about $DB: $out" ;; esac
  v=$1 free=$2 pages=$3
}

# apply FILE FROM TO: applies schema/FROM+1.sql .. TO.sql to FILE, each in
# one transaction with its user_version, so a kill leaves a whole version.
apply() {
  k=$(($2 + 1))
  while [ "$k" -le "$3" ]; do
    change=$(cat "$here/schema/$k.sql") || die "cannot read schema/$k.sql"
    # The temp table makes the transaction a compare-and-swap: if another
    # run migrated since the version was read, the CHECK fails and nothing
    # is applied twice. The lone ";" ends a last statement left open.
    sql "$1" <<SQL || die "schema/$k.sql was not applied (sqlite3 says why above); its transaction was rolled back"
BEGIN IMMEDIATE;
CREATE TEMP TABLE stead_expected_version(v CHECK (v = $((k - 1))));
INSERT INTO stead_expected_version SELECT user_version FROM pragma_user_version;
$change
;
PRAGMA user_version = $k;
COMMIT;
SQL
    k=$((k + 1))
  done
}

# Removes this run's temp files (and the journal sqlite3 may leave beside
# one) however it ends, a signal too. Only SIGKILL can leave them, and never
# under a real name.
clean_up_on_exit() {
  trap 'for t in backup dump restore; do rm -f "$dir/.stead-$t.$$" "$dir/.stead-$t.$$-journal"; done' EXIT
  trap 'exit 1' HUP INT TERM
}

# backup_to N: keeps a copy of the database as $DB.bak-vN. sqlite3's .backup,
# not cp: the copy is consistent even if the app has the file open. Written
# under a temp name and renamed: a kill never leaves half a backup under the
# real name. An existing backup is kept if identical (.backup is
# deterministic, so a rerun after a crash passes) and refused otherwise: it
# may be the only copy of an older state.
backup_to() {
  bak=$db.bak-v$1 tmp=$dir/.stead-backup.$$
  # cd: .backup parses its argument itself; a name we choose needs no
  # quoting. journal_mode=DELETE: a copy of a WAL database would be WAL too,
  # and every read-only look at it would leave a -wal and -shm beside it.
  (CDPATH='' cd "$dir" && sql "./$base" ".backup ./.stead-backup.$$" &&
    sql "./.stead-backup.$$" 'PRAGMA journal_mode = DELETE;' >/dev/null) || die "cannot back up $DB"
  if [ -e "$bak" ]; then
    cmp -s "$tmp" "$bak" || die "$DB.bak-v$1 exists and differs from $DB; refusing to overwrite it (move it away first)"
    rm -f "$tmp"
    echo "$DB.bak-v$1 already holds this backup"
  else
    mv "$tmp" "$bak"
    echo "backed up $DB to $DB.bak-v$1"
  fi
}

# For a step: $DB must exist; sets db and v (its schema version now, not
# the one the check saw: this may be a rerun after a crash).
need_existing_db() {
  need_db
  [ -e "$db" ] || die "$DB does not exist"
  read_db
}

# For a step that migrates: also sets m, refuses a database newer than the
# config, and ends the step (success) when there is nothing to apply.
need_migration() {
  need_existing_db
  wanted_version
  [ "$v" -le "$m" ] || die "$DB is at schema version $v, newer than the config's $m; downgrade is not supported"
  [ "$v" -lt "$m" ] || { echo "$DB is already at schema version $m"; exit 0; }
}
