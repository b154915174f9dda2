#!/bin/bash
# Produces the command output shown in docs/multi-machine.md.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=me GIT_AUTHOR_EMAIL=me@example.com GIT_COMMITTER_NAME=me GIT_COMMITTER_EMAIL=me@example.com NO_COLOR=1
S=${STEAD:-$(pwd)/target/debug/stead}
D=/tmp/demo; rm -rf $D; mkdir -p $D; cd $D
git init -q --bare -b main dotfiles.git
git clone -q dotfiles.git seed 2>/dev/null; cp -r /work/main/examples/dotfiles/* seed/
(cd seed && git add -A && git commit -qm "my dotfiles" && git push -q origin HEAD)
on() { M=$1; shift; echo "laptop\$ stead $*" | sed "s/^laptop/$M/"; (cd $D/$M 2>/dev/null || cd $D; HOME=$D/$M STEAD_HOME=$D/$M $S "$@" 2>&1); echo "[exit $?]"; echo; }
sec() { echo; echo "=== $*"; }
sec adding
on laptop init --repo $D/dotfiles.git --path $D/laptop/dotfiles --profile personal
on laptop sync
on desktop init --repo $D/dotfiles.git --path $D/desktop/dotfiles --profile work
on desktop sync
on laptop sync
on laptop state history --limit 4
sec concurrent
echo 'alias gs="git status"' >> laptop/dotfiles/shell/bashrc; (cd laptop/dotfiles && git commit -qam "gs alias")
on laptop apply --yes
on laptop commit -m "laptop: gs alias"
echo "# desktop note" >> desktop/.bashrc
on desktop state check-drift
echo 'work_notes = true' > /dev/null
sed -i 's/^email = "sam@work.example"/email = "sam@corp.example"/' desktop/dotfiles/stead.toml; (cd desktop/dotfiles && git commit -qam "work email")
on desktop apply --yes
on desktop commit -m "desktop: new work email"
on laptop sync
on desktop state check-conflicts
on desktop state diff
on desktop sync
on laptop sync
sec decision
LAP=$(cat laptop/.stead/machine_id)
git clone -q dotfiles.git admin; (cd admin && python3 - "$LAP" <<'PY'
import json,sys
p='.stead/state.json'; d=json.load(open(p)); d['machines'][sys.argv[1]]['config_path']='/home/sam/dotfiles'
json.dump(d,open(p,'w'),indent=2); open(p,'a').write('\n')
PY
git commit -qam "laptop keeps its dotfiles in /home/sam/dotfiles" && git push -q)
on laptop sync
on laptop state resolve --use-local
on laptop sync
sec offline
git -C laptop/dotfiles remote set-url origin /unreachable/dotfiles.git
echo '{"lock_type": "hybrid", "timeout": 300}' > laptop/.stead/lock_config.json
echo '{"lock_type": "hybrid", "timeout": 300}' > desktop/.stead/lock_config.json
echo 'export PAGER=less' >> laptop/dotfiles/shell/bashrc; (cd laptop/dotfiles && git commit -qam "pager")
on laptop apply --yes
on laptop commit -m "laptop: pager, offline"
on laptop sync
git -C laptop/dotfiles remote set-url origin $D/dotfiles.git
on laptop sync
on laptop state lock-info
on desktop sync
sec hybrid
on laptop apply --yes
on laptop sync
sec removing
on laptop state remove-machine $(cat desktop/.stead/machine_id | cut -c1-8)
on laptop sync
on desktop sync
