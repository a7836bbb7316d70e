//! What the end-to-end test files share: the `eddy` binary in its own process on a port of its
//! own choosing, and a minimal HTTP client.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eddy_core::changeset::Path as FieldPath;
use eddy_core::sim::sim_schema;
use eddy_core::store::{ApplyError, WriteTransaction};
use eddy_core::value::{PrimaryKey, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `eddy` binary running in its own process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_key: String,
}

impl Server {
    /// Starts `eddy serve` with `args`; waits for the address and admin key it prints.
    pub fn start(args: &[&std::ffi::OsStr]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("EDDY_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut addr = None;
        let mut admin_key = None;
        while addr.is_none() || admin_key.is_none() {
            let line = rx
                .recv_timeout(WAIT)
                .expect("the server did not print its address and admin key in time");
            if let Some(a) = line.strip_prefix("eddy listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(k) = line.strip_prefix("admin key: ") {
                admin_key = Some(k.to_string());
            }
        }
        Server {
            child,
            addr: addr.unwrap(),
            admin_key: admin_key.unwrap(),
        }
    }

    /// Starts a server in development mode (no schema: it learns one from its clients) over
    /// `dir/data`.
    pub fn development(dir: &Path) -> Server {
        let data = dir.join("data");
        Server::start(&[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ])
    }

    /// Starts a server on `listen` over `dir/data`, enforcing the simulation schema.
    pub fn with_schema(dir: &Path, listen: &str) -> Server {
        Server::with_schema_and(dir, listen, &[])
    }

    /// Like [`Server::with_schema`], with `extra` arguments after the others.
    pub fn with_schema_and(dir: &Path, listen: &str, extra: &[&std::ffi::OsStr]) -> Server {
        let schema_file = dir.join("schema.json");
        std::fs::write(
            &schema_file,
            eddy_core::schema_json::schema_to_json(&sim_schema()).to_string(),
        )
        .unwrap();
        let data = dir.join("data");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--listen".as_ref(),
            listen.as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--schema".as_ref(),
            schema_file.as_os_str(),
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// The WebSocket sync URL.
    pub fn sync_url(&self) -> String {
        format!("ws://{}/api/sync", self.addr)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A GET on an admin route with the admin key.
    pub async fn admin(&self, path: &str) -> (u16, serde_json::Value) {
        self.admin_request("GET", path).await
    }

    /// How many changesets the history holds durably, from `GET /api/admin/history-count`.
    pub async fn history_count(&self) -> u64 {
        let (status, summary) = self.admin("/api/admin/history-count").await;
        assert_eq!(status, 200, "{summary}");
        summary["count"].as_u64().unwrap()
    }

    /// `method path` on the admin API, with the admin key.
    pub async fn admin_request(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        http(
            self.addr,
            method,
            path,
            &[("x-eddy-admin-key", &self.admin_key)],
            None,
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns the status and the JSON body (null when not JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map_or_else(|| "{}".to_string(), |b| b.to_string());
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the HTTP response did not arrive in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("no HTTP status");
    let head_end = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let body = text.get(head_end..).unwrap_or_default();
    // Responses without Content-Length arrive chunked; keep the JSON between the chunk sizes.
    let json = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(start), Some(end)) if start <= end => body.get(start..=end).unwrap_or_default(),
        _ => "",
    };
    (status, serde_json::from_str(json).unwrap_or_default())
}

/// A native client of a new anonymous user, syncing the simulation schema.
pub async fn anonymous_client(server: &Server) -> eddy_server::client::Client {
    let token = anonymous_token(server.addr).await;
    eddy_server::client::Client::connect(&server.sync_url(), &token, sim_schema()).unwrap()
}

/// Signs in anonymously and returns the access token.
pub async fn anonymous_token(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "POST", "/api/auth/anonymous", &[], None).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Sets `n` of the `Item` with primary key `key`, creating the object when it is missing.
pub fn set_item(tx: &mut WriteTransaction<'_>, key: i64, n: i64) -> Result<(), ApplyError> {
    let pk = PrimaryKey::Int(key);
    if tx.get("Item", &pk).is_none() {
        tx.create("Item", pk.clone())?;
    }
    tx.set(FieldPath::field("Item", pk, "n"), Value::Int(n))
}
