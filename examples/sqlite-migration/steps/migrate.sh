#!/bin/sh
# Step: migrate $DB in place to the declared schema.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"
need_migration
apply "$db" "$v" "$m"
echo "migrated $DB from schema version $v to $m"
