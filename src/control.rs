//! The control socket: `state_dir/portico.sock`, a Unix socket (mode 0600) on which a running
//! server takes commands from `portico reload` and answers with the outcome.
//!
//! The protocol is one command line in (`reload`), then text lines out: every diagnostic,
//! then a last line starting with `OK` or `FAILED`. The socket only hands commands to the
//! serve loop, which runs them one at a time; it never changes state itself.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The socket's path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("portico.sock")
}

/// A command from a client, with the way to answer it.
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Reload,
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
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| ControlError::Dir {
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

async fn session(stream: UnixStream, requests: mpsc::Sender<Request>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A command is one short line; anything slower or longer is not a client of ours.
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read.take(256)).read_line(&mut line),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no command"))??;
    let command = match line[..n].trim() {
        "reload" => Command::Reload,
        other => {
            write
                .write_all(format!("FAILED unknown command {other:?}\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    let (reply, answer) = oneshot::channel();
    if requests.send(Request { command, reply }).await.is_err() {
        write
            .write_all(b"FAILED the server is shutting down\n")
            .await?;
        return Ok(());
    }
    let text = answer
        .await
        .unwrap_or_else(|_| "FAILED the server is shutting down\n".to_string());
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Keeps the control socket open; dropping it stops listening and removes the file.
pub struct Guard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

use tokio::io::AsyncReadExt as _;

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
