//! A plan made from a state record read in part (as a drift repair reads
//! it) answers every question a plan asks of the record as the record read
//! whole does, also those that read absence as an answer: a path another
//! resource's record owns, a path recorded through a link to a directory,
//! a path no record owns.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use stead_lib::checksum::Checksum;
use stead_lib::graph::Graph;
use stead_lib::machine::MachineInfo;
use stead_lib::manifest::{LoadOptions, Manifest};
use stead_lib::plan::{self, Plan};
use stead_lib::state::{ResourceRecord, State};

fn record(kind: &str, key: &str) -> ResourceRecord {
    ResourceRecord {
        kind: kind.into(),
        keys: vec![key.into()],
        serial: 1,
        names: Default::default(),
    }
}

fn sum_of(text: &str) -> Checksum {
    Checksum::of(&format!(
        "blake3:{}",
        blake3::hash(text.as_bytes()).to_hex()
    ))
}

fn plan(home: &Path, repo: &Path, text: &str, state: &State) -> Result<Plan, String> {
    let m = Manifest::parse(
        text,
        &repo.join("stead.toml"),
        repo,
        &LoadOptions {
            home: home.to_path_buf(),
            profile: None,
            kinds: &stead_lib::resource::registry::REGISTRY,
        },
    )
    .unwrap();
    let g = Graph::build(&m).unwrap();
    let all: HashSet<String> = m.resources.iter().map(|r| r.id.clone()).collect();
    let secrets = stead_lib::secret::Secrets::unavailable();
    plan::make_scoped(
        &m,
        &g,
        state,
        false,
        2,
        None,
        &HashSet::new(),
        &secrets,
        Some(&all),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn a_plan_from_the_record_read_in_part_is_the_plan_from_the_whole_record() {
    let root = tempfile::tempdir().unwrap();
    let (home, repo) = (root.path().join("home"), root.path().join("repo"));
    fs::create_dir_all(home.join("real")).unwrap();
    fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(home.join("real"), home.join("via")).unwrap();
    for (name, text) in [
        ("moved", "moved\n"),
        ("real/linked", "old\n"),
        ("edited", "by hand\n"),
    ] {
        fs::write(home.join(name), text).unwrap();
    }
    let mut state = State::new(MachineInfo::current("m"));
    // A path an earlier resource of another name owns: adopted by the
    // resource that now declares it only because some record owns it.
    state
        .resources
        .insert("file.old_name".into(), record("file", "~/moved"));
    state.checksums.insert("~/moved".into(), sum_of("moved\n"));
    // Recorded through a link to a directory, and changed by hand since:
    // found by its real key, so the edit is seen (and backed up).
    state
        .resources
        .insert("file.linked".into(), record("file", "~/via/linked"));
    state
        .checksums
        .insert("~/via/linked".into(), sum_of("as written\n"));
    // Owned and changed by hand since: backed up before it is replaced.
    state
        .resources
        .insert("file.edited".into(), record("file", "~/edited"));
    state
        .checksums
        .insert("~/edited".into(), sum_of("as written\n"));
    for i in 0..50 {
        let key = format!("~/other/f{i}");
        state.checksums.insert(key.clone(), sum_of("x"));
        state
            .resources
            .insert(format!("file.other{i}"), record("file", &key));
    }
    let text = r#"
[file.new_name]
path = "~/moved"
content = "moved\n"

[file.linked]
path = "~/real/linked"
content = "new\n"

[file.edited]
path = "~/edited"
content = "declared\n"

[file.stranger]
path = "~/real/stranger"
content = "mine\n"
"#;
    let part = stead_lib::state::read_in_part(serde_json::to_string(&state).unwrap()).unwrap();
    assert!(part.unread.is_partial());
    assert!(part.resources.is_empty() && part.checksums.is_empty());
    let whole = plan(&home, &repo, text, &state).unwrap();
    assert_eq!(plan(&home, &repo, text, &part).unwrap(), whole);
    let reasons: Vec<String> = whole
        .changes
        .iter()
        .map(|c| format!("{} {:?} {}", c.id, c.action, c.reason))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("file.new_name Unchanged")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("file.linked Update") && r.contains("by hand")),
        "recorded through the link: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("file.edited Update") && r.contains("by hand")),
        "{reasons:?}"
    );
    // A file no record owns is a conflict either way.
    fs::write(home.join("real/stranger"), "theirs\n").unwrap();
    let whole = plan(&home, &repo, text, &state).unwrap();
    let stranger = whole
        .changes
        .iter()
        .find(|c| c.id == "file.stranger")
        .unwrap();
    assert!(stranger.reason.contains("does not own"), "{stranger:?}");
    assert_eq!(plan(&home, &repo, text, &part).unwrap(), whole);
}
