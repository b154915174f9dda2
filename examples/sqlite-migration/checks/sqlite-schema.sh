#!/bin/sh
# The check: is $DB at the schema this example declares (the highest
# schema/N.sql)? Prints a report (docs/check-migrate.md) on stdout and
# nothing else. A database it cannot read is a failure (stderr, exit 1),
# never a report: stead must not choose steps from a guess.
set -eu
# Absolute: the steps' commands must name their scripts wherever they run.
here=$(CDPATH='' cd "$(dirname "$0")/.." && pwd)
. "$here/lib.sh"

# json_string S: S as a JSON string literal. Paths may hold \, " and
# control characters. LC_ALL=C: awk works on bytes, so UTF-8 passes through
# untouched. The added \n ends the last line, so a trailing newline in S
# shows up as an empty last record instead of vanishing.
json_string() {
  printf '%s\n' "$1" | LC_ALL=C awk '
    BEGIN { for (i = 1; i < 32; i++) esc[sprintf("%c", i)] = sprintf("\\u%04x", i)
            esc["\""] = "\\\""; esc["\\"] = "\\\\" }
    { if (NR > 1) s = s "\\n"
      for (i = 1; i <= length($0); i++) { c = substr($0, i, 1); s = s (c in esc ? esc[c] : c) } }
    END { printf "\"%s\"", s }'
}

# step ID TITLE SCRIPT [AFTER]: the command names the script only. The
# database reaches it through $DB: a command holding the path would change
# its fingerprint, and so stale a choice, when only the wording should.
step() {
  printf '{"id": "%s", "title": %s, "command": ["sh", %s]%s}' \
    "$1" "$(json_string "$2")" "$(json_string "$here/steps/$3")" "${4:+, \"after\": $4}"
}

need_db
wanted_version
# No file: nothing to migrate, the app creates it at the current schema.
[ -e "$db" ] || { echo '{"items": []}'; exit 0; }
read_db

items=
add() { items=${items:+$items,
  }$1; }
if [ "$v" -lt "$m" ]; then
  add "$(printf '{"id": "schema-behind", "severity": "error", "message": %s,
   "steps": [
     %s,
     %s,
     %s],
   "default": "migrate"}' \
    "$(json_string "$DB is at schema version $v; the config declares $m")" \
    "$(step backup 'back up the database' backup.sh)" \
    "$(step migrate 'migrate in place' migrate.sh '["backup"]')" \
    "$(step dump-restore 'dump and restore into a new file' dump-restore.sh)")"
elif [ "$v" -gt "$m" ]; then
  add "$(printf '{"id": "schema-ahead", "severity": "error", "message": %s}' \
    "$(json_string "$DB is at schema version $v, newer than the config's $m; downgrade is not supported")")"
fi
# An empty file has no pages, and so nothing to give back.
if [ "$free" -gt 0 ] && [ "$pages" -gt 0 ]; then
  add "$(printf '{"id": "vacuum", "severity": "recommendation", "message": %s,
   "steps": [%s]}' \
    "$(json_string "$DB has $free free pages of $pages ($((free * 100 / pages))%); VACUUM gives them back to the file system")" \
    "$(step vacuum 'vacuum the database' vacuum.sh)")"
fi
printf '{"items": [%s]}\n' "$items"
