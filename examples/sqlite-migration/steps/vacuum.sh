#!/bin/sh
# Step: give $DB's free pages back to the file system.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"
need_existing_db
sql "$db" 'VACUUM;' || die "VACUUM of $DB failed"
echo "vacuumed $DB: $free free pages given back"
