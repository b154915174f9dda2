#!/bin/sh
# Step: migrate $DB in place to the declared schema.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"
need_db
[ -e "$db" ] || die "$DB does not exist"
wanted_version
# The version now, not the one the check saw: this may be a rerun after a
# crash that already applied some versions.
read_db
[ "$v" -le "$m" ] || die "$DB is at schema version $v, newer than the config's $m; downgrade is not supported"
[ "$v" -lt "$m" ] || { echo "$DB is already at schema version $m"; exit 0; }
apply "$db" "$v" "$m"
echo "migrated $DB from schema version $v to $m"
