#!/bin/sh
# Step: keep a copy of $DB as $DB.bak-vN, N its schema version now.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"
need_existing_db
clean_up_on_exit
backup_to "$v"
