//! The control socket: `state_dir/portico.sock`, a Unix socket (mode 0600) on which a running
//! server takes commands from `portico reload` and answers with the outcome.
//!
//! The protocol is one command line in (`reload` or `upgrade`), then text lines out: every
//! diagnostic, then a last line starting with `OK` or `FAILED`. A new process taking over in
//! a binary upgrade sends `handover`, receives the listening sockets, answers `ready` once it
//! serves, and gets `bye` once the old process let go of this socket. The socket only hands
//! commands to the serve loop, which runs them one at a time; it never changes state itself.
//! The admin API sends its reloads through the same channel ([`ask_as`]), and a reload's
//! [`Outcome`] is one value that both render: text here, JSON there.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::Report;

/// The socket's path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("portico.sock")
}

/// A command from a client, with the way to answer it.
pub struct Request {
    pub command: Command,
    /// Who asked, for the log and the reload history: "portico reload", "admin API".
    pub source: &'static str,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `portico reload`.
    Reload,
    /// `portico upgrade`: start the binary again and hand it the sockets.
    Upgrade,
    /// The new process asks for the listening sockets.
    Handover,
    /// The new process said whether it serves now (`ready`) or went away.
    HandedOver { ready: bool },
}

/// The serve loop's answer.
pub enum Reply {
    Text(String),
    /// The answer to [`Command::Reload`].
    Reload(Outcome),
    Sockets(Vec<(std::net::SocketAddr, std::os::fd::OwnedFd)>),
}

/// What a reload (or a rebuild after a certificate change) came to: `portico reload`
/// prints it as text, the admin API returns it as JSON.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether the new configuration serves now.
    pub ok: bool,
    /// Every diagnostic: the warnings of a reload that worked, the errors and warnings of
    /// one that did not.
    pub report: Report,
    /// The last line after `OK` or `FAILED`, such as "reloaded: 2 listeners, 3 sites".
    pub summary: String,
    /// What asked for it: "SIGHUP", "portico reload", "certificate files changed", ...
    pub reason: String,
    /// When it finished, in Unix seconds.
    pub at: i64,
}

impl Outcome {
    /// The text `portico reload` prints: every diagnostic, then an `OK` or `FAILED` line.
    pub fn text(&self) -> String {
        let word = if self.ok { "OK" } else { "FAILED" };
        format!("{}{word} {}\n", self.report, self.summary)
    }
}

/// The last reloads, newest last, for the admin API's status (and the dashboard's history).
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<VecDeque<Outcome>>>);

impl History {
    /// How many outcomes are kept.
    pub const KEPT: usize = 32;

    pub fn record(&self, outcome: Outcome) {
        // Only the serve loop writes and only the admin API reads, off the request path.
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == History::KEPT {
            h.pop_front();
        }
        h.push_back(outcome);
    }

    pub fn last(&self) -> Option<Outcome> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .back()
            .cloned()
    }

    /// Every outcome kept, newest first.
    pub fn all(&self) -> Vec<Outcome> {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().rev().cloned().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("another Portico is already serving with this state_dir (its control socket {} answers)", path.display())]
    InUse { path: PathBuf },
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

/// Listens on the control socket and forwards commands to `requests`. The socket file is
/// removed when the returned guard is dropped.
pub async fn listen(
    state_dir: &Path,
    requests: mpsc::Sender<Request>,
) -> Result<Guard, ControlError> {
    crate::state::private_dir(state_dir).map_err(|source| ControlError::Dir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = socket_path(state_dir);
    if path.exists() {
        // A socket that still answers belongs to a live server; one that does not is left
        // over from a crash and can go.
        if UnixStream::connect(&path).await.is_ok() {
            return Err(ControlError::InUse { path });
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|source| ControlError::Bind {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Bind {
            path: path.clone(),
            source,
        }
    })?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = session(stream, requests).await {
                    tracing::debug!(error = %e, "control session ended with an error");
                }
            });
        }
    });
    Ok(Guard { path, task })
}

async fn session(mut stream: UnixStream, requests: mpsc::Sender<Request>) -> io::Result<()> {
    // A command is one short line; anything slower or longer is not a client of ours. It is
    // read a byte at a time so nothing after it is consumed (the hand-over goes on on the
    // same stream).
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        let mut line = Vec::new();
        while line.len() < 256 {
            match stream.read_u8().await? {
                b'\n' => break,
                b => line.push(b),
            }
        }
        Ok::<_, io::Error>(line)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no command"))??;
    let line = String::from_utf8_lossy(&line).into_owned();
    let n = line.len();
    let command = match line[..n].trim() {
        "reload" => Command::Reload,
        "upgrade" => Command::Upgrade,
        "handover" => return handover(stream, requests).await,
        other => {
            stream
                .write_all(format!("FAILED unknown command {other:?}\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    let text = match ask(&requests, command).await {
        Some(Reply::Text(text)) => text,
        Some(Reply::Reload(outcome)) => outcome.text(),
        _ => "FAILED the server is shutting down\n".to_string(),
    };
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

async fn ask(requests: &mpsc::Sender<Request>, command: Command) -> Option<Reply> {
    ask_as(requests, command, "portico reload").await
}

/// Hands `command` from `source` to the serve loop and waits for its answer; None when the
/// loop is gone (the server is shutting down). The admin API asks through this too.
pub async fn ask_as(
    requests: &mpsc::Sender<Request>,
    command: Command,
    source: &'static str,
) -> Option<Reply> {
    let (reply, answer) = oneshot::channel();
    requests
        .send(Request {
            command,
            source,
            reply,
        })
        .await
        .ok()?;
    answer.await.ok()
}

/// The old process's side of a hand-over: send the sockets, wait for `ready`, tell the
/// serve loop, and say `bye` once it has let go of the control socket.
async fn handover(stream: UnixStream, requests: mpsc::Sender<Request>) -> io::Result<()> {
    let Some(Reply::Sockets(sockets)) = ask(&requests, Command::Handover).await else {
        return Ok(());
    };
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    // The new process built its runtime before asking, so a minute is generous.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let sent = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        use std::os::fd::AsFd;
        let borrowed: Vec<_> = sockets.iter().map(|(a, fd)| (*a, fd.as_fd())).collect();
        crate::upgrade::send_sockets(&stream, &borrowed)?;
        let mut line = String::new();
        std::io::BufReader::new(&stream).read_line(&mut line)?;
        Ok::<_, io::Error>((stream, line.trim() == "ready"))
    })
    .await
    .map_err(io::Error::other)?;
    let (stream, ready) = match sent {
        Ok(x) => x,
        Err(e) => {
            ask(&requests, Command::HandedOver { ready: false }).await;
            return Err(e);
        }
    };
    let answer = ask(&requests, Command::HandedOver { ready }).await;
    if ready && answer.is_some() {
        use std::io::Write;
        (&stream).write_all(b"bye\n")?;
    }
    Ok(())
}

/// Keeps the control socket open; dropping it stops listening and removes the file.
pub struct Guard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Guard {
    /// Stops listening and removes the socket file now, so a new process can bind it; the
    /// drop that follows leaves that new file alone.
    pub fn release(mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
        self.path = PathBuf::new();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The new process's side of a hand-over: ask the old process at `socket` for its listening
/// sockets. Returns them with the stream to answer `ready` on.
pub fn take_over(socket: &Path) -> io::Result<(std::os::unix::net::UnixStream, Handed)> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    (&stream).write_all(b"handover\n")?;
    let sockets = crate::upgrade::recv_sockets(&stream)?;
    Ok((stream, sockets))
}

/// Listening sockets handed over, by the address they serve.
pub type Handed = Vec<(std::net::SocketAddr, std::net::TcpListener)>;

/// Tells the old process this one serves, and waits until it has let go of the control
/// socket.
pub fn confirm(stream: std::os::unix::net::UnixStream) -> io::Result<()> {
    use std::io::{BufRead, Write};
    (&stream).write_all(b"ready\n")?;
    let mut line = String::new();
    std::io::BufReader::new(&stream).read_line(&mut line)?;
    if line.trim() == "bye" {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the old process did not confirm the hand-over",
        ))
    }
}

/// Sends `command` to the server behind `state_dir` and returns its answer.
pub async fn send(state_dir: &Path, command: Command, timeout: Duration) -> io::Result<String> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach a running Portico at {}: {e}", path.display()),
        )
    })?;
    let line = match command {
        Command::Reload => "reload\n",
        Command::Upgrade => "upgrade\n",
        Command::Handover | Command::HandedOver { .. } => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a client command",
            ))
        }
    };
    stream.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(timeout, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "the server did not answer in time")
        })??;
    Ok(answer)
}
