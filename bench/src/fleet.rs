//! `stead-bench etcd`: the scale benchmark of issue 20, a fleet syncing its
//! shared record on a real one-member etcd started on loopback
//! (`stead_testkit::etcd`), in one run:
//!
//! * N simulated machines, one thread each with its own config dir and
//!   [`EtcdBackend`], each doing K syncs at once (refresh, update, fold its
//!   own machine record and a history entry into the working copy, commit,
//!   publish on the revision it read): wall time, syncs/s, and etcd's own
//!   counters (`/metrics`, read before and after) per sync. A refused
//!   publish is a compare-and-set retry; stead writes only per-machine keys,
//!   so any retry fails the benchmark.
//! * The same syncs, each under its machine's own lock (`hybrid`: take,
//!   publish fenced on it, release), on a lineage of its own: its wall time
//!   beside the unlocked one. No machine's lock is another's, so a sync
//!   that could not take its own at once fails the benchmark.
//! * The baseline, the same N × K syncs on the design stead avoids (and what
//!   a git remote amounts to): the whole record in one key, read, changed
//!   and written back with `If(mod_revision == seen)`, retried on failure.
//! * `stead fleet status --json` (the release binary, a child process) over
//!   R machine records, beside one range read of the prefix parsed into a
//!   record (`keys::from_keys`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use stead_lib::lock::{LockHolder, LockInfo, LockType};
use stead_lib::state::HistoryEntry;
use stead_lib::sync::SyncError;
use stead_lib::sync::backend::{
    Acquired, Backend, ConfigSource, HeldRemote, LockScope, Published, RecordStore, RemoteLocker,
};
use stead_lib::sync::etcd::client::Cluster;
use stead_lib::sync::etcd::{EtcdBackend, EtcdConfig, keys};
use stead_lib::sync::shared::{self, MachineRecord, SharedRecord};
use stead_testkit::etcd::Etcd;

use crate::{Env, Result, Workspace, load_average};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Simulated machines syncing at once (one thread each).
    pub machines: usize,
    /// Syncs per machine.
    pub syncs: usize,
    /// Machine records `fleet status` reads.
    pub records: usize,
    /// Runs of the `fleet status` case (the median is reported).
    pub repeat: usize,
}

/// Where the concurrent syncs' lineage lives.
const SYNC_PREFIX: &str = "/bench/sync/";
/// Where the lineage of the syncs under each machine's own lock lives.
const LOCKED_PREFIX: &str = "/bench/sync-locked/";
/// The baseline's one key.
const ONE_KEY: &str = "/bench/one-key/record";
/// Where the `fleet status` lineage lives.
const FLEET_PREFIX: &str = "/bench/fleet/";
/// Each client's call timeout: 2 cores serve N clients and etcd.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Machines per publish when writing the fleet: 3 keys each (member,
/// machine record, one history entry) stay under etcd's default
/// `--max-txn-ops` of 128.
const BATCH: usize = 40;
/// Managed paths per machine record (their keyed checksums).
const PATHS: usize = 8;

/// etcd's counters, from its Prometheus `/metrics` on the client port.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// gRPC calls of the KV service handled (Range, Txn, Put, ...).
    rpcs: f64,
    /// MVCC ranges: reads, a transaction's reads and each of its compares.
    ranges: f64,
    /// MVCC puts (keys written).
    puts: f64,
    /// Bytes put.
    put_bytes: f64,
    /// Bytes sent to clients over gRPC.
    sent_bytes: f64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            rpcs: self.rpcs - before.rpcs,
            ranges: self.ranges - before.ranges,
            puts: self.puts - before.puts,
            put_bytes: self.put_bytes - before.put_bytes,
            sent_bytes: self.sent_bytes - before.sent_bytes,
        }
    }
}

/// Reads the counters from `http://127.0.0.1:<port>/metrics`.
fn counters(port: u16) -> Result<Counters> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let mut c = Counters::default();
    let mut found = std::collections::BTreeSet::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let slot = match name {
            "grpc_server_handled_total" if series.contains("grpc_service=\"etcdserverpb.KV\"") => {
                &mut c.rpcs
            }
            "etcd_mvcc_range_total" => &mut c.ranges,
            "etcd_mvcc_put_total" => &mut c.puts,
            "etcd_debugging_mvcc_total_put_size_in_bytes" => &mut c.put_bytes,
            "etcd_network_client_grpc_sent_bytes_total" => &mut c.sent_bytes,
            _ => continue,
        };
        *slot += value.parse::<f64>()?;
        found.insert(name);
    }
    // The KV service's series appear only once a call was made.
    if found.iter().filter(|n| n.starts_with("etcd_")).count() < 4 {
        return Err(format!(
            "etcd's /metrics on port {port} lacks etcd_mvcc_{{range,put}}_total, \
             etcd_debugging_mvcc_total_put_size_in_bytes or etcd_network_client_grpc_sent_bytes_total"
        )
        .into());
    }
    Ok(c)
}

/// The port of `http://127.0.0.1:<port>` (the fixture's first endpoint).
fn port_of(endpoints: &str) -> Result<u16> {
    let first = endpoints.split(',').next().unwrap_or_default();
    let port = first
        .rsplit_once(':')
        .map(|(_, p)| p.trim_end_matches('/'))
        .ok_or_else(|| format!("no port in the endpoint {first}"))?;
    Ok(port.parse()?)
}

/// `t` as RFC 3339 in UTC (the record's times), without a date library.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// Machine `id`'s record as of `now`: a profile, a config path, both times,
/// [`PATHS`] keyed checksums and no drift.
fn machine_record(id: &str, now: &str) -> Result<MachineRecord> {
    let checksums: BTreeMap<String, String> = (0..PATHS)
        .map(|k| {
            let sum = blake3::hash(format!("{id}/{k}").as_bytes());
            (
                format!("/home/bench/.config/app{k}/config"),
                format!("keyed-blake3:{}", sum.to_hex()),
            )
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "hostname": format!("host-{id}"),
        "os": "linux",
        "arch": "x86_64",
        "user": "bench",
        "active_profile": "default",
        "config_path": "/home/bench/dotfiles",
        "last_apply": now,
        "last_sync": now,
        "checksums": checksums,
        "drift": 0,
    }))?)
}

/// One history entry of machine `id`.
fn history_entry(entry: &str, id: &str, serial: u64, now: &str) -> Result<HistoryEntry> {
    Ok(serde_json::from_value(serde_json::json!({
        "id": entry,
        "operation": "sync",
        "timestamp": now,
        "machine_id": id,
        "user": "bench",
        "serial": serial,
    }))?)
}

/// Folds machine `id`'s sync number `k` into `record`: its machine record,
/// its membership, and (once) a history entry at a raised serial.
fn fold(record: &mut SharedRecord, id: &str, k: usize) -> Result<()> {
    let now = rfc3339(SystemTime::now());
    record
        .machines
        .insert(id.to_string(), machine_record(id, &now)?);
    if !record.lineage.machines.iter().any(|m| m == id) {
        record.lineage.machines.push(id.to_string());
        record.lineage.machines.sort();
    }
    let entry = format!("{id}-sync-{k}");
    if !record.history.iter().any(|e| e.id == entry) {
        let serial = record.lineage.serial + 1;
        record
            .history
            .push(history_entry(&entry, id, serial, &now)?);
        record.lineage.parent_serial = Some(record.lineage.serial);
        record.lineage.serial = serial;
    }
    Ok(())
}

fn machine_id(i: usize) -> String {
    format!("bench-machine-{i:04}")
}

/// One case of concurrent syncs, measured.
#[derive(Debug)]
struct Phase {
    wall: Duration,
    syncs: usize,
    retries: usize,
    ops: Counters,
    /// Each sync's time, from its first read to its write landing.
    latencies: Vec<Duration>,
}

/// Runs `machines` threads: each sets up (`setup`, not timed), then all
/// start together and run `work` on what they set up; etcd's counters are
/// read while they wait. Each thread returns its retries and sync times.
fn concurrently<S>(
    port: u16,
    machines: usize,
    setup: impl Fn(usize) -> Result<S> + Sync,
    work: impl Fn(usize, S) -> Result<(usize, Vec<Duration>)> + Sync,
) -> Result<Phase> {
    let ready = Barrier::new(machines + 1);
    let go = Barrier::new(machines + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..machines)
            .map(|i| {
                let (ready, go, setup, work) = (&ready, &go, &setup, &work);
                std::thread::Builder::new()
                    .name(format!("machine-{i}"))
                    .spawn_scoped(scope, move || {
                        // Every thread reaches both barriers, set up or not.
                        let state = setup(i);
                        ready.wait();
                        go.wait();
                        work(i, state?)
                    })
            })
            .collect::<std::io::Result<_>>()?;
        ready.wait();
        let before = counters(port);
        go.wait();
        let start = Instant::now();
        let mut retries = 0;
        let mut latencies = Vec::new();
        let mut failed = None;
        for h in handles {
            match h.join() {
                Ok(Ok((r, l))) => {
                    retries += r;
                    latencies.extend(l);
                }
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some("a machine's thread panicked".into())),
            }
        }
        let wall = start.elapsed();
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Phase {
            wall,
            syncs: latencies.len(),
            retries,
            ops: counters(port)?.since(before?),
            latencies,
        })
    })
}

/// A temp dir for one simulated machine.
fn machine_dir(tmp: &Path, i: usize) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("stead-bench-etcd-m{i:04}-"))
        .tempdir_in(tmp)?)
}

/// Starts the lineage under `config`'s prefix from `record`, published by
/// one machine with its own config dir.
fn seed(tmp: &Path, config: &EtcdConfig, record: &SharedRecord) -> Result<()> {
    let dir = machine_dir(tmp, 9999)?;
    let b = EtcdBackend::new(dir.path(), None, config.clone(), TIMEOUT)?;
    b.refresh()?;
    b.write_working(record)?;
    b.commit(&[], "stead-bench: seed")?;
    match b.publish(b.remote_revision()?.as_ref())? {
        Published::Pushed(_) => Ok(()),
        Published::NothingNew => Err("the seed record was not published".into()),
    }
}

/// The seed machine's record: the lineage with one machine and one entry.
fn seed_record(lineage: &str) -> Result<SharedRecord> {
    let mut record = SharedRecord::new(lineage);
    fold(&mut record, "bench-seed", 0)?;
    Ok(record)
}

/// The lineage under `prefix`, as one range read gives it.
fn read_lineage(cluster: &Cluster, prefix: &str) -> Result<SharedRecord> {
    let range = cluster.range(prefix)?;
    let keys: BTreeMap<String, Vec<u8>> = range
        .kvs
        .into_iter()
        .filter_map(|(k, v, ..)| {
            let rel = k.strip_prefix(prefix)?;
            (!rel.starts_with(keys::LOCKS)).then(|| (rel.to_string(), v))
        })
        .collect();
    keys::from_keys(prefix, &keys)?.ok_or_else(|| format!("no lineage under {prefix}").into())
}

/// Checks that `record` holds the seed and every machine's every sync.
fn check_complete(record: &SharedRecord, opts: &FleetOptions, what: &str) -> Result<()> {
    let machines = opts.machines + 1;
    let entries = opts.machines * opts.syncs + 1;
    if record.machines.len() != machines
        || record.lineage.machines.len() != machines
        || record.history.len() != entries
    {
        return Err(format!(
            "{what}: after the syncs the record has {} machine records, {} members and {} \
             history entries; expected {machines}, {machines} and {entries}",
            record.machines.len(),
            record.lineage.machines.len(),
            record.history.len()
        )
        .into());
    }
    Ok(())
}

/// N machines × K syncs through stead's etcd backend; with `locked`, each
/// sync under its machine's own lock (`hybrid`), which no other machine's
/// sync may keep it from: one that would have to wait fails the run.
fn stead_syncs(etcd: &Etcd, tmp: &Path, opts: &FleetOptions, locked: bool) -> Result<Phase> {
    let prefix = if locked { LOCKED_PREFIX } else { SYNC_PREFIX };
    let config = EtcdConfig::new(&etcd.endpoints(), Some(prefix))?;
    seed(tmp, &config, &seed_record("lineage-stead-bench-sync")?)?;
    let phase = concurrently(
        port_of(&etcd.endpoints())?,
        opts.machines,
        |i| {
            let dir = machine_dir(tmp, i)?;
            let backend = EtcdBackend::new(dir.path(), None, config.clone(), TIMEOUT)?;
            // Joining: the first read, as a clone's (not timed).
            backend.refresh()?;
            let locker = locked
                .then(|| backend.locker(&LockScope::Machine(machine_id(i))))
                .flatten();
            Ok((dir, backend, locker))
        },
        |i, (_dir, b, locker)| {
            let id = machine_id(i);
            let (mut retries, mut times) = (0, Vec::new());
            for k in 0..opts.syncs {
                let start = Instant::now();
                let held = match &locker {
                    Some(locker) => Some(take_own_lock(locker.as_ref(), &id)?),
                    None => None,
                };
                loop {
                    b.refresh()?;
                    b.update("stead-bench: sync")?;
                    let mut record = b.read_working()?.ok_or("no working copy")?;
                    fold(&mut record, &id, k)?;
                    b.write_working(&record)?;
                    b.commit(&[], "stead-bench: sync")?;
                    match b.publish(b.remote_revision()?.as_ref()) {
                        Ok(_) => break,
                        Err(SyncError::PublishRejected { .. }) => retries += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                if let (Some(locker), Some(held)) = (&locker, held) {
                    locker.release(&held)?;
                }
                times.push(start.elapsed());
            }
            Ok((retries, times))
        },
    )?;
    let cluster = Cluster::new(&config.endpoints, TIMEOUT)?;
    check_complete(&read_lineage(&cluster, prefix)?, opts, "stead")?;
    Ok(phase)
}

/// Takes machine `id`'s own lock; another holder is an error, for no
/// other machine's sync may hold it.
fn take_own_lock(locker: &dyn RemoteLocker, id: &str) -> Result<HeldRemote> {
    let info = LockInfo {
        id: format!("bench-lock-{id}"),
        lock_type: LockType::Hybrid,
        operation: "sync".to_string(),
        machine: LockHolder {
            id: id.to_string(),
            hostname: id.to_string(),
            pid: std::process::id(),
            user: "bench".to_string(),
        },
        created_at: chrono::Utc::now(),
        expected_duration_seconds: 60,
        reason: None,
        state_serial: None,
        boot_id: None,
        pid_start_time: None,
    };
    match locker.acquire(&info, 60)? {
        Acquired::Taken(held) => Ok(held),
        other => Err(format!("machine {id} could not take its own lock: {other:?}").into()),
    }
}

/// The same syncs on one key holding the whole record, compare-and-set on
/// its mod revision.
fn one_key_syncs(etcd: &Etcd, opts: &FleetOptions) -> Result<Phase> {
    let endpoints = vec![etcd.endpoints()];
    let cluster = Cluster::new(&endpoints, TIMEOUT)?;
    let bytes = shared::to_bytes(&seed_record("lineage-stead-bench-one-key")?);
    cluster
        .txn_once(Txn::new().and_then([TxnOp::put(ONE_KEY, bytes, None)]))
        .map_err(|e| e.into_error())?;
    // The key and its mod revision.
    let read = |c: &Cluster| -> Result<(Vec<u8>, i64)> {
        let range = c.range(ONE_KEY)?;
        let (_, value, rev, ..) = range.kvs.into_iter().next().ok_or("the one key is gone")?;
        Ok((value, rev))
    };
    let phase = concurrently(
        port_of(&etcd.endpoints())?,
        opts.machines,
        |_| {
            let c = Cluster::new(&endpoints, TIMEOUT)?;
            // Connecting: the first read (not timed).
            read(&c)?;
            Ok(c)
        },
        |i, c| {
            let id = machine_id(i);
            let (mut retries, mut times) = (0, Vec::new());
            for k in 0..opts.syncs {
                let start = Instant::now();
                loop {
                    let (value, rev) = read(&c)?;
                    let mut record = shared::parse(&value, ONE_KEY)?;
                    fold(&mut record, &id, k)?;
                    let txn = Txn::new()
                        .when([Compare::mod_revision(ONE_KEY, CompareOp::Equal, rev)])
                        .and_then([TxnOp::put(ONE_KEY, shared::to_bytes(&record), None)]);
                    if c.txn_once(txn).map_err(|e| e.into_error())?.succeeded() {
                        break;
                    }
                    retries += 1;
                }
                times.push(start.elapsed());
            }
            Ok((retries, times))
        },
    )?;
    let (value, _) = read(&cluster)?;
    check_complete(&shared::parse(&value, ONE_KEY)?, opts, "one key")?;
    Ok(phase)
}

/// Writes `records` machine records (each a member with one history entry)
/// under [`FLEET_PREFIX`], [`BATCH`] machines per publish.
fn write_fleet(tmp: &Path, config: &EtcdConfig, records: usize) -> Result<()> {
    let dir = machine_dir(tmp, 9998)?;
    let b = EtcdBackend::new(dir.path(), None, config.clone(), TIMEOUT)?;
    b.refresh()?;
    let mut record = SharedRecord::new("lineage-stead-bench-fleet");
    let ids: Vec<String> = (0..records)
        .map(|i| format!("fleet-machine-{i:05}"))
        .collect();
    for batch in ids.chunks(BATCH) {
        for id in batch {
            fold(&mut record, id, 0)?;
        }
        b.write_working(&record)?;
        b.commit(&[], "stead-bench: fleet")?;
        if let Published::NothingNew = b.publish(b.remote_revision()?.as_ref())? {
            return Err("a batch of the fleet was not published".into());
        }
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The `p`th percentile (0..=100) of `v`.
fn percentile(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    let at = (v.len() * p / 100).min(v.len().saturating_sub(1));
    v.get(at).copied().unwrap_or_default()
}

/// `fleet status --json` over `records` machines (median of `repeat`)
/// and the baseline's range read and parse (median of `repeat`).
fn fleet_status(
    env: &Env,
    etcd: &Etcd,
    tmp: &Path,
    opts: &FleetOptions,
) -> Result<(Duration, Duration, usize)> {
    let config = EtcdConfig::new(&etcd.endpoints(), Some(FLEET_PREFIX))?;
    write_fleet(tmp, &config, opts.records)?;
    let ws = Workspace::new(env, "stead-bench-etcd-fleet-")?;
    config.write(&ws.config())?;
    // Once for its output: every machine listed.
    let out = Command::new(&env.stead)
        .arg("--home")
        .arg(ws.home())
        .arg("--state-dir")
        .arg(ws.state())
        .arg("--config")
        .arg(ws.config())
        .args(["--no-color", "--json", "fleet", "status"])
        .env("HOME", ws.env_home())
        .env("NO_COLOR", "1")
        .env_remove("STEAD_CONFIG")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "stead fleet status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let listed = doc["machines"].as_array().map_or(0, Vec::len);
    if listed != opts.records {
        return Err(format!(
            "stead fleet status listed {listed} machines, not {}",
            opts.records
        )
        .into());
    }
    let mut stead_times = Vec::new();
    let mut base_times = Vec::new();
    let cluster = Cluster::new(&config.endpoints, TIMEOUT)?;
    // Connecting (not timed): the baseline reads on a warm connection.
    cluster.range(FLEET_PREFIX)?;
    for _ in 0..opts.repeat.max(1) {
        stead_times.push(
            env.stead_expect(&ws, &["--json", "fleet", "status"], 0)?
                .wall,
        );
        let start = Instant::now();
        let record = read_lineage(&cluster, FLEET_PREFIX)?;
        base_times.push(start.elapsed());
        if record.machines.len() != opts.records {
            return Err(format!(
                "the range read found {} machines, not {}",
                record.machines.len(),
                opts.records
            )
            .into());
        }
    }
    Ok((median(stead_times), median(base_times), listed))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Measures and returns the Markdown table.
pub fn run(env: &Env, opts: &FleetOptions) -> Result<String> {
    if !stead_testkit::etcd::available() {
        return Err("etcd is not installed (apt-get install etcd-server)".into());
    }
    let load_start = load_average();
    // Dropped (its process killed, its dir removed) on every return.
    let etcd = Etcd::start(1);
    let tmp = tempfile::Builder::new()
        .prefix("stead-bench-etcd-")
        .tempdir_in(&env.tmp_root)?;
    let stead = stead_syncs(&etcd, tmp.path(), opts, false)?;
    if stead.retries > 0 {
        return Err(format!(
            "{} of stead's publishes were refused (compare-and-set retries on per-machine keys); \
             there must be none",
            stead.retries
        )
        .into());
    }
    let locked = stead_syncs(&etcd, tmp.path(), opts, true)?;
    if locked.retries > 0 {
        return Err(format!(
            "{} of stead's publishes under the machines' own locks were refused; there must be none",
            locked.retries
        )
        .into());
    }
    let base = one_key_syncs(&etcd, opts)?;
    let (status, range, listed) = fleet_status(env, &etcd, tmp.path(), opts)?;
    let load_end = load_average();

    let (n, k) = (opts.machines, opts.syncs);
    let rate = |p: &Phase| p.syncs as f64 / p.wall.as_secs_f64().max(1e-9);
    let per = |p: &Phase, x: f64| x / (p.syncs.max(1) as f64);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut t = String::from(
        "| case | stead (per-machine keys) | baseline (one key, CAS) | stead / baseline |\n|---|---|---|---|\n",
    );
    t.push_str(&format!(
        "| {n} machines × {k} syncs at once: wall | {} | {} | {:.2}× |\n",
        secs(stead.wall),
        secs(base.wall),
        ratio(stead.wall, base.wall)
    ));
    t.push_str(&format!(
        "| the same, each sync under its machine's own lock (`hybrid`; no machine waited for another's): wall | {} | | {:.2}× of stead without locks |\n",
        secs(locked.wall),
        ratio(locked.wall, stead.wall)
    ));
    t.push_str(&format!(
        "| syncs/s | {:.1} | {:.1} | |\n",
        rate(&stead),
        rate(&base)
    ));
    t.push_str(&format!(
        "| one sync, p50 / p99 (first read to write landed) | {} / {} | {} / {} | |\n",
        ms(percentile(stead.latencies.clone(), 50)),
        ms(percentile(stead.latencies.clone(), 99)),
        ms(percentile(base.latencies.clone(), 50)),
        ms(percentile(base.latencies.clone(), 99)),
    ));
    t.push_str(&format!(
        "| compare-and-set retries | {} | {} | |\n",
        stead.retries, base.retries
    ));
    for (what, s, b) in [
        (
            "etcd KV calls (gRPC) per sync",
            stead.ops.rpcs,
            base.ops.rpcs,
        ),
        (
            "etcd MVCC reads per sync (ranges and compares)",
            stead.ops.ranges,
            base.ops.ranges,
        ),
        ("etcd keys put per sync", stead.ops.puts, base.ops.puts),
    ] {
        t.push_str(&format!(
            "| {what} | {:.2} | {:.2} | |\n",
            per(&stead, s),
            per(&base, b)
        ));
    }
    for (what, s, b) in [
        ("KiB put per sync", stead.ops.put_bytes, base.ops.put_bytes),
        (
            "KiB sent to clients per sync",
            stead.ops.sent_bytes,
            base.ops.sent_bytes,
        ),
    ] {
        t.push_str(&format!(
            "| {what} | {:.1} | {:.1} | |\n",
            per(&stead, s) / 1024.0,
            per(&base, b) / 1024.0
        ));
    }
    t.push_str(&format!(
        "| `stead fleet status --json` over {listed} machine records (child process, median of {r}) | {} | one range read + `keys::from_keys`: {} | {:.2}× |\n",
        ms(status),
        ms(range),
        ratio(status, range),
        r = opts.repeat.max(1),
    ));
    t.push_str(&format!(
        "\nLoad average (1, 5, 15 min): {load_start} at the start, {load_end} at the end.\n"
    ));
    drop(etcd);
    Ok(t)
}
