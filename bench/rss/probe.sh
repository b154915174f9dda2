#!/bin/sh
# probe.sh BIN CONFIG_DIR: a cold apply, then two planned no-ops (the seal
# removed) with STEAD_RSS_PROBE=1, printing each probe's VmRSS and VmHWM.
# BIN must be built with probe.patch applied (see README.md).
set -eu
bin=$1; cfg=$2
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-rss-XXXXXX")
mkdir -p "$d/env"
s() { HOME=$d/env "$bin" --home "$d/home" --state-dir "$d/state" --config "$cfg" --no-color "$@"; }
s apply --yes >/dev/null 2>&1
sleep 2.5
for i in 1 2; do
  rm -f "$d/state/converged.seal"
  STEAD_RSS_PROBE=1 HOME=$d/env /usr/bin/time -f "%e s %U u %M KiB" \
    "$bin" --home "$d/home" --state-dir "$d/state" --config "$cfg" --no-color apply --yes 2>&1 >/dev/null \
    | grep -a -E "^RSS|KiB$" | tr '\n' '|'
  echo
done
rm -rf "$d"
