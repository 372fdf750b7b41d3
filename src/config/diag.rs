//! Diagnostics: every problem found in a configuration, each with its path in the file.
//!
//! A check never stops at the first problem: it records a [`Diagnostic`] and goes on, so one
//! run of `portico check` shows everything that needs fixing.

use std::fmt;

/// How bad a problem is. Errors stop the configuration from serving; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: where it is (`site[2].hosts[0]`), what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{level}: {}", self.message)?;
        } else {
            write!(f, "{level}: {}: {}", self.path, self.message)?;
        }
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// The problems found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub items: Vec<Diagnostic>,
}

impl Report {
    pub fn error(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<Option<String>>,
    ) {
        self.push(Severity::Error, path.into(), message.into(), fix.into());
    }

    pub fn warning(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<Option<String>>,
    ) {
        self.push(Severity::Warning, path.into(), message.into(), fix.into());
    }

    fn push(&mut self, severity: Severity, path: String, message: String, fix: Option<String>) {
        self.items.push(Diagnostic {
            severity,
            path,
            message,
            fix,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn extend(&mut self, other: Report) {
        self.items.extend(other.items);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
