//! Source positions and the file reading the readers share: a [`Loc`] is `file:line`, and
//! includes are followed through [`include`], which expands a glob as the servers do (in
//! name order) and bounds the nesting.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{File, ImportError};

/// A line in a source file: where a finding or a translated value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: File,
    pub line: usize,
}

impl Loc {
    pub fn new(file: &File, line: usize) -> Loc {
        Loc {
            file: file.clone(),
            line,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// How deep includes may nest before the reader gives up (nginx and Apache have no limit,
/// but a file that includes itself would never end).
pub(super) const MAX_DEPTH: usize = 32;

/// The text of `path`; `at` is the directive that named it, for the error.
pub(super) fn read_text(path: &Path) -> Result<String, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Configuration files are ASCII in practice; a stray Latin-1 byte in a comment must not
    // stop the import.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The files an include pattern names, in name order. A pattern without glob characters
/// names one file (or a directory: its files), which must exist when `required`; a glob may
/// match nothing.
pub(super) fn include(
    pattern: &Path,
    required: bool,
    at: &Loc,
) -> Result<Vec<PathBuf>, ImportError> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        if !pattern.exists() {
            if !required {
                return Ok(Vec::new());
            }
            return Err(ImportError::Syntax {
                at: at.clone(),
                message: format!("the included file {text} does not exist"),
            });
        }
        if pattern.is_dir() {
            // Apache's `Include DIR`: every file in it, in name order.
            let mut files: Vec<PathBuf> = std::fs::read_dir(pattern)
                .map_err(|source| ImportError::Read {
                    path: pattern.to_path_buf(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| !p.is_dir())
                .collect();
            files.sort();
            return Ok(files);
        }
        return Ok(vec![pattern.to_path_buf()]);
    }
    let paths = glob::glob(&text).map_err(|e| ImportError::Syntax {
        at: at.clone(),
        message: format!("{text} is not a valid file pattern: {e}"),
    })?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| !p.is_dir())
        .collect();
    files.sort();
    Ok(files)
}
