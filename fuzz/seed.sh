#!/usr/bin/env bash
# Makes the seed corpus, fuzz/corpus/<target>/seed-*, from the project's own
# fixtures, docs and examples, and from files a real stead run writes (the
# example config applied in a throw-away home). Run from anywhere; rerun
# after a format changes, and commit the result (keep it small: < 200 KB).
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
corpus="$fuzz/corpus"
fixture="$root/cli/tests/fixtures/v0.1.0"

rm -f "$corpus"/*/seed-*
for t in manifest state_record lock_file lock_config journal shared_record saved_plan seal; do
  mkdir -p "$corpus/$t"
done
seed() { cp "$2" "$corpus/$1/seed-$3"; }
seed_text() { printf '%s' "$2" >"$corpus/$1/seed-$3"; }

# Manifests: the example, the fixture's, and every TOML block of the manual.
seed manifest "$root/examples/dotfiles/stead.toml" example
seed manifest "$fixture/killed-apply/config/stead.toml" killed-apply
awk -v out="$corpus/manifest/seed-manual-" '
  /^```toml/ { n++; f = out n; printf "" > f; inblock = 1; next }
  /^```/ && inblock { inblock = 0; close(f); next }
  inblock { print >> f }
' "$root/docs/manifest.md"

# Files of a real run: the example applied in a throw-away home.
(cd "$root" && cargo build -q -p stead)
stead="$root/target/debug/stead"
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
"$stead" --home "$home" --config "$root/examples/dotfiles" plan --out "$home/plan.json" >/dev/null
seed saved_plan "$home/plan.json" example-fresh
"$stead" --home "$home" --config "$root/examples/dotfiles" apply --yes >/dev/null
echo '# changed' >>"$home/.bashrc"
"$stead" --home "$home" --config "$root/examples/dotfiles" plan --out "$home/plan2.json" >/dev/null
seed saved_plan "$home/plan2.json" example-drifted
seed state_record "$home/.stead/state.json" example
[ -s "$home/.stead/journal.jsonl" ] && seed journal "$home/.stead/journal.jsonl" example

# A converged seal: a no-op apply with the clock moved past the racy window.
sealed=$(mktemp -d)
mkdir -p "$sealed/config" "$sealed/home/d"
printf '[file.a]\npath = "~/d/a"\ncontent = "a\\n"\n\n[symlink.l]\npath = "~/l"\ntarget = "~/d/a"\n' >"$sealed/config/stead.toml"
"$stead" --home "$sealed/home" --config "$sealed/config" apply --yes >/dev/null
STEAD_NOW=$(date -u -d '+10 seconds' +%Y-%m-%dT%H:%M:%SZ) \
  "$stead" --home "$sealed/home" --config "$sealed/config" apply --yes >/dev/null
seed seal "$sealed/home/.stead/converged.seal" small
# ... and its body alone, which the target puts back between the magic
# line and a checksum that holds.
tail -c +22 "$corpus/seal/seed-small" | head -c -32 >"$corpus/seal/seed-body"
rm -rf "$sealed"

# The previous version's files (cli/tests/fixtures/v0.1.0).
seed state_record "$fixture/killed-apply/home/.stead/state.json" killed-apply
seed journal "$fixture/killed-apply/home/.stead/journal.jsonl" killed-apply
seed lock_file "$fixture/killed-apply/home/.stead/state.lock" killed-apply
seed shared_record "$fixture/shared-record.json" v0.1.0
seed shared_record "$root/lib/tests/fixtures/shared-record-plain-checksums.json" plain-checksums

# A version 1 state record (migrated on load), as in lib/tests/migrate_v1.rs.
seed_text state_record '{"active_profile": "work", "dotfiles_path": "/home/me/.dotfiles",
 "repo_url": "git@host:me/dotfiles.git", "last_sync": "2026-01-15T10:30:00Z",
 "last_apply": "2026-01-15 10:35:00", "theme": "dark"}' v1

# lock_config.json as docs/state.md shows it, and a small one.
seed_text lock_config '{"lock_type": "hybrid", "timeout": 300, "detect_stale": true,
 "retry": {"attempts": 3, "delay_seconds": 1.0, "exponential_backoff": true}}' full
seed_text lock_config '{"lock_type": "disabled"}' disabled

du -sh "$corpus"
