//! The many-machine scenarios, written once and run on both sync backends
//! with the same expectations (issue 20): join, history union with nothing
//! lost, remove-machine, lock-info, unlock --force, conflicts, and history
//! retention.
//!
//! Each scenario is a function of a [`Fleet`] (`common::fleet`); `both!`
//! makes two tests of it, `<scenario>::git` and `<scenario>::etcd`, so a
//! failure names its backend. Where the backends truly differ, the common
//! part is asserted by the same code and the difference in one marked
//! `match`: in lock-info (the git lock is one ref for the lineage, broken by
//! age, no lease, so another machine's apply waits for it; the etcd lock is
//! a machine's own key that ends with its lease, `lease_ttl_left`, so only
//! lineage-wide writes wait for it) and in conflicts (git names the commit
//! that changed an entry, etcd no author).
//!
//! Without etcd installed the etcd tests say so and pass outside CI, as in
//! `etcd.rs`; under CI a missing etcd fails them.

mod common;

use std::collections::BTreeSet;

use common::fleet::Fleet;
use common::remote::{Machine, ids};
use serde_json::Value;

/// `<scenario>::git` and `<scenario>::etcd`: the scenario on each backend.
macro_rules! both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn git() {
                super::$scenario(&super::Fleet::git());
            }

            #[test]
            fn etcd() {
                let Some(fleet) = super::Fleet::etcd() else {
                    return;
                };
                super::$scenario(&fleet);
            }
        }
    )*};
}

both!(
    join,
    history_union_loses_nothing,
    remove_machine,
    lock_info,
    unlock_force,
    conflicts,
    history_retention,
);

/// The machine ids of a record's (or a state's) lineage.
fn members(record: &Value) -> BTreeSet<String> {
    record["lineage"]["machines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lineage machines: {record}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Checks that each of `wanted` is in `history` exactly once, and that no
/// entry of `history` is there twice.
fn each_once(backend: &str, place: &str, history: &[String], wanted: &BTreeSet<String>) {
    let unique: BTreeSet<&String> = history.iter().collect();
    assert_eq!(
        unique.len(),
        history.len(),
        "{backend}: an entry doubled in {place}: {history:?}"
    );
    for id in wanted {
        assert_eq!(
            history.iter().filter(|h| *h == id).count(),
            1,
            "{backend}: entry {id} lost from {place}: {history:?}"
        );
    }
}

fn hostname(m: &Machine) -> String {
    m.state()["machine"]["hostname"]
        .as_str()
        .unwrap()
        .to_string()
}

/// 1. A first machine starts the lineage, a second joins; after a sync
///    each, both machines and the record know both.
fn join(f: &Fleet) {
    let backend = f.name();
    let a = f.join();
    a.ok(&["sync"]);
    assert_eq!(members(&f.record()), BTreeSet::from([a.id()]), "{backend}");
    let b = f.join();
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    let both = BTreeSet::from([a.id(), b.id()]);

    let record = f.record();
    assert_eq!(members(&record), both, "{backend}: the record");
    assert_eq!(record["lineage"]["id"], a.state()["lineage"]["id"]);
    assert_eq!(a.state()["lineage"]["id"], b.state()["lineage"]["id"]);
    for m in [&a, &b] {
        assert_eq!(members(&m.state()), both, "{backend}: {}'s state", m.id());
        let fleet = m.json(&["fleet", "status"]);
        let listed: BTreeSet<String> = fleet["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, both, "{backend}: fleet status on {}", m.id());
        let history = m.json(&["state", "history"]);
        let by: BTreeSet<String> = history["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["machine_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(by, both, "{backend}: history on {}", m.id());
    }
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".greeting")).unwrap(),
        "hello from home\n",
        "{backend}: the joined machine applied the config"
    );
}

/// 2. Two synced machines each apply a change offline (different files),
///    then sync: every entry of both is in the record and in each
///    machine's history exactly once.
fn history_union_loses_nothing(f: &Fleet) {
    let backend = f.name();
    let (a, b) = f.two_synced();
    let shared: BTreeSet<String> = ids(&f.record()["history"]).into_iter().collect();
    std::fs::write(a.sb.home().join(".bashrc"), "edited on a\n").unwrap();
    a.ok(&["apply", "--yes"]);
    std::fs::write(b.sb.home().join(".greeting"), "edited on b\n").unwrap();
    b.ok(&["apply", "--yes"]);
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for m in [&a, &b] {
        let offline: Vec<String> = ids(&m.state()["history"])
            .into_iter()
            .filter(|id| !shared.contains(id))
            .collect();
        assert!(
            !offline.is_empty(),
            "{backend}: the offline apply on {} wrote history",
            m.id()
        );
        wanted.extend(ids(&m.state()["history"]));
    }
    assert_eq!(
        ids(&f.record()["history"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        shared,
        "{backend}: nothing was published offline"
    );

    a.ok(&["sync"]);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    each_once(backend, "the record", &ids(&f.record()["history"]), &wanted);
    for m in [&a, &b] {
        let place = format!("{}'s history", m.id());
        each_once(backend, &place, &ids(&m.state()["history"]), &wanted);
    }
    assert_eq!(
        ids(&a.state()["history"]),
        ids(&b.state()["history"]),
        "{backend}: both machines ended with the same history"
    );
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".greeting")).unwrap(),
        "hello from home\n"
    );
}

/// 3. A removes B: the record drops B and keeps its history; B's next sync
///    is refused, names the `init` that rejoins, and changes nothing; that
///    `init` rejoins it under a new id.
fn remove_machine(f: &Fleet) {
    let backend = f.name();
    let (a, b) = f.two_synced();
    let old_b = b.id();
    let b_history = ids(&b.state()["history"]);

    let (code, _, err) = a.run(&["state", "remove-machine", &a.id()]);
    assert_eq!(code, 1, "{backend}: {err}");
    assert!(err.contains("is this machine"), "{backend}: {err}");
    let out = a.ok(&["state", "remove-machine", &old_b[..8]]);
    assert!(
        out.contains(&format!("Removed {} ({old_b})", hostname(&b))),
        "{backend}: {out}"
    );
    a.ok(&["sync"]);
    let record = f.record();
    assert_eq!(members(&record), BTreeSet::from([a.id()]), "{backend}");
    assert!(record["machines"].get(&old_b).is_none(), "{backend}");
    assert_eq!(record["retired"], serde_json::json!([old_b]), "{backend}");
    let kept = ids(&record["history"]);
    for id in &b_history {
        assert!(
            kept.contains(id),
            "{backend}: history of the removed machine is kept: {id}"
        );
    }

    let state_before = std::fs::read(b.sb.state_file()).unwrap();
    let (code, out, err) = b.run(&["sync"]);
    assert_eq!(code, 1, "{backend}: {out}\n{err}");
    assert!(
        err.contains("was removed from the lineage by another machine"),
        "{backend}: {err}"
    );
    assert!(
        err.contains(&format!("run '{}'", f.rejoin_command(&b))),
        "{backend}: {err}"
    );
    assert_eq!(
        std::fs::read(b.sb.state_file()).unwrap(),
        state_before,
        "{backend}: the removed machine's state is untouched"
    );
    assert_eq!(f.record(), record, "{backend}: it published nothing");

    // Rejoining as told gives it a new id; the old one stays retired.
    let rejoin = f.rejoin_command(&b);
    let args: Vec<&str> = rejoin.split(' ').skip(1).collect();
    let out = b.ok(&args);
    assert!(
        out.contains(&format!("old id {old_b} was removed")),
        "{backend}: {out}"
    );
    assert_ne!(b.id(), old_b, "{backend}");
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    let record = f.record();
    assert_eq!(
        members(&record),
        BTreeSet::from([a.id(), b.id()]),
        "{backend}"
    );
    assert_eq!(record["retired"], serde_json::json!([old_b]), "{backend}");
}

/// 4. With the hybrid lock, while A's apply holds it, `lock-info` on B
///    names A (machine, PID, operation) and B's lineage-wide write is
///    refused; once A's apply ends, no holder.
fn lock_info(f: &Fleet) {
    let backend = f.name();
    let (a, b) = f.two_synced();
    f.hybrid(&a, 60);
    f.hybrid(&b, 60);
    let before = b.json(&["state", "lock-info"]);
    assert_eq!(before["remote_lock"]["status"], "unlocked", "{backend}");

    let holder = f.hold_with_apply(&a);
    let info = b.json(&["state", "lock-info"]);
    let remote = &info["remote_lock"];
    assert_eq!(remote["status"], "held", "{backend}: {info}");
    assert_eq!(remote["holder"]["machine"]["id"], a.id(), "{backend}");
    assert_eq!(
        remote["holder"]["machine"]["pid"],
        holder.pid(),
        "{backend}"
    );
    assert_eq!(remote["holder"]["operation"], "apply", "{backend}");
    assert_eq!(
        info["status"], "unlocked",
        "{backend}: b's own lock is free"
    );
    let text = b.ok(&["state", "lock-info"]);
    assert!(text.contains(&format!("PID: {}", holder.pid())), "{text}");
    assert!(
        text.contains(&format!("Machine: {} ({}...)", hostname(&a), &a.id()[..8])),
        "{backend}: {text}"
    );
    // --- where the backends differ: what the lock is bound to ---
    match f {
        Fleet::Git(_) => {
            // A ref on the remote, broken by age: no lease.
            assert_eq!(remote["ref"], "refs/stead/lock", "{info}");
            assert!(remote["lease_ttl_left"].is_null(), "{info}");
            assert!(!text.contains("Lease: "), "{text}");
        }
        Fleet::Etcd(_) => {
            // A key bound to a lease of the timeout, kept alive by A.
            let left = remote["lease_ttl_left"]
                .as_u64()
                .unwrap_or_else(|| panic!("a lease: {info}"));
            assert!((1..=60).contains(&left), "{info}");
            assert!(text.contains("Lease: "), "{text}");
        }
    }
    // A lineage-wide write on B (removing a machine) is refused meanwhile,
    // naming A's apply.
    let (code, out, err) = b.run(&["state", "remove-machine", &a.id()]);
    assert_eq!(code, 3, "{backend}: {out}\n{err}");
    assert!(err.contains(&holder.pid().to_string()), "{backend}: {err}");
    // --- where the backends differ: whether B's own apply waits ---
    let (code, out, err) = b.run(&["apply", "--yes"]);
    match f {
        // One lock for the lineage: B waits for A.
        Fleet::Git(_) => {
            assert_eq!(code, 3, "{out}\n{err}");
            assert!(err.contains(&holder.pid().to_string()), "{err}");
        }
        // A lock per machine: a fleet is not serialized.
        Fleet::Etcd(_) => assert_eq!(code, 0, "{out}\n{err}"),
    }

    let (code, err) = holder.release();
    assert_eq!(code, 0, "{backend}: a's apply: {err}");
    for m in [&a, &b] {
        let info = m.json(&["state", "lock-info"]);
        assert_eq!(
            info["remote_lock"]["status"], "unlocked",
            "{backend}: {info}"
        );
        assert!(info["remote_lock"]["holder"].is_null(), "{backend}: {info}");
    }
}

/// 5. B removes A's live lock with `unlock --force`: the lock is gone and
///    B can take it.
fn unlock_force(f: &Fleet) {
    let backend = f.name();
    let (a, b) = f.two_synced();
    f.hybrid(&a, 60);
    f.hybrid(&b, 60);
    let holder = f.hold_with_apply(&a);
    let a_id = a.id();
    let lineage_wide = ["state", "remove-machine", a_id.as_str()];
    assert_eq!(b.run(&lineage_wide).0, 3, "{backend}: held");

    let out = b.ok(&["state", "unlock", "--force"]);
    assert!(
        out.contains("Removed the remote lock on '"),
        "{backend}: {out}"
    );
    assert!(
        out.contains(&format!("held by PID {}", holder.pid())),
        "{backend}: {out}"
    );
    let info = b.json(&["state", "lock-info"]);
    assert_eq!(
        info["remote_lock"]["status"], "unlocked",
        "{backend}: {info}"
    );
    let text = b.ok(&["state", "lock-info"]);
    assert!(text.contains("): not locked"), "{backend}: {text}");
    b.ok(&["apply", "--yes"]);

    // A's apply writes only its own machine's state: it ends as it would
    // have, and releases no lock but its own (B's apply released B's).
    let (code, err) = holder.release();
    assert_eq!(code, 0, "{backend}: a's apply: {err}");
    let info = a.json(&["state", "lock-info"]);
    assert_eq!(
        info["remote_lock"]["status"], "unlocked",
        "{backend}: {info}"
    );

    // `--machine` names whose lock goes, and says where it was, on either
    // backend (the ref on git, A's own key on etcd).
    let holder = f.hold_with_apply(&a);
    let out = b.json(&["state", "unlock", "--force", "--machine", &a_id]);
    assert_eq!(out["removed"], true, "{backend}: {out}");
    let gone = &out["remote_locks_removed"][0];
    assert_eq!(gone["holder"]["machine"]["id"], a_id, "{backend}: {out}");
    let place = gone["ref"].as_str().unwrap_or_default();
    match f {
        Fleet::Git(_) => assert_eq!(place, "refs/stead/lock", "{out}"),
        Fleet::Etcd(_) => assert!(place.ends_with(&format!("/locks/machines/{a_id}")), "{out}"),
    }
    let (code, err) = holder.release();
    assert_eq!(code, 0, "{backend}: a's apply: {err}");
}

/// 6. A's profile and path changed elsewhere while A changed its profile:
///    `check-conflicts` reports both (exit 4), `sync` stops with exit 1 and
///    publishes nothing, until `state resolve --merge`; the next sync
///    publishes A's values.
fn conflicts(f: &Fleet) {
    let backend = f.name();
    let a = f.join();
    a.ok(&["sync"]);
    let a_id = a.id();
    f.edit_record(|r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
        r["machines"][&a_id]["config_path"] = "/elsewhere".into();
    });
    // This machine changed its profile too: the merge cannot decide.
    let out = a.ok(&["init", "--profile", "laptop"]);
    assert!(
        out.contains("profile: personal → laptop"),
        "{backend}: {out}"
    );

    let (code, out, _) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 4, "{backend}: {out}");
    assert!(
        out.contains("🟡 Profile mismatch: local 'laptop' vs remote 'work'"),
        "{backend}: {out}"
    );
    assert!(
        out.contains("🔴 Config path mismatch: local '") && out.contains("vs remote '/elsewhere'"),
        "{backend}: {out}"
    );

    let (code, out, _) = a.run(&["--json", "state", "check-conflicts"]);
    assert_eq!(code, 4, "{backend}: {out}");
    let json: Value = serde_json::from_str(&out).unwrap();
    let conflicts = json["conflicts"].as_array().unwrap();
    let kind = |k: &str| {
        conflicts
            .iter()
            .find(|c| c["kind"] == k)
            .unwrap_or_else(|| panic!("{backend}: no {k}: {out}"))
    };
    assert_eq!(conflicts.len(), 3, "{backend}: {out}");
    assert_eq!(kind("serial_divergence")["automatic"], true, "{backend}");
    for (k, remote) in [
        ("path_mismatch", "/elsewhere"),
        ("profile_mismatch", "work"),
    ] {
        assert_eq!(kind(k)["automatic"], false, "{backend}: {out}");
        assert_eq!(kind(k)["remote"], remote, "{backend}: {out}");
    }
    // --- where the backends differ: who changed the entry ---
    for k in ["path_mismatch", "profile_mismatch"] {
        match f {
            // The commit that changed the record, from git's history.
            Fleet::Git(_) => assert!(
                kind(k)["changed_by"]
                    .as_str()
                    .is_some_and(|by| by.starts_with("stead test <test@stead.invalid> in commit ")),
                "{out}"
            ),
            // etcd keeps no author of a change.
            Fleet::Etcd(_) => assert!(kind(k).get("changed_by").is_none(), "{out}"),
        }
    }
    let record_before = f.record();
    let state_before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{backend}: {out}\n{err}");
    assert!(
        out.contains("The automatic merge cannot decide 2 of them"),
        "{backend}: {out}"
    );
    assert!(
        out.contains("Nothing was merged, applied or pushed."),
        "{backend}: {out}"
    );
    assert!(
        out.contains("stead state resolve --merge"),
        "{backend}: {out}"
    );
    assert_eq!(f.record(), record_before, "{backend}: nothing published");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    // Again: it still stops.
    assert_eq!(a.run(&["sync"]).0, 1, "{backend}");

    // Resolved by keeping this machine's values, the next sync publishes them.
    a.ok(&["state", "resolve", "--merge"]);
    let (code, out, err) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 0, "{backend}: {out}\n{err}");
    assert!(
        out.starts_with("✓ No conflicts: local serial 4, remote serial 2 ("),
        "{backend}: {out}"
    );
    a.ok(&["sync"]);
    let record = f.record();
    assert_eq!(
        record["machines"][&a_id]["active_profile"], "laptop",
        "{backend}"
    );
    assert_ne!(
        record["machines"][&a_id]["config_path"], "/elsewhere",
        "{backend}"
    );
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".greeting")).unwrap(),
        "hello from lap\n",
        "{backend}: the laptop profile applied"
    );
}

/// The ids of machine `m`'s entries in a record's (or a state's) history.
fn entries_of(history: &Value, m: &Machine) -> Vec<String> {
    history
        .as_array()
        .unwrap_or_else(|| panic!("no history: {history}"))
        .iter()
        .filter(|e| e["machine_id"] == m.id().as_str())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// 7. Retention: a sync with `--history-limit 3` keeps A's newest three
///    entries in the record and prunes the rest for good: B, whose state
///    still holds them, syncs and brings none back; A's later sync with
///    the default limit does not either; B's own entries all stay. On etcd
///    A's pruned entries' keys are deleted. Then both keep three over
///    rounds of apply and sync, and no sync is refused.
fn history_retention(f: &Fleet) {
    let backend = f.name();
    let (a, b) = f.two_synced();
    for i in 0..5 {
        std::fs::write(a.sb.home().join(".bashrc"), format!("edit {i}\n")).unwrap();
        a.ok(&["apply", "--yes"]);
    }
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    let a_before = entries_of(&f.record()["history"], &a);
    assert!(a_before.len() >= 6, "{backend}: {a_before:?}");
    let b_own = entries_of(&b.state()["history"], &b);
    assert!(
        a_before
            .iter()
            .all(|id| ids(&b.state()["history"]).contains(id)),
        "{backend}: B holds all of A's entries before A prunes"
    );

    a.ok(&["--history-limit", "3", "sync"]);
    let record = f.record();
    let kept = entries_of(&record["history"], &a);
    assert_eq!(kept.len(), 3, "{backend}: {kept:?}");
    // The newest three of what A had (entries are ordered by time, and
    // A's clock went forward), and the floor is the oldest kept one's serial.
    let newest: Vec<String> = a_before[a_before.len() - 3..].to_vec();
    assert_eq!(kept, newest, "{backend}");
    let floor = record["machines"][a.id()]["history_from_serial"].clone();
    let oldest_kept = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == kept[0].as_str())
        .unwrap()["serial"]
        .clone();
    assert_eq!(floor, oldest_kept, "{backend}");
    assert_eq!(record["version"], 3, "{backend}: a floor is version 3");
    let pruned: Vec<&String> = a_before.iter().filter(|id| !kept.contains(id)).collect();
    if let Fleet::Etcd(w) = f {
        let keys = w.etcd.count_keys(&format!("/stead/v1/history/{}/", a.id()));
        assert_eq!(keys, Some(3), "{backend}: A's pruned keys are deleted");
    }

    b.ok(&["sync"]);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    for (place, history) in [
        ("the record", f.record()["history"].clone()),
        ("A's state", a.state()["history"].clone()),
        ("B's state", b.state()["history"].clone()),
    ] {
        let now = ids(&history);
        for id in &pruned {
            assert!(!now.contains(id), "{backend}: {id} came back into {place}");
        }
    }
    assert_eq!(entries_of(&f.record()["history"], &a), kept, "{backend}");
    let b_now = entries_of(&f.record()["history"], &b);
    assert!(
        b_own.iter().all(|id| b_now.contains(id)),
        "{backend}: B lost an entry of its own: {b_own:?} against {b_now:?}"
    );

    // Steady state: both keep three, each sync adds entries and prunes as
    // many, and no sync is refused for the other's pruning.
    for round in 0..3 {
        for (m, file) in [(&a, ".bashrc"), (&b, ".greeting")] {
            std::fs::write(m.sb.home().join(file), format!("round {round}\n")).unwrap();
            m.ok(&["apply", "--yes"]);
            m.ok(&["--history-limit", "3", "sync"]);
        }
    }
    let record = f.record();
    for m in [&a, &b] {
        assert_eq!(entries_of(&record["history"], m).len(), 3, "{backend}");
        if let Fleet::Etcd(w) = f {
            let keys = w.etcd.count_keys(&format!("/stead/v1/history/{}/", m.id()));
            assert_eq!(keys, Some(3), "{backend}: {}'s history keys", m.id());
        }
    }
}
