#!/bin/sh
# Step: rebuild $DB from a dump into a new file, migrate that, and swap it
# in; the old file stays as $DB.bak-vN. Rewrites every page, so it also
# drops free pages and whatever cruft the old file carried. .dump carries
# neither page_size nor journal_mode: the new file has the defaults.
set -eu
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"
need_migration
clean_up_on_exit
# Back up first and dump the backup, not the live file: the new file is
# then built from exactly the state that is kept.
backup_to "$v" >/dev/null
dump=$dir/.stead-dump.$$ new=$dir/.stead-restore.$$
sql -readonly "$db.bak-v$v" .dump >"$dump" || die "cannot dump $DB"
# .dump reports a read error as a comment, ends in ROLLBACK and exits 0:
# only a final COMMIT says the whole database got out.
[ "$(tail -n 1 "$dump")" = 'COMMIT;' ] || die ".dump of $DB did not complete; $DB is unchanged"
sql "$new" <"$dump" || die "cannot load the dump of $DB; $DB is unchanged"
# user_version lives in the file header, which .dump does not carry.
sql "$new" "PRAGMA user_version = $v;"
apply "$new" "$v" "$m"
[ "$(sql "$new" 'PRAGMA integrity_check;')" = ok ] ||
  die "the rebuilt database fails PRAGMA integrity_check; $DB is unchanged"
# The old file's -wal or hot -journal would be replayed into the new file
# and corrupt it; either one here means something still has it open.
if [ -e "$db-wal" ] || [ -e "$db-journal" ]; then
  die "$DB-wal or $DB-journal exists: is the app running? $DB is unchanged"
fi
mv "$new" "$db"
echo "rebuilt $DB at schema version $m from a dump; the old file is $DB.bak-v$v"
