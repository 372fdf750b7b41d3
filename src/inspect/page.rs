//! Pages of `bindings` and `certs`: at most `limit` rows, starting after the row whose key
//! is `after`. At 100,000 sites or a million certificates the whole list is more than a
//! terminal, a control socket answer or an admin API response should carry, so the
//! commands print one page by default and say how to ask for the next.
//!
//! A page is chosen before anything is formatted: the callers order cheap references to
//! their rows (a binding, a certificate), find the cursor among them, and build and word
//! only the rows this page shows.

use std::ops::Range;

/// The rows a page holds when the asker does not say (`--limit`, `?limit=`): many screens,
/// yet a document a terminal or a browser takes at once.
pub const DEFAULT_LIMIT: usize = 1000;

/// The longest cursor taken: a certificate file's path (up to 4,096 bytes on Linux) with
/// its `pool:` prefix fits; the control socket's command line is sized for it.
pub const MAX_KEY: usize = 4200;

/// Which rows to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most this many rows; 0 shows them all.
    pub limit: usize,
    /// Start after the row with this key; None starts at the first row.
    pub after: Option<String>,
}

impl Default for Page {
    fn default() -> Page {
        Page {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl Page {
    /// Every row.
    pub fn all() -> Page {
        Page {
            limit: 0,
            after: None,
        }
    }

    /// The rows shown, as positions in the ordered list of `total`, when the cursor's row
    /// (if any) is at `after` (so the page starts at `after + 1`).
    pub fn window(&self, after: Option<usize>, total: usize) -> Range<usize> {
        let start = after.map_or(0, |i| i + 1).min(total);
        let end = match self.limit {
            0 => total,
            n => start.saturating_add(n).min(total),
        };
        start..end
    }
}

/// Whether `key` can be a cursor at all: not empty, no control characters (it travels as
/// one line over the control socket), not longer than [`MAX_KEY`].
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("the cursor is empty: give the key printed after \"next:\"".to_string())
    } else if key.len() > MAX_KEY {
        Err(format!("the cursor is longer than {MAX_KEY} bytes"))
    } else if key.chars().any(char::is_control) {
        Err("the cursor holds a control character".to_string())
    } else {
        Ok(())
    }
}

/// A cursor that names no row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no {what} row has the key {key:?} (a key is {form}, as printed after \"next:\"; the row may be gone since the page before: start again without it)")]
pub struct NoSuchRow {
    /// "bindings" or "certs".
    pub what: &'static str,
    pub key: String,
    /// The key's form, in words.
    pub form: &'static str,
}

/// What a page came to, beside its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Rows on this page.
    pub rows: usize,
    /// Rows in the whole list.
    pub total: usize,
    /// The key of this page's last row when more rows follow.
    pub next: Option<String>,
}

impl Shown {
    /// The line that ends a page of text when it does not hold every row: how many of how
    /// many, and the flag that asks for the next page (quoted for a shell when it needs to
    /// be). None when every row is shown.
    pub fn footer(&self) -> Option<String> {
        if self.rows == self.total {
            return None;
        }
        let (rows, total) = (self.rows, self.total);
        Some(match &self.next {
            Some(key) => format!(
                "{rows} of {total} rows; next: --after {}\n",
                shell_word(key)
            ),
            None => format!("{rows} of {total} rows; this is the last page\n"),
        })
    }
}

/// `s` as one shell word: as it is when nothing in it is special to a shell, else in single
/// quotes. Wildcard hosts (`*.example.com`) and paths with spaces need them.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._/:@%+=,-".contains(c);
    if s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_starts_after_the_cursor_and_holds_at_most_the_limit() {
        let page = |limit| Page { limit, after: None };
        assert_eq!(page(10).window(None, 30), 0..10);
        assert_eq!(page(10).window(Some(9), 30), 10..20);
        assert_eq!(page(10).window(Some(24), 30), 25..30);
        // After the last row: an empty page, not an error.
        assert_eq!(page(10).window(Some(29), 30), 30..30);
        assert_eq!(page(0).window(Some(4), 30), 5..30);
        assert_eq!(page(usize::MAX).window(Some(0), 3), 1..3);
        assert_eq!(page(10).window(None, 0), 0..0);
    }

    #[test]
    fn the_footer_says_how_many_and_how_to_go_on() {
        let shown = |rows, total, next: Option<&str>| Shown {
            rows,
            total,
            next: next.map(str::to_string),
        };
        assert_eq!(shown(3, 3, None).footer(), None);
        assert_eq!(
            shown(10, 30, Some("https/a9.test")).footer().as_deref(),
            Some("10 of 30 rows; next: --after https/a9.test\n")
        );
        assert_eq!(
            shown(1, 2, Some("*:443/*.x.test")).footer().as_deref(),
            Some("1 of 2 rows; next: --after '*:443/*.x.test'\n")
        );
        assert_eq!(
            shown(1, 2, Some("pool:/tmp/it's.pem")).footer().as_deref(),
            Some("1 of 2 rows; next: --after 'pool:/tmp/it'\\''s.pem'\n")
        );
        assert_eq!(
            shown(5, 30, None).footer().as_deref(),
            Some("5 of 30 rows; this is the last page\n")
        );
    }

    #[test]
    fn a_cursor_is_one_printable_line() {
        assert!(check_key("https/a.test").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nreload").is_err());
        assert!(check_key(&"a".repeat(MAX_KEY + 1)).is_err());
    }
}
