//! Log output to stderr, as text (the default) or as JSON lines (`[log] format = "json"`).
//!
//! In JSON mode every line, the access log's and every other, is one JSON object: `ts`
//! (RFC 3339, UTC, microseconds), `level` (lower case), `logger` (the event's target:
//! `access` for the access log, a module path otherwise), `msg`, then the event's own
//! fields under their names, numbers and booleans as JSON numbers and booleans. The access
//! log's events choose Caddy's field names in this mode ([`json`] tells them which); other
//! events keep theirs. Formatting writes straight into tracing-subscriber's reused line
//! buffer: no allocation per line, and never anything but formatting on the request path.
//! The format is chosen once, at start; nothing here changes it later.
//!
//! Lines are not written to stderr where they are made. [`Output`] appends each to one
//! buffer in memory (a copy under a mutex, no allocation once the buffer has grown), and
//! one thread writes the buffer out: when it holds 64 KiB, every second, at once for a line
//! that is not the access log's (a warning is not kept waiting), and at the end
//! ([`finish`], after the drain on SIGTERM). A request therefore costs no write(2) of its
//! own. When stderr does not keep up (a slow disk, a full pipe), the buffer stops growing
//! at [`BUFFER_LIMIT`]: further access log lines are dropped and counted ([`dropped`],
//! `portico_log_lines_dropped_total`), and the writer says how many once it can write
//! again; other lines are always kept.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Set once by [`init`] in JSON mode.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON: the access log's events then use the JSON field names.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The format lines are written in, chosen at start.
pub fn format() -> LogFormat {
    if json() {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// Sets up logging to stderr in `format`; `RUST_LOG` overrides the default `info`. A second
/// call changes nothing (the first subscriber stays).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Output::start());
    match format {
        LogFormat::Text => {
            let _ = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .event_format(TextLines::default())
                .try_init();
        }
        LogFormat::Json => {
            if builder
                .with_ansi(false)
                .event_format(JsonLines)
                .try_init()
                .is_ok()
            {
                JSON.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// How much the buffer may hold while stderr does not take it: about 16,000 access log
/// lines. Beyond it, access log lines are dropped (and counted), never waited for.
pub const BUFFER_LIMIT: usize = 4 << 20;
/// The writer writes once the buffer holds this much, without waiting for its second.
const WRITE_AT: usize = 64 << 10;
/// The longest a line waits in the buffer.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// The process's one log buffer and its writer thread.
struct Buffer {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while a batch is written, and taken before `pending` is let go: batches reach
    /// stderr in the order they were taken, and [`finish`] returns only once the writer's
    /// batch in hand is out.
    output: Mutex<()>,
    /// Access log lines dropped because the buffer was full, since the start.
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// A line that should not wait is in `lines`.
    urgent: bool,
    /// [`finish`] was called: write what is there and stop.
    finished: bool,
}

static BUFFER: OnceLock<&'static Buffer> = OnceLock::new();

/// Access log lines dropped so far because stderr did not keep up.
pub fn dropped() -> u64 {
    BUFFER
        .get()
        .map_or(0, |b| b.dropped.load(Ordering::Relaxed))
}

/// Writes out every line logged so far; the process is about to end. Later lines are
/// written as they come, unbuffered.
pub fn finish() {
    let Some(buffer) = BUFFER.get() else { return };
    let mut p = buffer.lock();
    p.finished = true;
    let lines = std::mem::take(&mut p.lines);
    let _out = buffer.output();
    drop(p);
    buffer.wake.notify_one();
    let _ = std::io::stderr().lock().write_all(&lines);
}

impl Buffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while appending leaves whole lines or none: the buffer stays usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn output(&self) -> std::sync::MutexGuard<'_, ()> {
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `line`, or drops it when the buffer is full and it may be dropped.
    fn append(&self, line: &[u8], urgent: bool) {
        let mut p = self.lock();
        if p.finished {
            drop(p);
            let _ = std::io::stderr().lock().write_all(line);
            return;
        }
        if !urgent && p.lines.len() + line.len() > BUFFER_LIMIT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.lines.extend_from_slice(line);
        p.urgent |= urgent;
        let wake = p.urgent || p.lines.len() >= WRITE_AT;
        drop(p);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The writer thread: takes the buffer's lines and writes them to stderr, swapping two
    /// vectors so neither is allocated again.
    fn write_out(&'static self) {
        let mut spare = Vec::new();
        let mut reported = 0;
        loop {
            let out = {
                let mut p = self.lock();
                if !(p.urgent || p.lines.len() >= WRITE_AT || p.finished) {
                    p = self
                        .wake
                        .wait_timeout(p, WRITE_EVERY)
                        .map_or_else(|e| e.into_inner().0, |(p, _)| p);
                }
                if p.finished {
                    return;
                }
                p.urgent = false;
                std::mem::swap(&mut p.lines, &mut spare);
                self.output()
            };
            if !spare.is_empty() {
                // Nothing to do about a stderr that refuses: the lines are gone either way.
                let _ = std::io::stderr().lock().write_all(&spare);
                spare.clear();
            }
            drop(out);
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported {
                tracing::warn!(
                    dropped = dropped - reported,
                    total = dropped,
                    "access log lines dropped: the log's output (stderr) did not keep up"
                );
                reported = dropped;
            }
        }
    }
}

/// What the subscriber writes through: each event's formatted line goes to the buffer.
#[derive(Clone, Copy)]
pub struct Output(&'static Buffer);

impl Output {
    /// The process's buffer, and its writer thread started on first use.
    fn start() -> Output {
        let buffer = *BUFFER.get_or_init(|| {
            let buffer: &'static Buffer = Box::leak(Box::new(Buffer {
                pending: Mutex::default(),
                wake: Condvar::new(),
                output: Mutex::new(()),
                dropped: AtomicU64::new(0),
            }));
            let spawned = std::thread::Builder::new()
                .name("portico-log".to_string())
                .spawn(|| buffer.write_out());
            if spawned.is_err() {
                // No writer: every line is then written where it is made.
                buffer.lock().finished = true;
            }
            buffer
        });
        Output(buffer)
    }
}

/// One event's line on its way to the buffer.
pub struct LineWriter {
    buffer: &'static Buffer,
    urgent: bool,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.buffer.append(line, self.urgent);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Output {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buffer: self.0,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            buffer: self.0,
            urgent: meta.target() != "access",
        }
    }
}

/// Text lines: tracing-subscriber's own format, with the access log's lines written by a
/// lean formatter in exactly the same layout (`2026-12-02T18:13:48.123456Z  INFO access:
/// request listener=https site="a" ...`). The default formatter styles every field name
/// through nu-ansi-term and runs `fmt::write` several times per field: about 20,000
/// instructions for an access line, as much as the rest of a keep-alive HTTP/1.1 request.
/// Lines for a terminal (with colours) and every other event keep the default formatter.
#[derive(Default)]
pub struct TextLines {
    full: format::Format,
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Portico opens no spans; with one, the default formatter would print it.
        if meta.target() != "access" || w.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.full.format_event(ctx, w, event);
        }
        write_ts(&mut w, time::OffsetDateTime::now_utc())?;
        w.write_char(' ')?;
        w.write_str(match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => " WARN",
            Level::INFO => " INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        })?;
        w.write_char(' ')?;
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = TextFields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes fields as tracing-subscriber's default text visitor does: the message as it is,
/// then `name=value`, space separated, a string value quoted and escaped as Rust's `Debug`
/// does, everything else in its `Debug` form (a `%value` field's `Debug` is its
/// `Display`).
struct TextFields<'a, W: fmt::Write> {
    w: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> TextFields<'_, W> {
    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(' ')?;
            }
            if name != "message" {
                self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.w.write_char('=')?;
            }
            value(self.w)
        })();
    }
}

impl<W: fmt::Write> Visit for TextFields<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| write!(w, "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.put(field, |w| {
            // Printable ASCII without a quote or backslash is its own escape.
            let plain = value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            match (message, plain) {
                (true, _) => w.write_str(value),
                (false, true) => {
                    w.write_char('"')?;
                    w.write_str(value)?;
                    w.write_char('"')
                }
                (false, false) => write!(w, "{value:?}"),
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| decimal(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            decimal(w, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
}

/// Writes `n` in decimal, without the formatting machinery.
fn decimal(w: &mut impl fmt::Write, mut n: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    w.write_str(std::str::from_utf8(&digits[at..]).unwrap_or("?"))
}

/// Writes an event as one JSON object and a newline.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"ts\":\"")?;
        write_ts(&mut w, time::OffsetDateTime::now_utc())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(level(*meta.level()))?;
        w.write_str("\",\"logger\":")?;
        string(&mut w, meta.target())?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("}\n")
    }
}

fn level(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// `2026-12-01T23:30:31.123456Z`, as tracing-subscriber writes its timestamps (for the
/// years 0 to 9999), with the digits put in place rather than formatted.
fn write_ts(w: &mut impl fmt::Write, t: time::OffsetDateTime) -> fmt::Result {
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, u32::try_from(t.year()).unwrap_or(0).min(9999));
    put(5, 2, u32::from(u8::from(t.month())));
    put(8, 2, u32::from(t.day()));
    put(11, 2, u32::from(t.hour()));
    put(14, 2, u32::from(t.minute()));
    put(17, 2, u32::from(t.second()));
    put(20, 6, t.microsecond());
    // Only ASCII was written.
    w.write_str(std::str::from_utf8(&b).unwrap_or("?"))
}

/// Writes `s` as a JSON string, quotes included.
fn string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string (RFC 8259 section 7).
struct Escape<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[clean..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            clean = i + 1;
        }
        self.0.write_str(&s[clean..])
    }
}

/// Writes each field as `,"name":value`; the event's message is `msg`.
struct Fields<'a, W: fmt::Write> {
    w: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        let name = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.w.write_char(',')?;
        string(self.w, name)?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` arrives here too, its Debug being its Display.
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escape(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| string(w, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escape(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Rust prints no exponent for f64, so this is a JSON number; NaN and infinities
        // have none.
        if value.is_finite() {
            self.put(field, |w| write!(w, "{value}"));
        } else {
            self.put(field, |w| w.write_str("null"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats one event the way the JSON subscriber does.
    fn line(emit: impl FnOnce()) -> serde_json::Value {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buf").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf-8");
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }

    #[test]
    fn every_field_type_is_json() {
        let v = line(|| {
            tracing::warn!(
                target: "access",
                s = "a \"quoted\"\\ \n\t\u{1}",
                d = %"shown",
                dbg = ?http::Version::HTTP_2,
                n = 42u64,
                i = -3i64,
                b = true,
                f = 0.000_001_5f64,
                inf = f64::INFINITY,
                none = Option::<&str>::None,
                "hello {}", "world"
            )
        });
        assert_eq!(v["level"], "warn");
        assert_eq!(v["logger"], "access");
        assert_eq!(v["msg"], "hello world");
        assert_eq!(v["s"], "a \"quoted\"\\ \n\t\u{1}");
        assert_eq!(v["d"], "shown");
        assert_eq!(v["dbg"], "HTTP/2.0");
        assert_eq!(v["n"], 42);
        assert_eq!(v["i"], -3);
        assert_eq!(v["b"], true);
        assert_eq!(v["f"], 0.000_001_5);
        assert!(v["inf"].is_null());
        assert!(v.get("none").is_none(), "an absent Option is left out: {v}");
    }

    /// What a subscriber made by `make` (writing into the buffer it is given) writes for
    /// the events `emit` sends.
    fn text(make: impl FnOnce(Buf) -> tracing::Dispatch, emit: fn()) -> String {
        let buf = Buf::default();
        let dispatch = make(buf.clone());
        tracing::dispatcher::with_default(&dispatch, emit);
        let text = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf-8");
        text
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buf").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_lines_are_written_as_the_default_text_format_writes_them() {
        fn emit() {
            tracing::info!(
                target: "access",
                listener = %"https",
                site = "a \"b\"\\ \u{e9} \n\u{7f}",
                plain = "TLSv1.3",
                empty = "",
                peer = %std::net::SocketAddr::from(([127, 0, 0, 1], 5)),
                method = %http::Method::GET,
                version = ?http::Version::HTTP_11,
                status = 200u64,
                zero = 0u64,
                big = u64::MAX,
                neg = -12i64,
                min = i64::MIN,
                complete = true,
                no = false,
                f = 1.5f64,
                none = Option::<&str>::None,
                r#type = "x",
                "request"
            );
            tracing::warn!(target: "access", n = 1u64, "passthrough {}", 2);
            tracing::error!(target: "access", "alone");
        }
        let ours = text(
            |b| {
                tracing::Dispatch::new(
                    tracing_subscriber::fmt()
                        .with_writer(move || b.clone())
                        .with_ansi(false)
                        .event_format(TextLines::default())
                        .finish(),
                )
            },
            emit,
        );
        let theirs = text(
            |b| {
                tracing::Dispatch::new(
                    tracing_subscriber::fmt()
                        .with_writer(move || b.clone())
                        .with_ansi(false)
                        .finish(),
                )
            },
            emit,
        );
        let strip = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| {
                    let (ts, rest) = l.split_at(27);
                    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|e| panic!("{ts}: {e}"));
                    rest.to_string()
                })
                .collect()
        };
        assert_eq!(strip(&ours).len(), 3, "{ours}");
        assert_eq!(
            strip(&ours),
            strip(&theirs),
            "ours:\n{ours}\ntheirs:\n{theirs}"
        );
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_microseconds() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_764_631_831_123_456_789)
            .expect("in range");
        let mut s = String::new();
        write_ts(&mut s, t).expect("format");
        assert_eq!(s, "2025-12-01T23:30:31.123456Z");
        let v = line(|| tracing::info!("x"));
        let ts = v["ts"].as_str().expect("ts is a string");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{ts}: {e}"));
    }
}
