//! Serving a site's files from its document root, the way an nginx or Caddy
//! operator expects: GET and HEAD only, `index.html` for directories,
//! validators (`ETag`, `Last-Modified`) with conditional requests, single
//! byte ranges, and bodies streamed from disk in bounded chunks. This module
//! must never serve anything that resolves outside the root, whether through
//! `..` segments, percent-encoded tricks or symlinks, and it must never list
//! a directory's contents.
//!
//! Decisions worth knowing when reading responses:
//! - A request path that is malformed (not starting with `/`, a NUL byte,
//!   invalid UTF-8, a backslash, or any `..` segment, all checked after one
//!   round of percent-decoding) gets `400 bad request`. Everything that is
//!   well formed but escapes the root, does not exist, or is not a regular
//!   file or directory gets `404 not found`.
//! - A directory requested without a trailing slash gets a `301` to the same
//!   path with `/` appended; the `Location` is rebuilt from the decoded,
//!   normalised segments so it can never become a protocol-relative `//host`.
//! - Several ranges in one `Range` header are answered with the whole file and
//!   `200`, rather than a `multipart/byteranges` body.
//! - Hidden files and directories (any segment starting with `.`, requested or reached
//!   through a symlink) get `404`, except `.well-known`.
//! - HEAD is answered exactly like GET (including `206`/`416` for ranges and
//!   `304`/`412` for conditions) but with an empty body.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use self::cache::{Cached, FileCache, Loading, Lookup};
use self::conditional::{
    evaluate_preconditions, requested_range, Precondition, RangeRequest, Validators,
};
use crate::http::Body;

/// How much of a file is read from disk and handed to the connection at once.
const CHUNK_SIZE: usize = 64 * 1024;

/// Linux's limit on one file name; a longer segment cannot name anything.
const MAX_NAME_LEN: usize = 255;

/// Linux's limit on a whole path; a longer request cannot name anything.
const MAX_PATH_LEN: usize = 4096;

/// `httpdate` panics on instants from the year 10000 on, so later
/// modification times are treated as unknown.
const HTTP_DATE_LIMIT_SECS: u64 = 253_402_300_800;

/// The file served for a directory request ending in `/`.
const INDEX_FILE: &str = "index.html";

/// Characters escaped when a decoded segment is put back into a `Location`.
/// Segments are split after decoding, so they never hold `/`; it is escaped
/// anyway so that a rebuilt path can never gain segments we did not validate.
const SEGMENT_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A site's document root, resolved once at config time to a canonical
/// absolute path so every request can be checked against it by prefix.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    cache: Arc<FileCache>,
}

impl PartialEq for Root {
    fn eq(&self, other: &Root) -> bool {
        self.path == other.path
    }
}

impl Eq for Root {}

impl Root {
    /// Canonicalizes `path` (resolving symlinks) and checks it is a directory.
    pub fn new(path: &Path) -> io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        if !std::fs::metadata(&path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("document root {} is not a directory", path.display()),
            ));
        }
        Ok(Root {
            path,
            cache: Arc::default(),
        })
    }

    /// The canonical absolute path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `other` serves from the same in-memory file cache (sites with one document
    /// root share it, see `runtime::build`).
    pub fn shares_cache_with(&self, other: &Root) -> bool {
        Arc::ptr_eq(&self.cache, &other.cache)
    }
}

/// Serve one request from the root. `path` is the request URI's path exactly
/// as received (still percent-encoded, may contain anything).
pub async fn serve(
    root: &Root,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
) -> http::Response<crate::http::Body> {
    let is_head = *method == Method::HEAD;
    let mut response = if is_head || *method == Method::GET {
        serve_get(root, path, headers).await
    } else {
        let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    };
    response.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if is_head {
        // HEAD keeps every header GET would send, Content-Length included,
        // and only drops the body; the open file (if any) is closed here.
        *response.body_mut() = empty_body();
    }
    response
}

/// Produces the GET response; `serve` turns it into a HEAD one when needed.
async fn serve_get(root: &Root, raw_path: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(request) = RequestPath::parse(raw_path) else {
        return text_response(StatusCode::BAD_REQUEST, "bad request\n");
    };
    let Found {
        content_type,
        validators,
        source,
    } = match find(root, request).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let len = match &source {
        Source::Memory(data) => data.len() as u64,
        Source::File(_, len) => *len,
    };

    match evaluate_preconditions(headers, &validators) {
        Precondition::Proceed => {}
        Precondition::Failed => {
            return text_response(StatusCode::PRECONDITION_FAILED, "precondition failed\n")
        }
        Precondition::NotModified => {
            let mut response = Response::new(empty_body());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            validators.write_headers(response.headers_mut());
            return response;
        }
    }

    let (status, start, count) = match requested_range(headers, len, &validators) {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut response =
                text_response(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            let headers = response.headers_mut();
            insert_text(headers, header::CONTENT_RANGE, &format!("bytes */{len}"));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return response;
        }
    };

    let body = match source {
        // A small file was read whole with its metadata (or is cached): no further trips.
        Source::Memory(data) => {
            // start and count lie within the data: requested_range checked them
            // against its length.
            let range =
                usize::try_from(start).unwrap_or(0)..usize::try_from(start + count).unwrap_or(0);
            Full::new(data.slice(range))
                .map_err(|never| match never {})
                .boxed()
        }
        Source::File(file, _) => {
            let mut file = tokio::fs::File::from_std(file);
            if start > 0 {
                if let Err(err) = file.seek(io::SeekFrom::Start(start)).await {
                    return io_error_response(&err);
                }
            }
            FileBody {
                file: Some(file),
                remaining: count,
                buf: BytesMut::new(),
            }
            .boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        insert_text(
            response_headers,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{len}"),
        );
    }
    validators.write_headers(response_headers);
    response
}

/// A request path after decoding and validation, as plain file name segments.
struct RequestPath {
    /// The segments joined by `/`, with a final `/` when the decoded path ended in one: the
    /// file cache's key. Segments are non-empty, none is `.` or `..`, none contains `/`.
    key: String,
    /// Whether the decoded path ended in `/`, which decides between serving a
    /// directory's index and redirecting to the slash form.
    trailing_slash: bool,
}

impl RequestPath {
    fn segments(&self) -> impl Iterator<Item = &str> {
        self.key.split('/').filter(|s| !s.is_empty())
    }

    /// Decodes once and rejects anything that could name a file outside the
    /// root or that no sane client sends; `None` means 400. A path without escapes is not
    /// copied to be decoded: only the key is allocated.
    fn parse(raw: &str) -> Option<RequestPath> {
        if !raw.starts_with('/') {
            return None;
        }
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        // Backslashes are separators on other systems and in some proxies, so
        // they are refused rather than allowed to mean two different things.
        if decoded.contains(['\0', '\\']) {
            return None;
        }
        let mut key = String::with_capacity(decoded.len());
        for segment in decoded.split('/') {
            match segment {
                // Empty and `.` segments name the same directory, so they are
                // dropped; the redirect target is rebuilt without them.
                "" | "." => {}
                ".." => return None,
                name => {
                    if !key.is_empty() {
                        key.push('/');
                    }
                    key.push_str(name);
                }
            }
        }
        let trailing_slash = decoded.ends_with('/');
        if trailing_slash {
            key.push('/');
        }
        Some(RequestPath {
            key,
            trailing_slash,
        })
    }

    /// Whether the path is longer than any file the OS could hold.
    fn exceeds_os_limits(&self) -> bool {
        let total: usize = self.segments().map(|s| s.len() + 1).sum();
        total > MAX_PATH_LEN || self.segments().any(|s| s.len() > MAX_NAME_LEN)
    }

    /// The same path with a trailing slash, percent-encoded for `Location`.
    fn slash_location(&self) -> String {
        let mut location = String::from("/");
        for segment in self.segments() {
            location.extend(utf8_percent_encode(segment, SEGMENT_ESCAPES));
            location.push('/');
        }
        location
    }
}

/// Whether a path names a hidden file or directory (`.git`, `.env`, `.htpasswd`), which are
/// never served — a safer default than nginx's. `.well-known` (RFC 8615) is the exception.
fn is_hidden<'a>(mut segments: impl Iterator<Item = &'a str>) -> bool {
    segments.any(|s| s.starts_with('.') && s != ".well-known")
}

/// A regular file inside the root that the request maps to.
struct Target {
    /// Canonical path, already checked to be inside the root.
    path: PathBuf,
    /// Picked by the name as requested (or `index.html`), so a symlink is typed by its
    /// own name, as nginx does.
    content_type: &'static str,
}

/// Where a response's bytes come from.
enum Source {
    Memory(Bytes),
    /// An open file and its length, streamed.
    File(std::fs::File, u64),
}

/// Files up to this size are read whole together with their metadata, so serving them
/// takes one trip to the blocking pool (and none while cached); larger ones are streamed.
const SMALL_FILE: u64 = 256 * 1024;

/// What a response is made from: the file's type, validators and bytes.
struct Found {
    content_type: &'static str,
    validators: Validators,
    source: Source,
}

impl From<Cached> for Found {
    fn from(hit: Cached) -> Found {
        Found {
            content_type: hit.content_type,
            validators: hit.validators,
            source: Source::Memory(hit.data),
        }
    }
}

/// The file a request names: from memory when cached (no blocking task), else from one
/// trip to the blocking pool for every file system call of the request, since each trip
/// costs more than the calls themselves when the page cache answers. Concurrent misses
/// for one path share one trip (see `cache.rs`).
// The error is the response to send, made once per refused request; boxing it would
// only add an allocation.
#[allow(clippy::result_large_err)]
async fn find(root: &Root, request: RequestPath) -> Result<Found, Response<Body>> {
    let loading = match root.cache.lookup(&request.key) {
        Lookup::Hit(hit) => return Ok(hit.into()),
        Lookup::Wait(mut reader) => {
            // The reader never sends: this returns (with an error) when it is done.
            let _ = reader.changed().await;
            if let Some(hit) = root.cache.get(&request.key) {
                return Ok(hit.into());
            }
            // It found nothing to keep (a large file, a redirect, an error): this
            // request looks for itself.
            None
        }
        Lookup::Load(loading) => Some(loading),
    };
    let task_root = root.clone();
    // The guard goes with the task, so the waiters are woken when the read is done even
    // if this request is cancelled meanwhile.
    tokio::task::spawn_blocking(move || open(&task_root, &request, loading))
        .await
        .unwrap_or_else(|_| {
            Err(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error\n",
            ))
        })
}

/// Resolves, opens and (for small files) reads, all with blocking calls: run it on the
/// blocking pool. A small file is stored in the cache through `loading`, if given.
// The error is the response to send, made once per refused request; boxing it would
// only add an allocation.
#[allow(clippy::result_large_err)]
fn open(
    root: &Root,
    request: &RequestPath,
    loading: Option<Loading>,
) -> Result<Found, Response<Body>> {
    use std::io::Read;
    let target = resolve(root, request)?;
    // The file is opened before conditions are checked so that an unreadable
    // file reports 403 consistently, whatever headers came with the request.
    let mut file = std::fs::File::open(&target.path).map_err(|err| io_error_response(&err))?;
    // Metadata comes from the open handle so the headers describe exactly the
    // file whose bytes are sent, even if the path was replaced meanwhile.
    let metadata = file.metadata().map_err(|err| io_error_response(&err))?;
    if !metadata.is_file() {
        return Err(not_found());
    }
    let modified = metadata.modified().ok();
    if metadata.len() <= SMALL_FILE {
        // Capacity one byte over, so a file that grew meanwhile is still read whole.
        let mut buf = Vec::with_capacity(metadata.len() as usize + 1);
        (&mut file)
            .take(SMALL_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|err| io_error_response(&err))?;
        if buf.len() as u64 <= SMALL_FILE {
            let data = Bytes::from(buf);
            let validators = Validators::new(data.len() as u64, modified);
            if let Some(loading) = loading {
                loading.finish(Cached {
                    content_type: target.content_type,
                    validators: validators.clone(),
                    data: data.clone(),
                    checked: Instant::now(),
                });
            }
            return Ok(Found {
                content_type: target.content_type,
                validators,
                source: Source::Memory(data),
            });
        }
        // It grew past the limit while being read: stream it from the start instead.
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0))
            .map_err(|err| io_error_response(&err))?;
    }
    Ok(Found {
        content_type: target.content_type,
        validators: Validators::new(metadata.len(), modified),
        source: Source::File(file, metadata.len()),
    })
}

/// Maps a validated request path to a file, or to the response to send
/// instead (redirect, 403, 404, 500).
// The error is the response to send, made once per refused request; boxing it would
// only add an allocation.
#[allow(clippy::result_large_err)]
fn resolve(root: &Root, request: &RequestPath) -> Result<Target, Response<Body>> {
    if request.exceeds_os_limits() {
        return Err(not_found());
    }
    let mut joined = root.path.clone();
    joined.extend(request.segments());
    let canonical = canonical_inside(root, &joined)?;
    if is_hidden(request.segments())
        || is_hidden(
            canonical
                .strip_prefix(&root.path)
                .unwrap_or(&canonical)
                .iter()
                .filter_map(|c| c.to_str()),
        )
    {
        return Err(not_found());
    }
    let metadata = std::fs::metadata(&canonical).map_err(|err| io_error_response(&err))?;

    if metadata.is_dir() {
        if !request.trailing_slash {
            return Err(redirect(&request.slash_location()));
        }
        // The index itself may be a symlink, so it is checked against the
        // root just like the directory was.
        let index = canonical_inside(root, &canonical.join(INDEX_FILE))?;
        let index_metadata = std::fs::metadata(&index).map_err(|err| io_error_response(&err))?;
        if !index_metadata.is_file() {
            return Err(not_found());
        }
        return Ok(Target {
            path: index,
            content_type: content_type(INDEX_FILE),
        });
    }

    // A file asked for as if it were a directory does not exist, and special
    // files (FIFOs, sockets, devices) are never served: opening a FIFO would
    // block a worker thread.
    if !metadata.is_file() || request.trailing_slash {
        return Err(not_found());
    }
    Ok(Target {
        path: canonical,
        content_type: content_type(request.segments().last().unwrap_or_default()),
    })
}

/// Canonicalizes `path` and refuses it unless it is still under the root, so
/// symlinks may point anywhere inside the root but nowhere outside it.
// The error is the response to send, made once per refused request; boxing it would
// only add an allocation.
#[allow(clippy::result_large_err)]
fn canonical_inside(root: &Root, path: &Path) -> Result<PathBuf, Response<Body>> {
    let canonical = std::fs::canonicalize(path).map_err(|err| io_error_response(&err))?;
    // `Path::starts_with` compares whole components, so `/srv/site2` is not
    // mistaken for being inside `/srv/site`.
    if canonical.starts_with(&root.path) {
        Ok(canonical)
    } else {
        Err(not_found())
    }
}

/// Content-Type by file extension; text types are declared UTF-8 because
/// that is what sites are written in today, and browsers would otherwise
/// guess.
fn content_type(name: &str) -> &'static str {
    let Some((_, extension)) = name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    // Extensions are short: lowercased on the stack, not in a new String.
    let mut lower = [0u8; 8];
    let Some(buf) = lower.get_mut(..extension.len()) else {
        return "application/octet-stream";
    };
    buf.copy_from_slice(extension.as_bytes());
    buf.make_ascii_lowercase();
    match &*buf {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"txt" => "text/plain; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/x-icon",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"pdf" => "application/pdf",
        b"wasm" => "application/wasm",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"ogg" => "audio/ogg",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// A body that reads `remaining` bytes from the file's current position in
/// chunks of at most `CHUNK_SIZE`, so memory use stays flat for any file.
struct FileBody {
    /// Dropped (closing the file) as soon as the last byte has been read.
    file: Option<tokio::fs::File>,
    remaining: u64,
    buf: BytesMut,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            this.file = None;
            return Poll::Ready(None);
        }
        let Some(file) = this.file.as_mut() else {
            return Poll::Ready(None);
        };
        let want = usize::try_from(this.remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        // Resizing is a no-op when a previous poll returned Pending, so the
        // buffer the pending read will fill is the one offered again.
        this.buf.resize(want, 0);
        let mut read_buf = ReadBuf::new(&mut this.buf[..]);
        match Pin::new(file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                this.file = None;
                this.remaining = 0;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(Ok(())) => {
                let read = read_buf.filled().len();
                if read == 0 {
                    // The file shrank after Content-Length was sent; failing
                    // makes the connection abort instead of hanging.
                    this.file = None;
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while it was being served",
                    ))));
                }
                this.buf.truncate(read);
                this.remaining = this.remaining.saturating_sub(read as u64);
                if this.remaining == 0 {
                    this.file = None;
                }
                Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A short plain-text response for errors and redirects.
fn text_response(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(message.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(message.len()));
    response
}

fn not_found() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "not found\n")
}

fn redirect(location: &str) -> Response<Body> {
    let mut response = text_response(StatusCode::MOVED_PERMANENTLY, "moved permanently\n");
    insert_text(response.headers_mut(), header::LOCATION, location);
    response
}

/// Maps a file system error to the status an operator would expect.
fn io_error_response(err: &io::Error) -> Response<Body> {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => not_found(),
        io::ErrorKind::PermissionDenied => text_response(StatusCode::FORBIDDEN, "forbidden\n"),
        _ => text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n"),
    }
}

/// Inserts a header built by this module. Every such value is ASCII by
/// construction (digits, hex, quotes, HTTP dates, percent-encoded paths), so
/// the conversion cannot fail; skipping the header on failure keeps even an
/// impossible case from panicking.
fn insert_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

mod cache;
mod conditional;

#[cfg(all(test, unix))]
mod tests;
