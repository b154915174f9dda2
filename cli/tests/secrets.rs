//! Generated secrets (`[secret.NAME]`, `${secret.NAME}` in a file's
//! content): the value exists only age-encrypted in the state dir and in
//! its target file, never in plans, JSON, the journal, the state record,
//! backups or saved plans; Debian's `age` decrypts it with the machine's
//! identity; a second apply rewrites nothing; a killed apply never leaves a
//! target holding a value the store does not.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Repo;
use stead_lib::secret::Secrets;

const MANIFEST: &str = r#"
[secret.db]
length = 40
notify = ["exec.reload"]

[file.pgpass]
path = "~/.pgpass"
content = "localhost:5432:*:me:${secret.db}\n"

[exec.reload]
command = "true"
refresh_only = true
"#;

/// The value in `~/.pgpass` (after the last `:`).
fn target_value(r: &Repo) -> String {
    let text = fs::read_to_string(r.path(".pgpass")).expect("the target exists");
    text.trim_end()
        .rsplit(':')
        .next()
        .expect("a value")
        .to_string()
}

/// The value the store holds, decrypted with the machine's identity.
fn stored_value(r: &Repo) -> Option<String> {
    let secrets = Secrets::open(&r.sb.layout(), false).expect("open the store");
    secrets
        .value(stead_lib::secret::Scope::Machine, "db")
        .expect("the stored secret decrypts")
        .map(|v| String::from_utf8(v.expose().to_vec()).expect("utf-8"))
}

/// Every regular file below `dir` (links not followed).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_below(&p));
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out
}

/// The files below `dirs` whose bytes contain `needle`.
fn holding(dirs: &[&Path], needle: &str) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| files_below(d))
        .filter(|p| {
            fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

/// Runs stead and keeps both outputs for the final search.
fn run(r: &Repo, outputs: &mut Vec<String>, args: &[&str]) -> i32 {
    let (code, out, err) = r.run(args);
    outputs.push(format!("$ stead {}\n{out}\n{err}", args.join(" ")));
    code
}

#[test]
fn the_value_appears_only_in_its_target_through_apply_edit_reapply_and_rotate() {
    let r = Repo::new(MANIFEST);
    let mut outputs = Vec::new();
    for args in [&["plan"][..], &["--json", "plan"], &["apply", "--yes"]] {
        assert_eq!(run(&r, &mut outputs, args), 0, "{}", outputs.join("\n"));
    }
    let first = target_value(&r);
    assert_eq!(first.len(), 40);
    assert!(first.chars().all(|c| c.is_ascii_alphanumeric()), "{first}");
    assert_eq!(stored_value(&r).as_deref(), Some(first.as_str()));
    let mode = fs::metadata(r.path(".pgpass"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a new secret-bearing file is private");

    // Edited by hand: the plan says so without a diff, apply restores it
    // and keeps the edit in an encrypted backup.
    let edited = format!("localhost:5432:*:me:{first}\n# edited by hand\n");
    fs::write(r.path(".pgpass"), &edited).unwrap();
    let plan_file = r.sb.home().join("saved.plan");
    for args in [
        &["plan"][..],
        &["--json", "plan"],
        &["state", "check-drift"],
        &["--json", "state", "check-drift"],
        &["status"],
        &["--json", "status"],
        &["plan", "--out", plan_file.to_str().unwrap()],
    ] {
        run(&r, &mut outputs, args);
    }
    let plan = &outputs[outputs.len() - 7];
    assert!(
        plan.contains("~ file.pgpass") && plan.contains("(sensitive content hidden)"),
        "{plan}"
    );
    assert_eq!(run(&r, &mut outputs, &["--json", "apply", "--yes"]), 0);
    assert_eq!(target_value(&r), first, "restored, not regenerated");
    let backups = files_below(&r.sb.state_dir().join("backups"));
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].to_string_lossy().ends_with(".pgpass.age"));

    // Rotation: a new value, the file rewritten, the reload refreshed.
    assert_eq!(
        run(&r, &mut outputs, &["secret", "rotate", "db", "--yes"]),
        0,
        "{}",
        outputs.join("\n")
    );
    let rotated = outputs.last().unwrap();
    assert!(rotated.contains("exec.reload ran"), "{rotated}");
    let second = target_value(&r);
    assert_ne!(second, first);
    assert_eq!(stored_value(&r).as_deref(), Some(second.as_str()));
    run(&r, &mut outputs, &["--json", "apply", "--yes"]);

    // The search: outputs, the state dir (record, journal, stat cache,
    // backups, secrets), the config repo, the saved plan, the home.
    let everything = outputs.join("\n");
    for value in [&first, &second] {
        assert!(
            !everything.contains(value.as_str()),
            "a value was printed:\n{everything}"
        );
    }
    let state_dir = r.sb.state_dir();
    let dirs: [&Path; 3] = [&state_dir, r.config.path(), r.home()];
    assert!(
        holding(&dirs, &first).is_empty(),
        "the old value is still somewhere"
    );
    assert_eq!(
        holding(&dirs, &second),
        vec![r.path(".pgpass")],
        "the value is only in its target"
    );
    let state = fs::read_to_string(r.sb.state_file()).unwrap();
    assert!(state.contains("secret-blake3:"), "{state}");
}

#[test]
fn debian_age_decrypts_the_stored_secret_with_the_identity_and_an_admin_key() {
    for tool in ["age", "age-keygen"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "`{tool}` is needed (apt-get install age; .ci/run does)"
        );
    }
    let r = Repo::new("[secret.db]\n");
    let admin_key = r.config.path().join("admin.key");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&admin_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let admin_pub = String::from_utf8(keygen.stderr)
        .unwrap()
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    r.write_manifest(&MANIFEST.replace(
        "length = 40\n",
        &format!("length = 40\nrecipients = [\"{admin_pub}\"]\n"),
    ));
    r.ok(&["apply", "--yes"]);
    let value = target_value(&r);
    let cipher = r.sb.state_dir().join("secrets/db.age");
    for identity in [r.sb.state_dir().join("identity.age"), admin_key] {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&identity)
            .arg(&cipher)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    }
    let mode = fs::metadata(r.sb.state_dir().join("identity.age"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_second_apply_generates_nothing_and_keeps_the_ciphertext_byte_for_byte() {
    let r = Repo::new(MANIFEST);
    r.ok(&["apply", "--yes"]);
    let cipher = r.sb.state_dir().join("secrets/db.age");
    let before = fs::read(&cipher).unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(fs::read(&cipher).unwrap(), before);
    // A new admin recipient encrypts the same value again.
    let admin = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    r.write_manifest(&MANIFEST.replace(
        "length = 40\n",
        &format!("length = 40\nrecipients = [\"{admin}\"]\n"),
    ));
    let value = target_value(&r);
    let out = r.ok(&["apply", "--yes"]);
    assert!(out.contains("recipients changed"), "{out}");
    assert_ne!(fs::read(&cipher).unwrap(), before);
    assert_eq!(stored_value(&r).as_deref(), Some(value.as_str()));
    assert_eq!(target_value(&r), value, "the target did not change");
}

#[test]
fn a_killed_apply_never_leaves_a_target_holding_a_value_the_store_does_not() {
    let iterations: u64 = std::env::var("STEAD_SECRET_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = 0x5EC2E7 ^ u64::from(std::process::id());
    let mut killed_mid_run = 0;
    for _ in 0..iterations {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let r = Repo::new(MANIFEST);
        let state = r.sb.state_dir();
        let mut child = r.spawn(
            &["--state-dir", state.to_str().unwrap(), "apply", "--yes"],
            Stdio::null(),
            Stdio::null(),
        );
        std::thread::sleep(Duration::from_micros(seed % 30_000));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // The invariant at the kill: a target exists only with the value
        // the store holds (the ciphertext is durable before any write).
        if r.path(".pgpass").exists() {
            assert_eq!(stored_value(&r), Some(target_value(&r)));
        }
        let held = stored_value(&r);
        r.ok(&["apply", "--yes"]);
        let value = stored_value(&r).expect("a value after the next apply");
        if let Some(held) = held {
            assert_eq!(value, held, "a kept value was generated again");
        }
        assert_eq!(target_value(&r), value);
        let temps = holding(&[&state], ".tmp-");
        assert!(temps.is_empty(), "{temps:?}");
    }
    eprintln!("{iterations} iterations, {killed_mid_run} killed while running");
}

#[test]
fn a_secret_outside_content_a_bad_scope_and_a_bad_name_are_load_errors_with_their_place() {
    let r = Repo::new(
        "[secret.db]\n\n[exec.x]\ncommand = \"echo ${secret.db}\"\n\n[secret.shared]\nscope = \"fleet\"\n\n[secret.\"../up\"]\n",
    );
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "`${secret.db}` is a value kept encrypted: it can be used only in a file's `content`"
        ),
        "{err}"
    );
    assert!(err.contains("stead.toml:4:"), "{err}");
    assert!(
        err.contains("`scope` must be \"machine\" or \"lineage\", not \"fleet\""),
        "{err}"
    );
    assert!(err.contains("stead.toml:7:"), "{err}");
    assert!(
        err.contains("a secret's name may hold only letters, digits"),
        "{err}"
    );
    assert!(err.contains("stead.toml:9:"), "{err}");
}

#[test]
fn a_sensitive_file_records_a_keyed_checksum_and_its_backup_is_encrypted() {
    let r = Repo::new(
        "[file.token]\npath = \"~/.token\"\ncontent = \"tok-3141592653\\n\"\nsensitive = true\n",
    );
    r.ok(&["apply", "--yes"]);
    let state = fs::read_to_string(r.sb.state_file()).unwrap();
    assert!(state.contains("\"~/.token\": \"secret-blake3:"), "{state}");
    fs::write(r.path(".token"), "tok-edited-2718281828\n").unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(!out.contains("2718281828"), "{out}");
    let backups = files_below(&r.sb.state_dir().join("backups"));
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].to_string_lossy().ends_with(".token.age"));
    assert!(holding(&[&r.sb.state_dir()], "2718281828").is_empty());
    assert!(holding(&[&r.sb.state_dir()], "3141592653").is_empty());
}

/// An exec with `output = true` whose stdout is the first line of `value`
/// in the config repo, and a file made from it.
fn output_manifest(value: &Path, guard: &str) -> String {
    format!(
        "[exec.gen]\ncommand = \"cat {}\"\noutput = true\n{guard}\n\
         [file.tok]\npath = \"~/.token\"\ncontent = \"token=${{exec.gen.stdout}}\"\n",
        value.display()
    )
}

#[test]
fn an_exec_output_flows_into_a_file_and_is_planned_again_when_it_changes() {
    let r = Repo::new("");
    let value = r.config.path().join("value.txt");
    fs::write(&value, "out-4f1c9e\n").unwrap();
    r.write_manifest(&output_manifest(&value, ""));
    let first = r.ok(&["apply", "--yes"]);
    assert!(
        first.contains("exec.gen's output, made before it is written"),
        "{first}"
    );
    assert_eq!(
        fs::read_to_string(r.path(".token")).unwrap(),
        "token=out-4f1c9e\n"
    );
    // The exec runs on every apply (no guard): the file waits for it and
    // is left alone when the output is the same.
    let again = r.ok(&["apply", "--yes"]);
    assert!(
        again.contains("content from exec.gen's output, known after it runs"),
        "{again}"
    );
    assert!(
        again.contains("its content came out as it already was"),
        "{again}"
    );
    // A new output rewrites the file in the same apply.
    fs::write(&value, "out-77aa01\n").unwrap();
    let changed = r.ok(&["--json", "apply", "--yes"]);
    assert_eq!(
        fs::read_to_string(r.path(".token")).unwrap(),
        "token=out-77aa01\n"
    );
    // The output is kept only encrypted: not in the journal, the state, the
    // outputs of stead, nor anywhere in the state dir.
    for v in ["out-4f1c9e", "out-77aa01"] {
        assert!(!first.contains(v) && !again.contains(v) && !changed.contains(v));
        assert!(
            holding(&[&r.sb.state_dir()], v).is_empty(),
            "{v} in the state dir"
        );
    }
    let kept = Secrets::open(&r.sb.layout(), false)
        .unwrap()
        .output("exec.gen")
        .unwrap()
        .unwrap();
    assert_eq!(kept.expose(), b"out-77aa01\n");
}

#[test]
fn a_guarded_exec_that_does_not_run_leaves_its_file_planned_from_the_kept_output() {
    let r = Repo::new("");
    let value = r.config.path().join("value.txt");
    fs::write(&value, "kept-1\n").unwrap();
    let marker = r.home().join(".gen-done");
    r.write_manifest(&output_manifest(
        &value,
        &format!("creates = \"{}\"\n", marker.display()),
    ));
    // The first run creates nothing at `creates`: make it by hand after.
    r.ok(&["apply", "--yes"]);
    fs::write(&marker, "").unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(out.contains("No changes"), "{out}");
    // Edited by hand: restored from the kept output, the exec not run.
    fs::write(r.path(".token"), "token=edited\n").unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(
        out.contains("~ file.tok") && !out.contains("exec.gen ran"),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(r.path(".token")).unwrap(),
        "token=kept-1\n"
    );
}

#[test]
fn an_output_reference_needs_output_true_and_a_files_content() {
    let r = Repo::new(
        "[exec.gen]\ncommand = \"echo x\"\n\n[file.a]\npath = \"~/a\"\ncontent = \"${exec.gen.stdout}\"\n",
    );
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`exec.gen` has no value to reference: declare `output = true` on it"),
        "{err}"
    );
    assert!(err.contains("stead.toml:6:"), "{err}");
    let r = Repo::new(
        "[exec.gen]\ncommand = \"echo x\"\noutput = true\n\n[exec.use]\ncommand = \"echo ${exec.gen.stdout}\"\n",
    );
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("it can be used only in a file's `content`"),
        "{err}"
    );
}

#[test]
fn settings_secret_recipients_can_decrypt_every_secret_and_a_bad_one_is_a_load_error() {
    let r = Repo::new("");
    let admin = age_keygen_pair(r.config.path());
    r.write_manifest(&format!(
        "[settings]\nsecret_recipients = [\"{}\"]\n\n[secret.a]\n\n[secret.b]\nlength = 8\n",
        admin.1
    ));
    r.ok(&["apply", "--yes"]);
    for name in ["a", "b"] {
        let cipher = r.sb.state_dir().join(format!("secrets/{name}.age"));
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&admin.0)
            .arg(&cipher)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let value = Secrets::open(&r.sb.layout(), false)
            .unwrap()
            .value(stead_lib::secret::Scope::Machine, name)
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout, value.expose());
    }
    r.write_manifest("[settings]\nsecret_recipients = [\"age1nope\"]\n\n[secret.a]\n");
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("\"age1nope\" is not an age recipient"),
        "{err}"
    );
    assert!(err.contains("stead.toml:2:"), "{err}");
}

/// A key pair made by Debian's `age-keygen` in `dir`: (identity file,
/// recipient).
fn age_keygen_pair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("admin.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen is installed (.ci/run installs age)");
    assert!(out.status.success());
    let public = String::from_utf8(out.stderr)
        .unwrap()
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    (key, public)
}

#[test]
fn a_template_that_names_a_secret_is_written_with_its_value_and_never_renders_it() {
    let r = Repo::new("");
    r.write_source(
        "app.conf.j2",
        "user = {{ user }}\npassword = ${secret.app}\nshell = ${HOME} $${secret.app}\n",
    );
    r.write_manifest(
        "[secret.app]\nlength = 20\n\n[file.app]\npath = \"~/app.conf\"\ntemplate = \"app.conf.j2\"\n",
    );
    let mut outputs = vec![r.ok(&["plan"]), r.ok(&["apply", "--yes"])];
    let text = fs::read_to_string(r.path("app.conf")).unwrap();
    let secrets = Secrets::open(&r.sb.layout(), false).unwrap();
    let value = secrets
        .value(stead_lib::secret::Scope::Machine, "app")
        .unwrap()
        .unwrap();
    let value = String::from_utf8(value.expose().to_vec()).unwrap();
    assert!(text.contains(&format!("password = {value}\n")), "{text}");
    // Only `${secret.NAME}` is a reference in a template; the rest is text.
    assert!(text.contains("shell = ${HOME} $${secret.app}\n"), "{text}");
    let mode = fs::metadata(r.path("app.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    outputs.push(r.ok(&["apply", "--yes"]));
    assert!(outputs[2].contains("No changes"), "{}", outputs[2]);
    // A template change is planned without showing the value or a diff.
    r.write_source(
        "app.conf.j2",
        "user = {{ user }}\npassword = ${secret.app}\nport = 5\n",
    );
    outputs.push(r.ok(&["plan"]));
    assert!(
        outputs[3].contains("(sensitive content hidden)"),
        "{}",
        outputs[3]
    );
    outputs.push(r.ok(&["--json", "plan"]));
    for out in &outputs {
        assert!(!out.contains(&value), "{out}");
    }
    // A secret the template names must be declared.
    r.write_source("bad.j2", "${secret.nope}\n");
    r.write_manifest("[file.bad]\npath = \"~/bad\"\ntemplate = \"bad.j2\"\n");
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the template uses `${secret.nope}`, which is not declared"),
        "{err}"
    );
}
