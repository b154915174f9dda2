#!/bin/sh
# measure.sh BIN TAG CONFIG_DIR: the peak RSS, wall and user CPU of four runs
# of BIN on CONFIG_DIR's manifest, in a fresh home and state dir: a cold
# apply; after 2.5 s a no-op with the seal removed (the first no-op: it
# reads every file and writes the stat cache); another with the seal removed
# (the planned no-op: the stat cache trusts every file); a sealed no-op.
set -eu
bin=$1; tag=$2; cfg=$3
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-rss-XXXXXX")
mkdir -p "$d/env"
run() {
  HOME=$d/env /usr/bin/time -f "$tag $1 %e s %U u %M KiB" \
    "$bin" --home "$d/home" --state-dir "$d/state" --config "$cfg" --no-color apply --yes >/dev/null
}
run cold
sleep 2.5
rm -f "$d/state/converged.seal"; run first-noop
rm -f "$d/state/converged.seal"; run planned-noop
run sealed-noop
rm -rf "$d"
