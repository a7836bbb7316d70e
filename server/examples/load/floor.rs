//! The loopback floor of the latency run: the same writers, readers and clock against a relay
//! that does only what no durable sync server can skip. Each write is a 16-byte frame (the
//! object's key and its write timestamp) over plain TCP; the relay, a child process like
//! `eddy serve`, appends it to a file and syncs that file (`--floor` asks for one run with and
//! one without the sync), then writes it to every other client's socket from the one thread
//! that read it. What `eddy` takes beyond this is its own: WebSocket framing, the protocol,
//! integration, the SQLite commit, the client's store and change notification.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use crate::{micros_since, Current};

/// The size of one relayed frame: key and timestamp, little-endian `i64`s.
const FRAME: usize = 16;

/// The relay, running in this process until it is killed: listens on a loopback port of its
/// own, prints it on stdout, and relays every frame it reads to every other connection after
/// appending it to `log` and, with `durable`, syncing `log`.
pub fn serve(log: &Path, durable: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the relay's runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the relay cannot listen")?;
        let mut out = std::io::stdout();
        writeln!(out, "{}", listener.local_addr()?)?;
        out.flush()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open \"{}\"", log.display()))?;
        let file = Rc::new(RefCell::new(file));
        let peers: Rc<RefCell<Vec<Rc<TcpStream>>>> = Rc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let stream = Rc::new(stream);
            let index = {
                let mut peers = peers.borrow_mut();
                peers.push(Rc::clone(&stream));
                peers.len() - 1
            };
            let (peers, file) = (Rc::clone(&peers), Rc::clone(&file));
            tokio::task::spawn_local(async move {
                if let Err(e) = relay(&stream, index, &peers, &file, durable).await {
                    // The readers of a failed relay time out, and this says why.
                    let _ = writeln!(std::io::stderr(), "relay connection {index} failed: {e:#}");
                }
            });
        }
    })
}

/// Relays the frames connection `index` sends until it closes.
async fn relay(
    stream: &TcpStream,
    index: usize,
    peers: &RefCell<Vec<Rc<TcpStream>>>,
    file: &RefCell<std::fs::File>,
    durable: bool,
) -> anyhow::Result<()> {
    let mut buffer = [0u8; 4096];
    let mut filled = 0;
    loop {
        stream.readable().await?;
        let read = match stream.try_read(buffer.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        filled += read;
        let whole = filled - filled % FRAME;
        let frames = buffer.get(..whole).unwrap_or_default();
        if !frames.is_empty() {
            let mut file = file.borrow_mut();
            file.write_all(frames)?;
            if durable {
                file.sync_all()?;
            }
        }
        let receivers: Vec<Rc<TcpStream>> = peers
            .borrow()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, p)| Rc::clone(p))
            .collect();
        for frame in frames.chunks_exact(FRAME) {
            for peer in &receivers {
                write_all(peer, frame).await?;
            }
        }
        buffer.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

/// Writes `frame` into `stream` without a task hop: at once when the socket takes it, as
/// `eddy`'s engine thread does, waiting for room only when it does not.
async fn write_all(stream: &TcpStream, mut frame: &[u8]) -> std::io::Result<()> {
    while !frame.is_empty() {
        match stream.try_write(frame) {
            Ok(n) => frame = frame.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A relay child process; killed when dropped.
pub struct Relay {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Relay {
    /// Starts this binary as a relay logging into `dir`, and waits for its address.
    pub fn start(dir: &Path, durable: bool) -> anyhow::Result<Relay> {
        let exe = std::env::current_exe().context("cannot find this benchmark's own path")?;
        let mut command = Command::new(exe);
        command
            .arg("--relay-log")
            .arg(dir.join("relay.log"))
            .stdout(Stdio::piped());
        if !durable {
            command.arg("--relay-without-sync");
        }
        let mut child = command.spawn().context("cannot start the relay")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the relay's stdout is not piped"))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .context("the relay did not print its address")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the relay printed a bad address \"{}\"", line.trim()))?;
        Ok(Relay { child, addr })
    }

    /// The relay's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Connects `count` clients; each gets a reader task reporting to `current` and a write
    /// half for the rounds it writes.
    pub async fn connect(
        &self,
        count: usize,
        current: &Current,
        base: Instant,
    ) -> anyhow::Result<(Vec<OwnedWriteHalf>, Vec<tokio::task::JoinHandle<()>>)> {
        let (mut writers, mut readers) = (Vec::new(), Vec::new());
        for index in 0..count {
            let stream = TcpStream::connect(self.addr)
                .await
                .context("cannot connect to the relay")?;
            stream.set_nodelay(true)?;
            let (mut read, write) = stream.into_split();
            let current = Arc::clone(current);
            readers.push(tokio::spawn(async move {
                let mut frame = [0u8; FRAME];
                while read.read_exact(&mut frame).await.is_ok() {
                    let (key, stamp) = decode(frame);
                    let round = current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    if let Some(round) = round.filter(|r| r.key == key && r.writer != index) {
                        round.report(micros_since(base).saturating_sub(stamp));
                    }
                }
            }));
            writers.push(write);
        }
        Ok((writers, readers))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Nothing else can be done about a relay that is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one frame: `key` stamped now.
pub async fn write(writer: &mut OwnedWriteHalf, key: i64, base: Instant) -> anyhow::Result<()> {
    let mut frame = [0u8; FRAME];
    let (k, s) = frame.split_at_mut(FRAME / 2);
    k.copy_from_slice(&key.to_le_bytes());
    s.copy_from_slice(&micros_since(base).to_le_bytes());
    writer
        .write_all(&frame)
        .await
        .context("cannot write to the relay")
}

/// A frame's key and timestamp.
fn decode(frame: [u8; FRAME]) -> (i64, i64) {
    let (key, stamp) = frame.split_at(FRAME / 2);
    let int = |bytes: &[u8]| bytes.try_into().map_or(0, i64::from_le_bytes);
    (int(key), int(stamp))
}
