//! A PostgreSQL proxy that can lose a statement's answer after its commit:
//! the fault a server meets when the network or the database fails between
//! a commit and its reply. Armed, it watches for the next `Bind` with many
//! parameters (a writer's batch write: 67), forwards it, then swallows what
//! the server answers up to its `ReadyForQuery` and closes that connection.
//! A write sent on its own (outside `BEGIN`) has committed by then; one in
//! a transaction has not, and aborts. [`PgProxy::cut`] instead closes the
//! connection in place of forwarding that `Bind`: the write never reaches
//! the server, the connection is simply gone. [`PgProxy::sever`] forwards
//! that write and then closes the connection at once: the server runs it,
//! and commits it, with no one left to answer. Plain TCP only: connect
//! through it with `sslmode=disable`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct PgProxy {
    /// `host:port` to put in a `postgres://` URL instead of the server's.
    pub address: String,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    sever: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
}

/// Parameters a `Bind` must carry to count as a batch write.
const WRITE_PARAMETERS: u16 = 60;

impl PgProxy {
    /// Listen on loopback and forward every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let address = listener.local_addr().expect("proxy address").to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let sever = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicUsize::new(0));
        let faults = Faults {
            armed: armed.clone(),
            cut: cut.clone(),
            sever: sever.clone(),
            lost: lost.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, faults.clone()));
            }
        });
        Self {
            address,
            armed,
            cut,
            sever,
            lost,
        }
    }

    /// Lose the answer of the next batch write.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Close the connection of the next batch write instead of sending it.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Send the next batch write, then close its connection at once.
    pub fn sever(&self) {
        self.sever.store(true, Ordering::SeqCst);
    }

    /// Answers lost (or writes cut or severed) so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// The switches a test sets, shared by every connection.
#[derive(Clone)]
struct Faults {
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    sever: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
}

async fn relay(client: TcpStream, server: TcpStream, faults: Faults) {
    let Faults {
        armed,
        cut,
        sever,
        lost,
    } = faults;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallow = Arc::new(AtomicBool::new(false));
    let upstream = {
        let (swallow, lost) = (swallow.clone(), lost.clone());
        async move {
            let mut buffer = Vec::new();
            let mut started = false;
            let mut severed = false;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buffer.extend_from_slice(&chunk[..n]);
                // Look at whole messages; the startup packet has no type byte.
                let mut at = 0;
                loop {
                    let typed = usize::from(started);
                    if buffer.len() < at + typed + 4 {
                        break;
                    }
                    let len =
                        u32::from_be_bytes(buffer[at + typed..at + typed + 4].try_into().unwrap())
                            as usize;
                    if buffer.len() < at + typed + len {
                        break;
                    }
                    let write = started
                        && buffer[at] == b'B'
                        && bind_parameters(&buffer[at + 5..at + 1 + len]) >= WRITE_PARAMETERS;
                    if write && cut.swap(false, Ordering::SeqCst) {
                        // Nothing of this request reaches the server.
                        lost.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if write && armed.swap(false, Ordering::SeqCst) {
                        swallow.store(true, Ordering::SeqCst);
                    }
                    if write && sever.swap(false, Ordering::SeqCst) {
                        lost.fetch_add(1, Ordering::SeqCst);
                        severed = true;
                    }
                    at += typed + len;
                    started = true;
                }
                if server_write.write_all(&buffer[..at]).await.is_err() || severed {
                    // Severed: the write (with the rest of what came with
                    // it: Execute, Sync) is on its way; the connection ends.
                    return;
                }
                buffer.drain(..at);
            }
        }
    };
    let downstream = async move {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            let (mut at, mut out) = (0, Vec::new());
            while buffer.len() >= at + 5 {
                let len = u32::from_be_bytes(buffer[at + 1..at + 5].try_into().unwrap()) as usize;
                if buffer.len() < at + 1 + len {
                    break;
                }
                let (kind, message) = (buffer[at], &buffer[at..at + 1 + len]);
                at += 1 + len;
                if !swallow.load(Ordering::SeqCst) {
                    out.extend_from_slice(message);
                } else if kind == b'Z' {
                    // Committed, and the client never hears of it.
                    let _ = client_write.write_all(&out).await;
                    lost.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            if client_write.write_all(&out).await.is_err() {
                return;
            }
            buffer.drain(..at);
        }
    };
    // Either side ending ends the connection (both halves drop).
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// The parameter count of a `Bind` message's body.
fn bind_parameters(body: &[u8]) -> u16 {
    let mut at = 0;
    for _ in 0..2 {
        // Portal, then statement name: NUL-terminated.
        match body[at..].iter().position(|b| *b == 0) {
            Some(end) => at += end + 1,
            None => return 0,
        }
    }
    let Some(formats) = body.get(at..at + 2) else {
        return 0;
    };
    at += 2 + 2 * usize::from(u16::from_be_bytes([formats[0], formats[1]]));
    body.get(at..at + 2)
        .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]))
}
