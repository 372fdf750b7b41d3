//! Conditional and range requests for static files (RFC 9110 sections 13 and 14): the
//! validators a file version has (`ETag`, `Last-Modified`), the order preconditions are
//! evaluated in, and the single byte range a request may ask for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::HTTP_DATE_LIMIT_SECS;

/// The validators of one version of a file, used for headers and conditions. Made once
/// per version of a file (a cached file keeps them), with their header values ready.
#[derive(Debug, Clone)]
pub(super) struct Validators {
    etag: String,
    etag_header: Option<HeaderValue>,
    /// Modification time truncated to whole seconds, as HTTP dates are, or
    /// `None` when the file system gives none that can be written as a date.
    last_modified: Option<SystemTime>,
    last_modified_header: Option<HeaderValue>,
}

impl Validators {
    pub(super) fn new(len: u64, modified: Option<SystemTime>) -> Validators {
        let since_epoch = modified.and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        // Size and nanosecond mtime change whenever the content is replaced
        // in practice, which is as strong as nginx's and Caddy's tags.
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        let etag = format!("\"{len:x}-{nanos:x}\"");
        let last_modified = since_epoch
            .map(|d| d.as_secs())
            .filter(|secs| *secs < HTTP_DATE_LIMIT_SECS)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        Validators {
            etag_header: HeaderValue::from_str(&etag).ok(),
            etag,
            last_modified_header: last_modified
                .and_then(|time| HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()),
            last_modified,
        }
    }

    pub(super) fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.etag_header {
            headers.insert(header::ETAG, v.clone());
        }
        if let Some(v) = &self.last_modified_header {
            headers.insert(header::LAST_MODIFIED, v.clone());
        }
    }
}

/// What the conditional headers decide before any range is looked at.
pub(super) enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates conditions in the order RFC 9110 section 13.2.2 prescribes.
pub(super) fn evaluate_preconditions(headers: &HeaderMap, validators: &Validators) -> Precondition {
    if let Some(matched) = etag_list_matches(headers, &header::IF_MATCH, &validators.etag, true) {
        if !matched {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (
        header_date(headers, &header::IF_UNMODIFIED_SINCE),
        validators.last_modified,
    ) {
        if modified > since {
            return Precondition::Failed;
        }
    }

    if let Some(matched) =
        etag_list_matches(headers, &header::IF_NONE_MATCH, &validators.etag, false)
    {
        if matched {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(modified)) = (
        header_date(headers, &header::IF_MODIFIED_SINCE),
        validators.last_modified,
    ) {
        if modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether any entity tag listed in every `name` header matches `etag`.
/// `None` when the header is absent, which is different from "no match".
/// With `strong`, weak tags never match (If-Match); otherwise the `W/` prefix
/// is ignored (If-None-Match).
pub(super) fn etag_list_matches(
    headers: &HeaderMap,
    name: &HeaderName,
    etag: &str,
    strong: bool,
) -> Option<bool> {
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        let mut rest = value.as_bytes();
        while let Some((tag, tail)) = next_list_item(rest) {
            rest = tail;
            match tag {
                ListItem::Any => return Some(true),
                ListItem::Tag { weak, opaque } => {
                    if opaque == etag.as_bytes() && !(strong && weak) {
                        return Some(true);
                    }
                }
                ListItem::Junk => {}
            }
        }
    }
    present.then_some(false)
}

/// One element of an If-Match / If-None-Match list.
pub(super) enum ListItem<'a> {
    Any,
    /// `opaque` keeps its double quotes so it compares directly with ours.
    Tag {
        weak: bool,
        opaque: &'a [u8],
    },
    /// Something that is not an entity tag; it matches nothing.
    Junk,
}

/// Splits the next element off a comma-separated entity-tag list. Entity tags
/// may contain commas, so a quoted tag is read up to its closing quote rather
/// than up to the next comma.
pub(super) fn next_list_item(input: &[u8]) -> Option<(ListItem<'_>, &[u8])> {
    let start = input
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b','))?;
    let item = &input[start..];
    if item[0] == b'*' {
        return Some((ListItem::Any, &item[1..]));
    }
    let (weak, quoted) = match item.strip_prefix(b"W/") {
        Some(after) => (true, after),
        None => (false, item),
    };
    if quoted.first() == Some(&b'"') {
        if let Some(close) = quoted[1..].iter().position(|b| *b == b'"') {
            let end = close + 2;
            return Some((
                ListItem::Tag {
                    weak,
                    opaque: &quoted[..end],
                },
                &quoted[end..],
            ));
        }
    }
    let end = item.iter().position(|b| *b == b',').unwrap_or(item.len());
    Some((ListItem::Junk, &item[end..]))
}

/// Parses a header holding one HTTP date; unparsable dates are ignored as
/// RFC 9110 requires.
pub(super) fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// What part of the file a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeRequest {
    Full,
    /// Inclusive byte positions, both within the file.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Decides the range to send, honouring If-Range.
pub(super) fn requested_range(
    headers: &HeaderMap,
    len: u64,
    validators: &Validators,
) -> RangeRequest {
    let mut values = headers.get_all(header::RANGE).iter();
    let Some(value) = values.next() else {
        return RangeRequest::Full;
    };
    // Several Range fields are not valid syntax, and invalid ranges are ignored.
    if values.next().is_some() {
        return RangeRequest::Full;
    }
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if !if_range_matches(if_range, validators) {
            return RangeRequest::Full;
        }
    }
    parse_range(value.as_bytes(), len)
}

/// If-Range holds either an entity tag, compared strongly, or a date, which
/// must equal the file's Last-Modified exactly.
pub(super) fn if_range_matches(value: &HeaderValue, validators: &Validators) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        return text == validators.etag;
    }
    match (httpdate::parse_http_date(text), validators.last_modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

/// Parses a `Range` value for a file of `len` bytes. Syntax errors, other
/// units and multiple ranges all mean the whole file.
pub(super) fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    let Ok(text) = std::str::from_utf8(value) else {
        return RangeRequest::Full;
    };
    let Some((unit, set)) = text.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let Some(spec) = specs.next() else {
        return RangeRequest::Full;
    };
    // Multipart responses are not worth their complexity for a front door;
    // sending the whole file is always a correct answer to a Range request.
    if specs.next().is_some() {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };

    if first.is_empty() {
        // A suffix range: the last `n` bytes, or the whole file if shorter.
        let Some(suffix) = parse_position(last) else {
            return RangeRequest::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: len - suffix.min(len),
            end: len - 1,
        };
    }

    let Some(start) = parse_position(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match parse_position(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// Parses a run of ASCII digits, saturating so that absurd positions behave
/// like "past the end" instead of failing the whole header.
pub(super) fn parse_position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}
