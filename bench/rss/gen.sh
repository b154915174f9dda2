#!/bin/sh
# gen.sh N DIR: writes DIR/stead.toml with N inline-content file resources
# in dirs of 100 (and one dir resource per dir), the manifest that
# docs/performance.md's 100 000-file memory figures use (15 MB at 100 000).
set -eu
n=$1; dir=$2
mkdir -p "$dir"
awk -v n="$n" 'BEGIN {
  srand(1)
  printf "# gen\n\n"
  for (d = 0; d < int((n + 99) / 100); d++) printf "[dir.d%d]\npath = \"~/d%d\"\n\n", d, d
  for (i = 0; i < n; i++) {
    h = ""
    for (k = 0; k < 48; k++) h = h sprintf("%x", int(rand() * 16))
    printf "[file.f%d]\npath = \"~/d%d/f%d\"\ncontent = \"# stead bench file %d\\nkey = %s\\nvalue = %s\\nend\\n\"\n\n", i, int(i / 100), i, i, substr(h, 1, 16), substr(h, 17, 32)
  }
}' > "$dir/stead.toml"
