//! The control socket: `state_dir/portico.sock`, a Unix socket (mode 0600) on which a running
//! server takes commands from `portico reload` and answers with the outcome.
//!
//! The protocol is one command line in (`reload` or `upgrade`), then text lines out: every
//! diagnostic, then a last line starting with `OK` or `FAILED`. The commands' `--live`
//! questions (`inspect FORMAT bindings LIMIT [AFTER]`, `inspect FORMAT certs LIMIT [AFTER]`,
//! `inspect FORMAT explain LOCAL NO_SNI RSA_ONLY HOST`) are answered the other way round: a
//! first line `OK`, then the document, or one line `FAILED` and why (a cursor that names
//! no row, for one). `inspect FORMAT bindings` and `certs` without a limit, as clients
//! from before pages send them, ask for every row, which is what those clients print. A new
//! process taking over in a binary upgrade sends `handover`, receives the listening sockets
//! (TCP, and UDP for `http3` listeners), answers `ready` once it
//! serves, and gets `bye` once the old process let go of this socket. The socket only hands
//! commands to the serve loop, which runs them one at a time; it never changes state itself.
//! The admin API sends its reloads and certificate changes through the same channel
//! ([`ask_as`]), and a reload's [`Outcome`] is one value that both render: text here, JSON
//! there.

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
use crate::inspect::{explain, Format, NoSuchRow, Page, Query};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `portico reload`.
    Reload,
    /// `portico bindings`, `certs` or `explain` with `--live`: a question about the runtime
    /// serving now, answered as the command would print it.
    Inspect(Query, Format),
    /// The admin API's `PUT /api/v1/certificates/{name}`: store this pair (PEM; the name is
    /// checked already) and rebuild, or change nothing.
    PutCertificate {
        name: String,
        chain: Vec<u8>,
        key: Vec<u8>,
    },
    /// The admin API's `DELETE /api/v1/certificates/{name}`: remove the pair and rebuild, or
    /// change nothing.
    DeleteCertificate { name: String },
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
    /// The answer to [`Command::Inspect`]: the document only (the socket adds the `OK`), or
    /// the page's cursor named no row.
    Answer(Result<String, NoSuchRow>),
    /// The answer to [`Command::Reload`].
    Reload(Outcome),
    /// The answer to a certificate change: what it came to, and the reload's outcome (None
    /// when nothing was tried: no such certificate to delete).
    Certificate(Changed, Option<Outcome>),
    /// The answer to [`Command::Handover`]: the listening sockets, TCP and UDP.
    Sockets(
        Vec<(
            crate::upgrade::Kind,
            std::net::SocketAddr,
            std::os::fd::OwnedFd,
        )>,
    ),
}

/// What a certificate change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// A new certificate is stored and serves.
    Created,
    /// A stored certificate was replaced, and the new one serves.
    Replaced,
    /// The certificate is removed and the rebuilt configuration serves.
    Deleted,
    /// No certificate by that name is stored; nothing was tried.
    NoSuchName,
    /// The new certificate does not load, or the configuration would not serve with the
    /// change: nothing changed (the outcome says why).
    Refused,
    /// The files could not be written or moved: nothing changed.
    StoreFailed,
    /// In a fleet: etcd did not take the change (it did not answer, or this node's cluster
    /// key is not confirmed as the fleet's), so nothing changed, here or on any node.
    FleetUnavailable,
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
    let sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    let open = sessions.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Closed only when the process ends; more sessions than this wait their turn.
            let Ok(permit) = open.clone().acquire_owned().await else {
                return;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = session(stream, requests).await {
                    tracing::debug!(error = %e, "control session ended with an error");
                }
                drop(permit);
            });
        }
    });
    Ok(Guard {
        path,
        task,
        sessions,
    })
}

async fn session(mut stream: UnixStream, requests: mpsc::Sender<Request>) -> io::Result<()> {
    // A command is one short line; anything slower or longer is not a client of ours. It is
    // read a byte at a time so nothing after it is consumed (the hand-over goes on on the
    // same stream).
    let (line, whole) = tokio::time::timeout(Duration::from_secs(10), async {
        let mut line = Vec::new();
        while line.len() < MAX_LINE {
            match stream.read_u8().await? {
                b'\n' => return Ok::<_, io::Error>((line, true)),
                b => line.push(b),
            }
        }
        Ok((line, false))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no command"))??;
    if !whole {
        // Cut short, a cursor would name another row; say so rather than answer for it.
        let why = format!("FAILED the command is longer than {MAX_LINE} bytes\n");
        stream.write_all(why.as_bytes()).await?;
        return Ok(());
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let command = match line.trim() {
        "handover" => return handover(stream, requests).await,
        line => match parse(line) {
            Ok(command) => command,
            Err(why) => {
                stream
                    .write_all(format!("FAILED {why}\n").as_bytes())
                    .await?;
                return Ok(());
            }
        },
    };
    let text = match ask(&requests, command).await {
        Some(Reply::Text(text)) => text,
        Some(Reply::Answer(Ok(document))) => format!("OK\n{document}"),
        Some(Reply::Answer(Err(e))) => format!("FAILED {e}\n"),
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
        let borrowed: Vec<_> = sockets
            .iter()
            .map(|(k, a, fd)| (*k, *a, fd.as_fd()))
            .collect();
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

/// At most this many control sessions at once.
const MAX_SESSIONS: usize = 64;

/// Keeps the control socket open; dropping it stops listening and removes the file.
pub struct Guard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    sessions: Arc<tokio::sync::Semaphore>,
}

impl Guard {
    /// Stops listening and removes the socket file now, so a new process can bind it; the
    /// drop that follows leaves that new file alone. The sessions still open (the
    /// `portico upgrade` waiting for its answer) go on; [`Sessions::finished`] waits for
    /// them.
    pub fn release(mut self) -> Sessions {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
        self.path = PathBuf::new();
        Sessions(self.sessions.clone())
    }
}

/// The control sessions of a released socket.
pub struct Sessions(Arc<tokio::sync::Semaphore>);

impl Sessions {
    /// Waits until every session has written its answer, for at most `within`: a process
    /// that ends first would cut `portico upgrade` off before its `OK`.
    pub async fn finished(self, within: Duration) {
        let all = u32::try_from(MAX_SESSIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(within, self.0.acquire_many(all)).await;
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
/// sockets (TCP, and the UDP sockets of `http3` listeners). Returns them with the stream
/// to answer `ready` on.
pub fn take_over(socket: &Path) -> io::Result<(std::os::unix::net::UnixStream, Handed)> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    (&stream).write_all(b"handover\n")?;
    let sockets = crate::upgrade::recv_sockets(&stream)?;
    Ok((stream, sockets))
}

/// Listening sockets handed over, by the address they serve.
pub type Handed = crate::upgrade::Sockets;

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

/// The longest command line a session reads: `explain` carries a host name (up to 253
/// bytes, more when a client sends an odd one) and an address, a page of `certs` a cursor
/// of up to [`crate::inspect::page::MAX_KEY`] bytes (a certificate file's path).
const MAX_LINE: usize = 8192;

/// The line a client sends for `command`, newline included; None for the hand-over's own
/// messages, which are not commands a client sends.
fn line(command: &Command) -> Option<String> {
    let format = |f: &Format| match f {
        Format::Text => "text",
        Format::Json => "json",
    };
    let flag = |b: bool| if b { "1" } else { "0" };
    Some(match command {
        Command::Reload => "reload\n".to_string(),
        Command::Upgrade => "upgrade\n".to_string(),
        Command::Inspect(Query::Bindings(page), f) => {
            format!("inspect {} bindings{}\n", format(f), page_words(page))
        }
        Command::Inspect(Query::Certs(page), f) => {
            format!("inspect {} certs{}\n", format(f), page_words(page))
        }
        Command::Inspect(Query::Explain { host, options }, f) => format!(
            "inspect {} explain {} {} {} {host}\n",
            format(f),
            options
                .local
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            flag(options.no_sni),
            flag(options.rsa_only),
        ),
        Command::Handover
        | Command::HandedOver { .. }
        | Command::PutCertificate { .. }
        | Command::DeleteCertificate { .. } => return None,
    })
}

/// A page's words on an `inspect` line: ` LIMIT`, then ` AFTER` when there is a cursor (the
/// rest of the line, spaces and all: a listener's name or a file's path may hold them).
fn page_words(page: &Page) -> String {
    match &page.after {
        None => format!(" {}", page.limit),
        Some(after) => format!(" {} {after}", page.limit),
    }
}

/// The page the words after `bindings` or `certs` ask for: none, as older clients send,
/// is every row; else a limit in plain digits and optionally the cursor, which must be one
/// a client could have sent.
fn parse_page(rest: Option<&str>) -> Option<Page> {
    let Some(rest) = rest else {
        return Some(Page::all());
    };
    let (limit, after) = match rest.split_once(' ') {
        Some((limit, after)) => (limit, Some(after)),
        None => (rest, None),
    };
    if limit.is_empty() || !limit.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(after) = after {
        crate::inspect::page::check_key(after).ok()?;
    }
    Some(Page {
        limit: limit.parse().ok()?,
        after: after.map(str::to_string),
    })
}

/// A client's command line (without its newline), or what is wrong with it.
fn parse(line: &str) -> Result<Command, String> {
    let unknown = || format!("unknown command {line:?}");
    let mut words = line.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("reload"), None) => return Ok(Command::Reload),
        (Some("upgrade"), None) => return Ok(Command::Upgrade),
        (Some("inspect"), Some(rest)) => {
            let mut words = rest.splitn(6, ' ');
            let format = match words.next() {
                Some("text") => Format::Text,
                Some("json") => Format::Json,
                _ => return Err(unknown()),
            };
            let query = match words.next() {
                Some(list @ ("bindings" | "certs")) => {
                    // The page is the rest of the line after the list's name.
                    let rest = rest.splitn(3, ' ').nth(2);
                    let page = parse_page(rest).ok_or_else(unknown)?;
                    return Ok(Command::Inspect(
                        if list == "bindings" {
                            Query::Bindings(page)
                        } else {
                            Query::Certs(page)
                        },
                        format,
                    ));
                }
                Some("explain") => {
                    let Some(local) = words.next() else {
                        return Err(unknown());
                    };
                    let flag = |w: Option<&str>| match w {
                        Some("0") => Ok(false),
                        Some("1") => Ok(true),
                        _ => Err(unknown()),
                    };
                    let local = match local {
                        "-" => None,
                        a => Some(a.parse().map_err(|_| unknown())?),
                    };
                    let no_sni = flag(words.next())?;
                    let rsa_only = flag(words.next())?;
                    // The host is the rest of the line, as the client gave it: explain
                    // words an odd name, it does not refuse it here.
                    let host = words.next().ok_or_else(unknown)?.to_string();
                    Query::Explain {
                        host,
                        options: explain::Options {
                            local,
                            no_sni,
                            rsa_only,
                        },
                    }
                }
                _ => return Err(unknown()),
            };
            return Ok(Command::Inspect(query, format));
        }
        _ => {}
    }
    Err(unknown())
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
    let Some(line) = line(&command) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a client command",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_command_reads_back_as_itself() {
        let explain = |host: &str, local: Option<&str>, no_sni, rsa_only| {
            Command::Inspect(
                Query::Explain {
                    host: host.to_string(),
                    options: explain::Options {
                        local: local.map(|a| a.parse().expect("addr")),
                        no_sni,
                        rsa_only,
                    },
                },
                Format::Text,
            )
        };
        for command in [
            Command::Reload,
            Command::Upgrade,
            Command::Inspect(Query::Bindings(Page::all()), Format::Text),
            Command::Inspect(Query::Certs(Page::default()), Format::Json),
            Command::Inspect(
                Query::Bindings(Page {
                    limit: 10,
                    after: Some("my listener/*.a.test".to_string()),
                }),
                Format::Json,
            ),
            Command::Inspect(
                Query::Certs(Page {
                    limit: 0,
                    after: Some("pool:/etc/certs/a b.pem".to_string()),
                }),
                Format::Text,
            ),
            explain("a.test", None, false, false),
            explain("a.test", Some("[::1]:8443"), true, true),
            // An odd name goes over as given, spaces and all: explain words it.
            explain("not a  name", Some("127.0.0.1:1"), false, true),
        ] {
            let line = line(&command).expect("a client command");
            assert!(line.ends_with('\n') && line.len() <= MAX_LINE, "{line:?}");
            assert_eq!(parse(line.trim_end_matches('\n')), Ok(command), "{line:?}");
        }
        assert_eq!(line(&Command::Handover), None);
    }

    #[test]
    fn a_line_without_a_page_asks_for_every_row() {
        // What clients from before pages send, and print in full.
        assert_eq!(
            parse("inspect text bindings"),
            Ok(Command::Inspect(Query::Bindings(Page::all()), Format::Text))
        );
        assert_eq!(
            parse("inspect json certs 5 site:a"),
            Ok(Command::Inspect(
                Query::Certs(Page {
                    limit: 5,
                    after: Some("site:a".to_string())
                }),
                Format::Json
            ))
        );
    }

    #[test]
    fn a_bad_line_is_named_in_the_answer() {
        for bad in [
            "",
            "reload now",
            "handover2",
            "inspect",
            "inspect xml certs",
            "inspect json certs extra",
            "inspect json certs +5",
            "inspect json certs -1",
            "inspect json certs 5 ",
            "inspect json certs  5",
            "inspect json bindings 99999999999999999999999",
            "inspect json bindingsx 5",
            "inspect text explain",
            "inspect text explain - 0 0",
            "inspect text explain nowhere 0 0 a.test",
            "inspect text explain - 2 0 a.test",
        ] {
            let why = parse(bad).expect_err(bad);
            assert_eq!(why, format!("unknown command {bad:?}"));
        }
    }
}
