//! What the `load`, `soak` and `ingest` examples share: running the release `eddy` binary as a
//! child process on a port of its own choosing, anonymous sign-in and the admin history summary
//! over a minimal HTTP/1.1 client, and the one write `load` and `soak` make.

// Each example compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use eddy_core::changeset::Path as FieldPath;
use eddy_core::schema::Schema;
use eddy_core::sim::sim_schema;
use eddy_core::store::{ApplyError, WriteTransaction};
use eddy_core::value::{PrimaryKey, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the server may take to start or to answer one HTTP request.
pub const WAIT: Duration = Duration::from_secs(60);

/// The `eddy` binary, built next to this example (`target/<profile>/eddy`), or `$EDDY_BIN`.
///
/// Under `cargo run` the binary is brought up to date first with the same profile, so the
/// examples never measure a stale server.
pub fn eddy_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("EDDY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find this example's own path")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("\"{}\" is not inside a target directory", exe.display()))?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "eddy-server", "--bin", "eddy"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().context("cannot run cargo to build eddy")?;
        if !status.success() {
            bail!("building the eddy binary failed ({status})");
        }
    }
    let path = dir.join(format!("eddy{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "\"{}\" does not exist; run `cargo build --release -p eddy-server --bin eddy` or set EDDY_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// A running `eddy serve`; killed with SIGKILL when dropped.
#[derive(Debug)]
pub struct Server {
    /// The child process.
    pub child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The key for `/api/admin/*`.
    pub admin_key: String,
}

impl Server {
    /// Starts `binary` on `127.0.0.1:0` with its database in `dir/data`, enforcing the
    /// simulation schema, and waits for it to print its address and admin key.
    pub fn start(binary: &Path, dir: &Path) -> anyhow::Result<Server> {
        Self::start_with(binary, dir, &sim_schema())
    }

    /// Like [`Server::start`], enforcing `schema`.
    pub fn start_with(binary: &Path, dir: &Path, schema: &Schema) -> anyhow::Result<Server> {
        let schema_file = dir.join("schema.json");
        std::fs::write(
            &schema_file,
            eddy_core::schema_json::schema_to_json(schema).to_string(),
        )
        .with_context(|| format!("cannot write \"{}\"", schema_file.display()))?;
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--schema")
            .arg(&schema_file)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start \"{}\"", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the server's stdout is not piped"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        // A plain thread: the server's stdout is a blocking pipe.
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_key: String::new(),
        };
        while server.addr.port() == 0 || server.admin_key.is_empty() {
            let line = rx
                .recv_timeout(WAIT)
                .context("the server did not print its address and admin key in time")?;
            if let Some(a) = line.strip_prefix("eddy listening on http://") {
                server.addr = a
                    .parse()
                    .with_context(|| format!("the server printed a bad address \"{a}\""))?;
            } else if let Some(k) = line.strip_prefix("admin key: ") {
                server.admin_key = k.to_string();
            }
        }
        Ok(server)
    }

    /// The WebSocket sync URL.
    pub fn sync_url(&self) -> String {
        format!("ws://{}/api/sync", self.addr)
    }

    /// Kills the server with SIGKILL (no flush, no goodbye) and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("cannot kill the server")?;
        self.child.wait().context("cannot reap the server")?;
        Ok(())
    }

    /// `POST /api/auth/anonymous`: a fresh user's access token.
    pub async fn anonymous_token(&self) -> anyhow::Result<String> {
        let body = http(self.addr, "POST", "/api/auth/anonymous", None).await?;
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no access token in {body}"))
    }

    /// `GET /api/admin/history-count`: `count` and `latest_client_versions` of what is committed.
    pub async fn history(&self) -> anyhow::Result<serde_json::Value> {
        http(
            self.addr,
            "GET",
            "/api/admin/history-count",
            Some(&self.admin_key),
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already reaped after `kill9`; nothing else can be done about a failure here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request without a body; returns the JSON body of a 2xx answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    admin_key: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 0\r\n"
        );
        if let Some(key) = admin_key {
            request.push_str(&format!("{}: {key}\r\n", eddy_server::ADMIN_KEY_HEADER));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .with_context(|| format!("{method} {path} did not answer in time"))?
        .with_context(|| format!("{method} {path} failed"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap_or_default();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if !status.starts_with('2') {
        bail!("{method} {path} answered \"{status}\": {body}");
    }
    serde_json::from_str(body).with_context(|| format!("{method} {path} answered \"{body}\""))
}

/// Sets `n` of the `Item` with primary key `key`, creating the object when it is missing.
pub fn set_item(tx: &mut WriteTransaction<'_>, key: i64, n: i64) -> Result<(), ApplyError> {
    let pk = PrimaryKey::Int(key);
    if tx.get("Item", &pk).is_none() {
        tx.create("Item", pk.clone())?;
    }
    tx.set(FieldPath::field("Item", pk, "n"), Value::Int(n))
}
