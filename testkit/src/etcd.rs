//! A real etcd for the tests: one or three members started on loopback in a
//! temp dir, waited on until every member answers its health endpoint, and
//! stopped (by their own pids, waited on) when dropped.
//!
//! Members run with `--logger=zap`: Debian's etcd 3.4.23 panics under load
//! with its default logger (etcd #14402). Ports are found free by binding
//! port 0 first; a port taken between that and etcd's bind makes the start
//! fail and it is tried again with new ports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd cluster of loopback members.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    tls: Option<Certs>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    /// Plain-HTTP `/health` and `/metrics` (the client port may be https).
    metrics_port: u16,
    child: Option<Child>,
}

/// The PEM files of a TLS cluster, made by `openssl` for the test: a CA,
/// the server's certificate for 127.0.0.1, and a client certificate.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The client certificate the cluster accepts.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// Whether the `etcd` program is on this machine. Tests that need it call
/// [`Etcd::require`]: under CI a missing etcd is a failure, elsewhere the
/// test says why it does nothing.
pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether etcd is here; outside CI a missing one is said and skipped.
fn present() -> bool {
    if available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcd is not installed: apt-get install etcd-server"
    );
    eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
    false
}

impl Etcd {
    /// `None` (with a message) when etcd is not installed and this is not
    /// CI; panics under CI (`.ci/run` installs `etcd-server`).
    pub fn require(members: usize) -> Option<Etcd> {
        present().then(|| Etcd::start(members))
    }

    /// [`Etcd::require`] for [`Etcd::start_tls`] (it needs `openssl` too).
    pub fn require_tls() -> Option<Etcd> {
        present().then(Etcd::start_tls)
    }

    /// Starts `count` members (1 or 3) and waits until all are healthy.
    pub fn start(count: usize) -> Etcd {
        Etcd::start_with(count, false)
    }

    /// One member serving clients over TLS only, asking each client for a
    /// certificate signed by the test CA ([`Etcd::certs`]).
    pub fn start_tls() -> Etcd {
        Etcd::start_with(1, true)
    }

    /// The TLS files, for a cluster started with [`Etcd::start_tls`].
    pub fn certs(&self) -> Option<&Certs> {
        self.tls.as_ref()
    }

    fn start_with(count: usize, tls: bool) -> Etcd {
        let mut last = String::new();
        for _ in 0..5 {
            match Etcd::try_start(count, tls) {
                Ok(etcd) => return etcd,
                Err(why) => last = why,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(count: usize, tls: bool) -> Result<Etcd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let certs = if tls {
            Some(make_certs(dir.path())?)
        } else {
            None
        };
        let scheme = if tls { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut etcd = Etcd {
            members: Vec::new(),
            dir,
            tls: certs,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let metrics = free_port();
            let mut tls_args = Vec::new();
            if let Some(c) = &etcd.tls {
                tls_args.push(format!("--cert-file={}", c.server_cert.display()));
                tls_args.push(format!("--key-file={}", c.server_key.display()));
                tls_args.push(format!("--trusted-ca-file={}", c.ca.display()));
                tls_args.push("--client-cert-auth".to_string());
            }
            let log = std::fs::File::create(etcd.dir.path().join(format!("{name}.log")))
                .map_err(|e| e.to_string())?;
            let child = Command::new("etcd")
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(etcd.dir.path().join(&name))
                .arg(format!(
                    "--listen-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!(
                    "--advertise-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"))
                .args(&tls_args)
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={}", cluster.join(",")))
                .args([
                    "--initial-cluster-token=stead-test",
                    "--initial-cluster-state=new",
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                    "--logger=zap",
                    "--log-outputs=stderr",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start etcd: {e}"))?;
            etcd.members.push(Member {
                name,
                client_port: *client,
                metrics_port: metrics,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..etcd.members.len() {
            while !etcd.healthy(i) {
                if Instant::now() > deadline || etcd.exited(i) {
                    return Err(format!(
                        "member {} not healthy: {}",
                        etcd.members[i].name,
                        etcd.log(i)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(etcd)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URLs of the members that are running, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URLs of every member, stopped or not, comma-separated.
    pub fn all_endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The temp dir the members keep their data and logs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s log (for failure messages).
    pub fn log(&self, i: usize) -> String {
        let path: PathBuf = self
            .dir
            .path()
            .join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Whether member `i` answers `/health` with `"health":"true"`.
    pub fn healthy(&self, i: usize) -> bool {
        http_get(self.members[i].metrics_port, "/health")
            .is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    fn exited(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// The index of the member that leads, read from each member's
    /// `/v3/maintenance/status`; while an election is under way (a loaded
    /// machine misses heartbeats) none does, so the members are asked again
    /// until one answers that it leads, for at most 10 s (`None`: none did).
    pub fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.leader_now() {
                return Some(i);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member that says it leads now, if one does.
    fn leader_now(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let body = http_post(m.client_port, "/v3/maintenance/status", "{}")?;
            let field = |name: &str| -> Option<String> {
                let at = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
                let end = body[at..].find('"')? + at;
                Some(body[at..end].to_string())
            };
            if let (Some(leader), Some(me)) = (field("leader"), field("member_id"))
                && leader == me
            {
                return Some(i);
            }
        }
        None
    }

    /// How many keys start with `prefix`, asked of the first running member
    /// through its JSON gateway (`None`: no answer; plain clusters only).
    pub fn count_keys(&self, prefix: &str) -> Option<u64> {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let end = stead_lib::sync::etcd::keys::range_end(prefix.as_bytes());
        let body = format!(
            r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
            b64(prefix.as_bytes()),
            b64(&end)
        );
        let port = self.members.iter().find(|m| m.child.is_some())?.client_port;
        let reply = http_post(port, "/v3/kv/range", &body)?;
        let json: serde_json::Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1)?).ok()?;
        // proto3 JSON leaves a zero count out, and writes an int64 as a string.
        match &json["count"] {
            serde_json::Value::Null => json.get("header").map(|_| 0),
            serde_json::Value::String(n) => n.parse().ok(),
            other => other.as_u64(),
        }
    }

    /// Kills member `i` with SIGKILL and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, by
/// the `openssl` program, in `dir`.
fn make_certs(dir: &Path) -> Result<Certs, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=stead-test-ca"];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca_args)?;
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        let subject = format!("/CN=stead-test-{name}");
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req", "-subj", subject.as_str()];
        args.extend(ec);
        args.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
        openssl(&args)?;
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])?;
    }
    Ok(Certs {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn http_request(port: u16, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    http_request(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

fn http_post(port: u16, path: &str, body: &str) -> Option<String> {
    http_request(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}
