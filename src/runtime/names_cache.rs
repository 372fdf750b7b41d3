//! `state_dir/names.cache`: what loading each certificate found (its names, dates, key
//! type, fingerprint, subject and issuer), with the stamps of its two files, so a start
//! parses only the certificates whose files changed since the last run.
//!
//! Parsing a certificate and checking its key against the leaf costs tens of
//! microseconds; a million of them would take most of a minute. With the cache, a start
//! costs a stat of each file (to compare its stamp) and one read of this file. An entry is
//! a hint, never trusted for what is presented: the chain and key are read from the files
//! when a handshake first needs them, and refused if the leaf is not the one the entry
//! names (`Cert::certified`, `LoadError::Changed`).
//!
//! One line per certificate, fields separated by tabs: the two paths, the two stamps
//! (size, modification time in nanoseconds, inode), not-before, not-after, key type,
//! signature scheme, SHA-256 (hex), subject, issuer, then the SAN names, one per field.
//! Text fields with a tab, a newline or a backslash are escaped. A line that does not
//! read is skipped (that certificate is parsed again); a cache of another format version is
//! ignored as a whole.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::SignatureScheme;

use super::FileStamp;
use crate::names::HostName;
use crate::tls::load::{Cert, CertFiles, KeyType, Signs};

/// The first line: the format this module reads and writes.
const HEADER: &str = "portico names cache 1";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("names.cache")
}

/// Writes `entries` to `file` (through a temporary file renamed over it, so a crash leaves
/// the old cache or the new one). Returns how many it wrote.
pub fn write<'a>(
    file: &Path,
    entries: impl Iterator<Item = (&'a (FileStamp, FileStamp), &'a Cert)>,
) -> std::io::Result<usize> {
    let tmp = file.with_extension("cache.tmp");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    writeln!(out, "{HEADER}")?;
    let written = lines(&mut out, entries)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(written)
}

/// Appends `entries` to `file`, a cache [`write`] made: what a change parsed costs a line
/// each, not a rewrite of every entry. A later line for the same files replaces an earlier
/// one when read. The batch starts on a line of its own, so an append cut short by a crash
/// costs that one entry (a line that does not read is skipped), never the next.
pub fn append<'a>(
    file: &Path,
    entries: impl Iterator<Item = (&'a (FileStamp, FileStamp), &'a Cert)>,
) -> std::io::Result<usize> {
    let f = std::fs::OpenOptions::new().append(true).open(file)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, f);
    out.write_all(b"\n")?;
    let written = lines(&mut out, entries)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(written)
}

fn lines<'a>(
    out: &mut impl Write,
    entries: impl Iterator<Item = (&'a (FileStamp, FileStamp), &'a Cert)>,
) -> std::io::Result<usize> {
    use std::fmt::Write as _;
    let mut written = 0;
    let mut line = String::with_capacity(512);
    for ((cs, ks), c) in entries {
        let (Some(cert), Some(key)) = (c.cert_file.to_str(), c.key_file.to_str()) else {
            continue;
        };
        let (Some(ct), Some(kt)) = (nanos(cs.1), nanos(ks.1)) else {
            continue;
        };
        line.clear();
        for field in [cert, key] {
            escape(&mut line, field);
            line.push('\t');
        }
        // Writing to a String cannot fail.
        for (s, t) in [(cs, ct), (ks, kt)] {
            let _ = write!(line, "{}\t{t}\t{}\t", s.0, s.2);
        }
        let _ = write!(
            line,
            "{}\t{}\t{}\t",
            c.not_before,
            c.not_after,
            key_type_code(c.key_type)
        );
        match c.signs {
            Signs::Rsa => line.push_str("rsa"),
            Signs::One(scheme) => {
                let _ = write!(line, "{}", u16::from(scheme));
            }
        }
        line.push('\t');
        crate::hex::encode_into(&mut line, &c.sha256);
        line.push('\t');
        escape(&mut line, &c.subject);
        line.push('\t');
        escape(&mut line, &c.issuer);
        for n in &c.names {
            line.push('\t');
            line.push_str(n.as_str());
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += 1;
    }
    Ok(written)
}

/// One entry read back.
pub struct Entry {
    pub files: CertFiles,
    pub stamps: (FileStamp, FileStamp),
    pub not_before: i64,
    pub not_after: i64,
    pub key_type: KeyType,
    pub signs: Signs,
    pub sha256: [u8; 32],
    pub subject: String,
    pub issuer: String,
    pub names: Vec<HostName>,
}

/// Reads `file`; nothing when it is missing, of another version, or unreadable.
pub fn read(file: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Vec::new();
    }
    let lines: Vec<&str> = lines.collect();
    super::on_every_core(&lines, |l| entry(l))
        .into_iter()
        .flatten()
        .collect()
}

fn entry(line: &str) -> Option<Entry> {
    let mut f = line.split('\t');
    let cert = unescape(f.next()?)?;
    let key = unescape(f.next()?)?;
    let mut stamp = || -> Option<FileStamp> {
        let len = f.next()?.parse().ok()?;
        let t: u64 = f.next()?.parse().ok()?;
        let ino = f.next()?.parse().ok()?;
        Some((len, UNIX_EPOCH + Duration::from_nanos(t), ino))
    };
    let cs = stamp()?;
    let ks = stamp()?;
    let not_before = f.next()?.parse().ok()?;
    let not_after = f.next()?.parse().ok()?;
    let key_type = key_type_of(f.next()?)?;
    let signs = signs_of(f.next()?)?;
    let sha256 = crate::hex::decode_32(f.next()?)?;
    let subject = unescape(f.next()?)?;
    let issuer = unescape(f.next()?)?;
    let mut names = Vec::new();
    for n in f {
        names.push(HostName::parse(n).ok()?);
    }
    Some(Entry {
        files: CertFiles::new(cert.into(), key.into()),
        stamps: (cs, ks),
        not_before,
        not_after,
        key_type,
        signs,
        sha256,
        subject,
        issuer,
        names,
    })
}

fn nanos(t: SystemTime) -> Option<u64> {
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()
}

fn key_type_code(k: KeyType) -> &'static str {
    match k {
        KeyType::Ecdsa => "ecdsa",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa => "rsa",
    }
}

fn key_type_of(s: &str) -> Option<KeyType> {
    Some(match s {
        "ecdsa" => KeyType::Ecdsa,
        "ed25519" => KeyType::Ed25519,
        "rsa" => KeyType::Rsa,
        _ => return None,
    })
}

fn signs_of(s: &str) -> Option<Signs> {
    Some(match s {
        "rsa" => Signs::Rsa,
        n => Signs::One(SignatureScheme::from(n.parse::<u16>().ok()?)),
    })
}

fn escape(out: &mut String, s: &str) {
    if !s.contains(['\\', '\t', '\n', '\r']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for s in ["plain", "tab\there", "back\\slash", "new\nline\r", ""] {
            let mut e = String::new();
            escape(&mut e, s);
            assert!(!e.contains('\t') && !e.contains('\n'), "{e:?}");
            assert_eq!(unescape(&e).as_deref(), Some(s));
        }
        assert_eq!(unescape("bad\\x"), None);
        assert_eq!(unescape("trailing\\"), None);
    }

    fn cert(dir: &Path, name: &str, sha: u8) -> ((FileStamp, FileStamp), Cert) {
        let files = CertFiles::new(
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let stamp = (10, UNIX_EPOCH + Duration::from_secs(5), u64::from(sha));
        let cert = Cert::from_index(
            &files,
            vec![HostName::parse(&format!("{name}.test")).expect("name")],
            format!("CN={name}.test"),
            "CN=Test CA".to_string(),
            1,
            2,
            KeyType::Ecdsa,
            Signs::One(SignatureScheme::ECDSA_NISTP256_SHA256),
            [sha; 32],
        );
        ((stamp, stamp), cert)
    }

    #[test]
    fn appended_lines_replace_earlier_ones_and_a_torn_append_costs_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("names.cache");
        let (a, b, a2, c) = (
            cert(dir.path(), "a", 1),
            cert(dir.path(), "b", 2),
            cert(dir.path(), "a", 3),
            cert(dir.path(), "c", 4),
        );
        assert_eq!(
            write(&file, [(&a.0, &a.1), (&b.0, &b.1)].into_iter()).expect("write"),
            2
        );
        // A crash in the middle of an append leaves half a line without its newline.
        let mut torn = std::fs::read_to_string(&file).expect("read");
        torn.push_str("half\ta line");
        std::fs::write(&file, torn).expect("write");
        assert_eq!(
            append(&file, [(&a2.0, &a2.1), (&c.0, &c.1)].into_iter()).expect("append"),
            2
        );
        let read = read(&file);
        let shas: Vec<(String, u8)> = read
            .iter()
            .map(|e| (e.subject.clone(), e.sha256[0]))
            .collect();
        let want = [
            ("CN=a.test", 1),
            ("CN=b.test", 2),
            ("CN=a.test", 3),
            ("CN=c.test", 4),
        ];
        assert_eq!(shas, want.map(|(s, n)| (s.to_string(), n)));
        assert_eq!(read[2].names[0].as_str(), "a.test");
        assert_eq!(read[2].files.cert.as_ref(), dir.path().join("a.pem"));
    }

    #[test]
    fn a_bad_line_is_skipped_and_another_version_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("names.cache");
        std::fs::write(&file, "portico names cache 0\nwhatever\n").expect("write");
        assert!(read(&file).is_empty());
        std::fs::write(&file, format!("{HEADER}\nnot\tenough\n")).expect("write");
        assert!(read(&file).is_empty());
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
