#!/bin/sh
# seed.sh DB VERSION: a test database at schema VERSION holding 3 notes,
# so a test can see rows survive a migration.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: seed.sh DB VERSION" >&2; exit 2; }
DB=$1
need_db
wanted_version
case $2 in ''|0*|*[!0-9]*) die "VERSION must be 1..$m, not $2" ;; esac
[ "$2" -le "$m" ] || die "VERSION must be 1..$m, not $2"
# noclobber makes "does it exist?" and "create it" one step.
(set -C; : >"$db") 2>/dev/null || die "$DB exists or cannot be created; refusing to overwrite it"
# From here on the file is ours: a failure removes it rather than leave a
# half-seeded database that looks real.
trap '[ "${seeded-}" = 1 ] || rm -f "$db"' EXIT
trap 'exit 1' HUP INT TERM
apply "$db" 0 "$2"
sql "$db" "INSERT INTO notes(body) VALUES ('first note'), ('second, with ''quotes'''), ('third');"
seeded=1
echo "seeded $DB at schema version $2 with 3 notes"
