//! Many machines on etcd, end to end: a real etcd started by the test on
//! loopback (`stead_testkit::etcd`, one member or three), a bare git remote
//! for the config files, and machines with their own temp HOMEs whose
//! clones name the cluster with `stead init --etcd`.
//!
//! Without etcd installed these tests say so and pass outside CI; under CI
//! (`.ci/run` installs etcd-server) a missing etcd fails them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::etcd::EtcdWorld as World;
use common::remote::{Machine, Remote, hybrid, ids, spawn};
use common::{Sandbox, wait_until};
use serde_json::Value;
use stead_testkit::etcd::Etcd;

const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[profile.laptop.vars]
who = "laptop"

[profile.work.vars]
who = "work"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#;

/// A manifest whose exec waits for `<dir>/release` (after touching
/// `<dir>/started`), to hold a run while the test looks at its lock.
fn waiting_manifest(dir: &Path) -> String {
    common::waiting_manifest(MANIFEST, dir)
}

fn history_ids(record: &Value) -> Vec<String> {
    ids(&record["history"])
}

fn local_history_ids(m: &Machine) -> Vec<String> {
    ids(&m.state()["history"])
}

/// Both machines on the hybrid lock (lease TTL `ttl`), and an apply of
/// `a` started that holds it while its exec waits for `<signals>/release`.
fn hold_apply(a: &Machine, b: &Machine, signals: &Path, ttl: u64) -> Child {
    std::fs::write(a.clone_dir().join("stead.toml"), waiting_manifest(signals)).unwrap();
    hybrid(a, ttl);
    hybrid(b, ttl);
    let mut holder = spawn(a, &["apply", "--yes"]);
    wait_until("a's apply holds the lock and runs its exec", || {
        assert!(
            holder.try_wait().unwrap().is_none(),
            "a's apply ended early"
        );
        signals.join("started").exists()
    });
    holder
}

#[test]
fn machines_join_sync_and_share_their_history_on_etcd() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let (a, b) = w.two_synced();
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );

    let record = w.record();
    let members: BTreeSet<String> = record["lineage"]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(members, BTreeSet::from([a.id(), b.id()]));
    assert_eq!(a.state()["lineage"]["id"], b.state()["lineage"]["id"]);
    // History: the union of both machines', each entry once.
    let remote = history_ids(&record);
    let unique: BTreeSet<&String> = remote.iter().collect();
    assert_eq!(unique.len(), remote.len(), "no entry doubled: {remote:?}");
    for id in local_history_ids(&a).iter().chain(&local_history_ids(&b)) {
        assert!(remote.contains(id), "entry {id} lost: {remote:?}");
    }
    // The record is not in git: the config repo holds only the config.
    let tree = w
        .remote
        .git(&w.remote.remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(!tree.contains(".stead/state.json"), "{tree}");
    assert!(!tree.contains(".stead/etcd/"), "{tree}");

    // The fleet view reads the same store.
    let fleet = a.json(&["fleet", "status"]);
    let listed: BTreeSet<String> = fleet["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, BTreeSet::from([a.id(), b.id()]));
}

#[test]
fn a_removed_machine_is_refused_and_its_history_is_kept() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let (a, b) = w.two_synced();
    let old_b = b.id();
    let b_history = local_history_ids(&b);

    a.ok(&["state", "remove-machine", &old_b[..8]]);
    a.ok(&["sync"]);
    let record = w.record();
    assert_eq!(record["lineage"]["machines"], serde_json::json!([a.id()]));
    assert!(record["machines"].get(&old_b).is_none());
    assert_eq!(record["retired"], serde_json::json!([old_b.clone()]));
    let remote = history_ids(&record);
    for id in &b_history {
        assert!(
            remote.contains(id),
            "history of the removed machine is kept"
        );
    }

    let before = std::fs::read(b.sb.state_file()).unwrap();
    let (code, _, err) = b.run(&["sync"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("was removed from the lineage by another machine"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "run 'stead init --etcd {} --prefix /stead/v1/ --path {}'",
            w.etcd.endpoints(),
            b.clone_dir().display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), before);
}

#[test]
fn profile_and_path_changed_elsewhere_are_conflicts_that_stop_sync() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let a = w.join();
    a.ok(&["sync"]);
    let a_id = a.id();
    w.edit_record(|r| {
        let m = r.machines.get_mut(&a_id).unwrap();
        m.active_profile = Some("work".into());
        m.config_path = Some("/elsewhere".into());
    });
    // This machine changed its profile too: the merge cannot decide.
    let out = a.ok(&["init", "--profile", "laptop"]);
    assert!(out.contains("profile: personal → laptop"), "{out}");
    let (code, out, _) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("🟡 Profile mismatch: local 'laptop' vs remote 'work'"),
        "{out}"
    );
    assert!(out.contains("vs remote '/elsewhere'"), "{out}");
    let before = w.record();
    let state_before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("Nothing was merged, applied or pushed."),
        "{out}"
    );
    assert_eq!(w.record(), before, "nothing was published");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);

    // Resolved by keeping this machine's values, the next sync publishes them.
    a.ok(&["state", "resolve", "--merge"]);
    a.ok(&["sync"]);
    let record = w.record();
    assert_eq!(record["machines"][&a_id]["active_profile"], "laptop");
    assert_ne!(record["machines"][&a_id]["config_path"], "/elsewhere");
}

#[test]
fn a_held_lock_refuses_another_machine_and_ends_with_its_holders_lease() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let signals = tempfile::tempdir().unwrap();
    let (a, b) = w.two_synced();
    let mut holder = hold_apply(&a, &b, signals.path(), 2);
    let a_id = a.id();
    let remove_a = ["state", "remove-machine", a_id.as_str()];

    // A's apply holds A's own lock: B's lineage-wide write waits for it,
    // naming A; B's own apply does not (the fleet is not serialized).
    let (code, out, err) = b.run(&remove_a);
    assert_eq!(code, 3, "{out}\n{err}");
    let host = a.state()["machine"]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&host) && err.contains(&holder.id().to_string()),
        "{err}"
    );
    assert!(err.contains(&format!("locks/machines/{a_id}")), "{err}");
    assert!(
        err.contains("never broken for its age"),
        "a lease, not an age: {err}"
    );
    assert!(
        err.contains(&format!("unlock --force --machine {}", &a_id[..8])),
        "names the one lock to remove: {err}"
    );
    b.ok(&["apply", "--yes"]);
    let info = b.ok(&["state", "lock-info"]);
    assert!(info.contains(&holder.id().to_string()), "{info}");
    assert!(info.contains("Lease: "), "{info}");
    let json = b.json(&["state", "lock-info"]);
    let left = json["remote_lock"]["lease_ttl_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("a lease: {json}"));
    assert!(left <= 2, "{json}");
    assert_eq!(json["remote_lock"]["scope"], "machine", "{json}");
    assert_eq!(json["remote_lock"]["held"].as_array().unwrap().len(), 1);

    // SIGKILL: nothing is released; the lease ends the lock within TTL + 1 s.
    holder.kill().unwrap();
    holder.wait().unwrap();
    std::fs::write(signals.path().join("release"), "").unwrap();
    let killed = Instant::now();
    loop {
        let (code, out, err) = b.run(&remove_a);
        if code == 0 {
            break;
        }
        assert_eq!(code, 3, "{out}\n{err}");
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the dead holder's lock outlived its lease: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(killed.elapsed() < Duration::from_secs(3));
    b.ok(&["sync"]);
    let record = w.record();
    assert_eq!(record["retired"], serde_json::json!([a_id]), "b removed a");
}

#[test]
fn two_machines_apply_at_once_a_lineage_wide_write_waits_for_both_and_one_lock_can_be_removed() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let (signals_a, signals_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // C joins first: a join publishes, and A and B must have seen it.
    let c = w.join();
    let (a, b) = w.two_synced();
    hybrid(&c, 60);
    let mut holder_a = hold_apply(&a, &b, signals_a.path(), 60);
    // B's apply starts and holds its own lock while A's holds A's.
    std::fs::write(
        b.clone_dir().join("stead.toml"),
        waiting_manifest(signals_b.path()),
    )
    .unwrap();
    let mut holder_b = spawn(&b, &["apply", "--yes"]);
    wait_until("b's apply runs beside a's", || {
        assert!(
            holder_b.try_wait().unwrap().is_none(),
            "b's apply ended early"
        );
        signals_b.path().join("started").exists()
    });
    let json = c.json(&["state", "lock-info"]);
    let held: BTreeSet<String> = json["remote_lock"]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["holder"]["machine"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held, BTreeSet::from([a.id(), b.id()]), "{json}");
    let status = c.json(&["fleet", "status"]);
    let locked: BTreeSet<String> = status["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["lock"].is_null())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(locked, BTreeSet::from([a.id(), b.id()]), "{status}");
    assert!(status["lock"].is_null(), "no lineage-wide lock: {status}");

    // C's lineage-wide write waits while either holds its lock.
    let remove_b = ["state", "remove-machine", &b.id()].map(String::from);
    let remove_b: Vec<&str> = remove_b.iter().map(String::as_str).collect();
    let (code, out, err) = c.run(&remove_b);
    assert_eq!(code, 3, "{out}\n{err}");
    // `unlock --force --machine` removes A's lock only (named by an id
    // prefix); B's stays, and C's removal still waits for it.
    let a_id = a.id();
    let out = c.ok(&["state", "unlock", "--force", "--machine", &a_id[..8]]);
    assert!(out.contains(&format!("PID {}", holder_a.id())), "{out}");
    assert!(!out.contains(&format!("PID {}", holder_b.id())), "{out}");
    let json = c.json(&["state", "lock-info"]);
    let left: Vec<&str> = json["remote_lock"]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["holder"]["machine"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [b.id()], "{json}");
    let out = c.ok(&["state", "unlock", "--force", "--machine", &a_id]);
    assert!(out.contains("No remote lock is held by"), "{out}");
    std::fs::write(signals_a.path().join("release"), "").unwrap();
    assert!(holder_a.wait().unwrap().success());
    let (code, out, err) = c.run(&remove_b);
    assert_eq!(code, 3, "b still holds its lock: {out}\n{err}");
    assert!(err.contains(&holder_b.id().to_string()), "{err}");
    std::fs::write(signals_b.path().join("release"), "").unwrap();
    assert!(holder_b.wait().unwrap().success());
    c.ok(&["sync"]);
    c.ok(&remove_b);
}

#[test]
fn under_its_own_lock_a_machine_is_stopped_by_news_for_it_not_by_other_machines_syncs() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let (a, b) = w.two_synced();
    hybrid(&a, 60);
    hybrid(&b, 60);
    // B publishes news of its own (a repaired hand edit: a history entry).
    let before = w.record()["lineage"]["serial"].clone();
    std::fs::write(b.sb.home().join(".bashrc"), "edited\n").unwrap();
    b.ok(&["sync"]);
    assert_ne!(w.record()["lineage"]["serial"], before, "b published");
    // Not news for A: its apply goes on (on git it would be stopped).
    a.ok(&["apply", "--yes"]);

    // A's own entry changed elsewhere: A's apply stops, changing nothing,
    // until A syncs.
    let a_id = a.id();
    w.edit_record_json(|r| r["machines"][&a_id]["config_path"] = "/elsewhere".into());
    let state = std::fs::read(a.sb.state_file()).unwrap();
    let (code, out, err) = a.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("has changed since this machine last synced"),
        "{err}"
    );
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state);
    let info = a.json(&["state", "lock-info"]);
    assert_eq!(
        info["remote_lock"]["status"], "unlocked",
        "released: {info}"
    );
}

#[test]
fn unlock_force_removes_a_live_holders_lock() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let signals = tempfile::tempdir().unwrap();
    let (a, b) = w.two_synced();
    let mut holder = hold_apply(&a, &b, signals.path(), 60);
    let remove_a = ["state", "remove-machine", &a.id()].map(String::from);
    let remove_a: Vec<&str> = remove_a.iter().map(String::as_str).collect();
    assert_eq!(b.run(&remove_a).0, 3);
    let out = b.ok(&["state", "unlock", "--force"]);
    assert!(out.contains(&holder.id().to_string()), "{out}");
    let info = b.ok(&["state", "lock-info"]);
    assert!(info.contains("not locked"), "{info}");
    b.ok(&remove_a);
    std::fs::write(signals.path().join("release"), "").unwrap();
    let _ = holder.wait();
}

#[test]
fn a_holder_stopped_past_its_lease_writes_nothing_when_it_resumes() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let signals = tempfile::tempdir().unwrap();
    let (a, b) = w.two_synced();
    // A's config (committed and pushed) now waits in an exec during its sync's apply.
    let clone = a.clone_dir();
    std::fs::write(clone.join("stead.toml"), waiting_manifest(signals.path())).unwrap();
    w.remote.git(&clone, &["commit", "-q", "-am", "wait"]);
    hybrid(&a, 2);
    hybrid(&b, 2);
    let before = w.record();

    let mut stopped = spawn(&a, &["sync"]);
    let started = signals.path().join("started");
    wait_until("a's sync holds the lock and runs its exec", || {
        assert!(
            stopped.try_wait().unwrap().is_none(),
            "a's sync ended early"
        );
        started.exists()
    });
    let pid = nix::unistd::Pid::from_raw(stopped.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Past its TTL, its lease ends and its lock with it (B's sync would not
    // wait for A's lock: it is A's own). B then syncs (a repair of a hand
    // edit gives it something to write).
    let paused = Instant::now();
    wait_until("a's lock ends with its lease", || {
        assert!(
            paused.elapsed() < Duration::from_secs(4),
            "a's lock outlived its lease"
        );
        b.json(&["state", "lock-info"])["remote_lock"]["status"] == "unlocked"
    });
    std::fs::write(b.sb.home().join(".bashrc"), "edited\n").unwrap();
    b.ok(&["sync"]);
    let after_b = w.record();
    assert_ne!(before, after_b, "b's sync wrote");

    std::fs::write(signals.path().join("release"), "").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = stopped.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a wrote after losing its lease: {err}"
    );
    assert!(err.contains("no longer holds the lock"), "{err}");
    assert_eq!(w.record(), after_b, "a wrote nothing to etcd");
}

#[test]
fn syncs_of_three_machines_survive_the_leader_killed_and_lose_no_history() {
    let Some(mut w) = World::new(3, MANIFEST) else {
        return;
    };
    let endpoints = w.etcd.all_endpoints();
    let machines: Vec<Machine> = (0..3).map(|_| w.join_with(&endpoints)).collect();
    for m in &machines {
        m.ok(&["sync"]);
    }
    for m in &machines {
        std::fs::write(m.sb.home().join(".bashrc"), "edited\n").unwrap();
    }
    let children: Vec<Child> = machines.iter().map(|m| spawn(m, &["sync"])).collect();
    let leader = w.etcd.leader().expect("a leader");
    w.etcd.kill(leader);
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Succeeded, or failed cleanly: a message, never a panic.
        assert!(!err.contains("panicked"), "{err}");
        if !out.status.success() {
            assert!(!err.trim().is_empty(), "a failed sync says why");
        }
    }
    // Every machine syncs again on the two members left.
    for m in &machines {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, out, err) = m.run(&["sync"]);
            if code == 0 {
                break;
            }
            if Instant::now() >= deadline {
                // Say what the cluster was doing: which members answer
                // /health, and the end of each one's log.
                let members: Vec<String> = (0..3)
                    .map(|i| {
                        format!(
                            "member {i} (leader killed: {}) healthy: {}\n{}",
                            i == leader,
                            w.etcd.healthy(i),
                            w.etcd.log(i)
                        )
                    })
                    .collect();
                panic!("{out}\n{err}\n{}", members.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let record = w.record();
    let remote = history_ids(&record);
    let unique: BTreeSet<&String> = remote.iter().collect();
    assert_eq!(unique.len(), remote.len(), "no entry doubled");
    for m in &machines {
        for id in local_history_ids(m) {
            assert!(remote.contains(&id), "entry {id} lost");
        }
    }
    assert_eq!(record["lineage"]["machines"].as_array().unwrap().len(), 3);
}

#[test]
fn fleet_watch_syncs_when_another_machine_pushes_a_config_change() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let a = w.join();
    a.ok(&["sync"]);
    let b = w.join();
    b.ok(&["sync"]);
    let mut watcher = spawn(
        &b,
        &["fleet", "watch", "--max-runs", "2", "--interval", "600"],
    );
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("fleet watch: run ") && tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(first.contains("run 1 (start): synced"), "{first}");

    // Machine a changes the shared bashrc and syncs: it pushes the config.
    let clone = a.clone_dir();
    std::fs::write(clone.join("bashrc"), "# changed on a\n").unwrap();
    w.remote
        .git(&clone, &["commit", "-q", "-am", "bashrc from a"]);
    a.ok(&["sync"]);
    let head = w.remote.git(&clone, &["rev-parse", "HEAD"]);

    let second = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        second.contains(&format!(
            "run 2 (config changed to {}): synced",
            &head[..12]
        )),
        "{second}"
    );
    let status = watcher.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        "# changed on a\n"
    );
}

/// Turns on the cluster's authentication: a `root` user, and `user` with
/// read and write on the default prefix only.
fn enable_auth(etcd: &Etcd, user: &str, password: &str) {
    let endpoints: Vec<String> = etcd.endpoints().split(',').map(str::to_string).collect();
    let cluster =
        stead_lib::sync::etcd::client::Cluster::new(&endpoints, Duration::from_secs(5)).unwrap();
    let mut c = cluster.client().unwrap();
    cluster.block_on(async {
        c.user_add("root", "root-pw", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("stead").await.unwrap();
        let perm = etcd_client::Permission::read_write("/stead/v1/").with_prefix();
        c.role_grant_permission("stead", perm).await.unwrap();
        c.user_add(user, password, None).await.unwrap();
        c.user_grant_role(user, "stead").await.unwrap();
        c.auth_enable().await.unwrap();
    });
}

#[test]
fn with_authentication_on_a_machine_syncs_as_its_etcd_user_and_is_refused_without() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    enable_auth(&w.etcd, "laptop", "s3cret-pw");
    let m = w.remote.cloned_machine();
    let clone = m.clone_dir();
    let endpoints = w.etcd.endpoints();
    let init = [
        "init",
        "--etcd",
        &endpoints,
        "--path",
        clone.to_str().unwrap(),
    ];

    // Without credentials: refused, and nothing joined.
    let (code, out, err) = m.run(&init);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("STEAD_ETCD_USER"), "{err}");
    assert!(!m.sb.state_file().exists(), "no state was written");

    // A wrong password: refused too.
    let out = m
        .cmd(&init)
        .env("STEAD_ETCD_USER", "laptop")
        .env("STEAD_ETCD_PASSWORD", "wrong")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("authentication failed"), "{err}");
    assert!(
        !err.contains("Cannot reach"),
        "a refused password is no outage: {err}"
    );

    // The right one, from a file.
    let pw = m.sb.home().join("etcd-password");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    for args in [&init[..], &["sync"][..]] {
        let out = m
            .cmd(args)
            .env("STEAD_ETCD_USER", "laptop")
            .env("STEAD_ETCD_PASSWORD_FILE", &pw)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("s3cret-pw"), "the password is never printed");
    }
    assert_eq!(
        std::fs::read_to_string(m.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );
    let tree = std::fs::read_to_string(clone.join(".stead/etcd.toml")).unwrap();
    assert!(
        !tree.contains("s3cret") && !tree.contains("laptop"),
        "{tree}"
    );
}

/// A client of the test cluster, as root once authentication is on.
fn etcd_client(
    etcd: &Etcd,
    root: bool,
) -> (stead_lib::sync::etcd::client::Cluster, etcd_client::Client) {
    let endpoints: Vec<String> = etcd.endpoints().split(',').map(str::to_string).collect();
    let credentials = root.then(|| stead_lib::sync::etcd::Credentials {
        user: "root".to_string(),
        password: zeroize::Zeroizing::new("root-pw".to_string()),
    });
    let access = stead_lib::sync::etcd::Access {
        credentials,
        tls: None,
    };
    let cluster = stead_lib::sync::etcd::client::Cluster::new_with(
        &endpoints,
        Duration::from_secs(5),
        access,
    )
    .unwrap();
    let client = cluster.client().unwrap();
    (cluster, client)
}

/// The role docs/etcd.md ("Access control") gives machine `m`, granted to
/// a user of the same name, exactly as the doc's `etcdctl` lines say.
fn grant_machine_role(etcd: &Etcd, m: &str) {
    use etcd_client::Permission;
    let (cluster, mut c) = etcd_client(etcd, true);
    let role = format!("stead-{m}");
    cluster.block_on(async {
        c.role_add(role.as_str()).await.unwrap();
        for perm in [
            Permission::read("/stead/v1/").with_prefix(),
            Permission::read_write(format!("/stead/v1/machines/{m}")).with_prefix(),
            Permission::read_write(format!("/stead/v1/history/{m}/")).with_prefix(),
            Permission::read_write(format!("/stead/v1/members/{m}")).with_prefix(),
            Permission::read_write("/stead/v1/serial"),
            Permission::read_write(format!("/stead/v1/locks/machines/{m}")),
            Permission::read_write("/stead/v1/locks/lineage"),
            Permission::read_write("/stead/v1/config/rev"),
        ] {
            c.role_grant_permission(role.as_str(), perm).await.unwrap();
        }
        c.user_add(role.as_str(), "machine-pw", None).await.unwrap();
        c.user_grant_role(role.as_str(), role.as_str())
            .await
            .unwrap();
    });
}

/// `stead ARGS` on `m` as etcd user `user`: exit code, stdout, stderr.
fn run_as(m: &Machine, user: &str, password: &str, args: &[&str]) -> (i32, String, String) {
    let out = m
        .cmd(args)
        .env("STEAD_ETCD_USER", user)
        .env("STEAD_ETCD_PASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn with_the_documented_per_machine_roles_machines_sync_and_cannot_touch_each_others_keys() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    // An admin for the joins (the first writes `meta`), as the doc says.
    {
        let (cluster, mut c) = etcd_client(&w.etcd, false);
        cluster.block_on(async {
            c.user_add("root", "root-pw", None).await.unwrap();
            c.user_grant_role("root", "root").await.unwrap();
            c.role_add("stead-admin").await.unwrap();
            let all = etcd_client::Permission::read_write("/stead/v1/").with_prefix();
            c.role_grant_permission("stead-admin", all).await.unwrap();
            c.user_add("admin", "admin-pw", None).await.unwrap();
            c.user_grant_role("admin", "stead-admin").await.unwrap();
            c.auth_enable().await.unwrap();
        });
    }
    let join = |m: &Machine| {
        let clone = m.clone_dir();
        let endpoints = w.etcd.endpoints();
        let init = [
            "init",
            "--etcd",
            &endpoints,
            "--path",
            clone.to_str().unwrap(),
        ];
        let (code, out, err) = run_as(m, "admin", "admin-pw", &init);
        assert_eq!(code, 0, "{out}{err}");
    };
    let a = w.remote.cloned_machine();
    join(&a);
    grant_machine_role(&w.etcd, &a.id());
    let a_user = format!("stead-{}", a.id());
    // The lineage's first publish creates `meta`: its own user may not.
    let (code, out, err) = run_as(&a, &a_user, "machine-pw", &["sync"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("STEAD_ETCD_USER"), "{err}");
    let (code, out, err) = run_as(&a, "admin", "admin-pw", &["sync"]);
    assert_eq!(code, 0, "the first sync, as the admin: {out}{err}");
    let (code, out, err) = run_as(&a, &a_user, "machine-pw", &["sync"]);
    assert_eq!(code, 0, "then a syncs as its own user: {out}{err}");

    let b = w.remote.cloned_machine();
    join(&b);
    grant_machine_role(&w.etcd, &b.id());
    let b_user = format!("stead-{}", b.id());
    // From here on each takes its own lock on etcd (and b's removal the
    // lineage's), as its own user.
    hybrid(&a, 60);
    hybrid(&b, 60);
    for (m, user) in [(&b, &b_user), (&a, &a_user), (&b, &b_user)] {
        let (code, out, err) = run_as(m, user, "machine-pw", &["sync"]);
        assert_eq!(code, 0, "{user} syncs: {out}{err}");
    }
    let both = BTreeSet::from([a.id(), b.id()]);
    for m in [&a, &b] {
        let members: BTreeSet<String> = m.state()["lineage"]["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(members, both, "each machine sees the other");
    }
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );

    // A lineage-wide write is the admin's: b's own user cannot retire a,
    // and nothing of it lands.
    let record_keys = || {
        let (cluster, _) = etcd_client(&w.etcd, true);
        let range = cluster.range("/stead/v1/").unwrap();
        range
            .kvs
            .into_iter()
            .filter(|(k, ..)| !k.contains("/locks/") && !k.ends_with("/config/rev"))
            .map(|(k, v, rev, ..)| (k, v, rev))
            .collect::<Vec<_>>()
    };
    let before = record_keys();
    assert!(
        before
            .iter()
            .any(|(k, ..)| k.ends_with(&format!("machines/{}", a.id()))),
        "{before:?}"
    );
    // The removal is committed locally; publishing it is the admin's.
    let (code, out, err) = run_as(
        &b,
        &b_user,
        "machine-pw",
        &["state", "remove-machine", &a.id()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_as(&b, &b_user, "machine-pw", &["sync"]);
    assert_eq!(code, 1, "b's user published a's removal: {out}{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        err.contains("publishing a 'state remove-machine' need a role over the whole prefix"),
        "says what to do: {err}"
    );
    assert!(!err.contains("cluster's health"), "no outage: {err}");
    assert_eq!(
        record_keys(),
        before,
        "nothing of the removal landed: {err}"
    );
    let (code, out, err) = run_as(&a, &a_user, "machine-pw", &["sync"]);
    assert_eq!(code, 0, "a, still a member, syncs on: {out}{err}");
    let (code, out, err) = run_as(&b, "admin", "admin-pw", &["sync"]);
    assert_eq!(code, 0, "the admin publishes it: {out}{err}");
    let (code, _, err) = run_as(&a, &a_user, "machine-pw", &["sync"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("removed from the lineage"), "{err}");
}

#[test]
fn init_lineage_starts_under_the_id_given_and_refuses_another_lineage() {
    let Some(w) = World::new(1, MANIFEST) else {
        return;
    };
    let endpoints = w.etcd.endpoints();
    let init = |m: &Machine, lineage: &str| {
        let clone = m.clone_dir();
        m.run(&[
            "init",
            "--etcd",
            &endpoints,
            "--path",
            clone.to_str().unwrap(),
            "--lineage",
            lineage,
        ])
    };

    // An empty prefix: the lineage starts under the id given.
    let a = w.remote.cloned_machine();
    let (code, out, err) = init(&a, "lineage-moved-from-git");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(a.state()["lineage"]["id"], "lineage-moved-from-git");
    a.ok(&["sync"]);
    assert_eq!(w.record()["lineage"]["id"], "lineage-moved-from-git");

    // Another id: refused, and nothing of b's state or the record written.
    let b = w.remote.cloned_machine();
    let record = w.record();
    let (code, out, err) = init(&b, "lineage-other");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("holds lineage lineage-moved-from-git, not lineage-other"),
        "{err}"
    );
    assert!(err.contains("without --lineage"), "{err}");
    assert!(!b.sb.state_file().exists(), "b has no state");
    assert_eq!(w.record(), record, "the record is as it was");

    // The id the prefix holds: joined.
    let (code, out, err) = init(&b, "lineage-moved-from-git");
    assert_eq!(code, 0, "{out}{err}");
    b.ok(&["sync"]);
    assert_eq!(b.state()["lineage"]["id"], "lineage-moved-from-git");
    let members = w.record()["lineage"]["machines"].as_array().unwrap().len();
    assert_eq!(members, 2);

    // Without a shared store it means nothing, and a malformed id is refused.
    let c = Machine { sb: Sandbox::new() };
    let (code, _, err) = c.run(&["init", "--lineage", "lineage-x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--lineage needs --etcd or --repo"), "{err}");
    assert!(!c.sb.state_file().exists());
    let (code, _, err) = init(&c, "two words");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no spaces"), "{err}");
    assert!(!c.sb.state_file().exists());
}

#[test]
fn a_corrupt_cache_or_a_stopped_cluster_is_said_plainly_and_changes_nothing() {
    let Some(mut w) = World::new(1, MANIFEST) else {
        return;
    };
    let a = w.join();
    a.ok(&["sync"]);
    let state_before = std::fs::read(a.sb.state_file()).unwrap();

    // This machine's copies damaged: named, with what to do.
    let cache = a.clone_dir().join(".stead/etcd");
    std::fs::write(cache.join("copies.json"), "{ torn").unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("copies.json are corrupt"), "{err}");
    assert!(
        err.contains(&format!("move the directory {} aside", cache.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    // Moved aside as told: the next sync reads the record again.
    std::fs::rename(&cache, a.sb.home().join("etcd-cache-aside")).unwrap();
    a.ok(&["sync"]);
    let state_before = std::fs::read(a.sb.state_file()).unwrap();

    // doctor sees the cluster and the record, and asks for no merge driver.
    let doctor = a.json(&["doctor"]);
    let checks = doctor["checks"].as_array().unwrap();
    let named = |n: &str| checks.iter().find(|c| c["name"] == n).cloned();
    let etcd = named("etcd").expect("an etcd check");
    assert_eq!(etcd["level"], "ok", "{etcd}");
    assert!(
        etcd["message"].as_str().unwrap().contains("1 machine(s)"),
        "{etcd}"
    );
    assert!(named("merge-driver").is_none(), "{doctor}");

    // The cluster stopped: sync says so and changes nothing.
    w.etcd.kill(0);
    let (code, out, _) = a.run(&["doctor"]);
    assert_eq!(code, 0, "offline is a warning: {out}");
    assert!(out.contains("warn  etcd"), "{out}");
    std::fs::write(a.sb.home().join(".bashrc"), "edited\n").unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "edited\n"
    );
}

#[test]
fn over_tls_a_machine_with_a_client_certificate_syncs_and_one_without_is_refused() {
    let Some(etcd) = Etcd::require_tls() else {
        return;
    };
    let certs = etcd.certs().unwrap().clone();
    let remote = Remote::seeded(
        "main",
        &[("stead.toml", MANIFEST), ("bashrc", "# shared bashrc\n")],
    );
    let m = remote.cloned_machine();
    let clone = m.clone_dir();
    let endpoints = etcd.endpoints();
    assert!(endpoints.starts_with("https://"), "{endpoints}");
    let init = [
        "init",
        "--etcd",
        &endpoints,
        "--path",
        clone.to_str().unwrap(),
    ];

    // The CA alone: the cluster asks for a client certificate and refuses.
    let out = m
        .cmd(&init)
        .env("STEAD_ETCD_CA", &certs.ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STEAD_ETCD_CERT"), "{err}");
    assert!(!m.sb.state_file().exists(), "nothing joined");

    // A certificate without its key: said before any connection.
    let out = m
        .cmd(&init)
        .env("STEAD_ETCD_CA", &certs.ca)
        .env("STEAD_ETCD_CERT", &certs.client_cert)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set both STEAD_ETCD_CERT and STEAD_ETCD_KEY"),
        "{err}"
    );

    for args in [&init[..], &["sync"][..]] {
        let out = m
            .cmd(args)
            .env("STEAD_ETCD_CA", &certs.ca)
            .env("STEAD_ETCD_CERT", &certs.client_cert)
            .env("STEAD_ETCD_KEY", &certs.client_key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(m.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );
}
