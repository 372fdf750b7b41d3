//! nginx's configuration syntax: directives and blocks, single and double quotes with
//! nginx's escapes, `#` comments, `${var}` inside words, and `include` (glob patterns,
//! relative to the main file's directory, nginx's configuration prefix) spliced in where it
//! stands. Errors name the file and line, as `nginx -t` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::source::{self, Loc, MAX_DEPTH};
use super::super::{resolve, File, ImportError};

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub at: Loc,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Splits nginx configuration text into tokens with their lines.
fn tokens(text: &str, file: &File) -> Result<Vec<(Token, usize)>, ImportError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' => out.push((Token::Semicolon, line)),
            '{' => out.push((Token::Open, line)),
            '}' => out.push((Token::Close, line)),
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                let mut closed = false;
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if e == '\n' {
                                    line += 1;
                                }
                                match e {
                                    '"' | '\'' | '\\' => word.push(e),
                                    'n' => word.push('\n'),
                                    't' => word.push('\t'),
                                    'r' => word.push('\r'),
                                    other => {
                                        word.push('\\');
                                        word.push(other);
                                    }
                                }
                            }
                        }
                        d if d == c => {
                            closed = true;
                            break;
                        }
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        d => word.push(d),
                    }
                }
                if !closed {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, start),
                        message: format!("the string opened with {c} here is never closed"),
                    });
                }
                out.push((Token::Word(word), start));
            }
            c => {
                let mut word = String::new();
                let mut first = Some(c);
                loop {
                    let d = match first.take() {
                        Some(d) => d,
                        None => match chars.peek() {
                            Some(&d) if !(d.is_whitespace() || matches!(d, ';' | '{' | '}')) => {
                                chars.next();
                                d
                            }
                            _ => break,
                        },
                    };
                    // As nginx: \" \' \\ \t \r \n are escapes; any other backslash stays.
                    if d == '\\' {
                        match chars.next() {
                            Some(e @ ('"' | '\'' | '\\')) => word.push(e),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some('n') => word.push('\n'),
                            Some(e) => {
                                if e == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(e);
                            }
                            None => word.push('\\'),
                        }
                        continue;
                    }
                    // `${var}` keeps its braces.
                    if d == '$' {
                        word.push(d);
                        if chars.peek() == Some(&'{') {
                            for e in chars.by_ref() {
                                word.push(e);
                                if e == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    word.push(d);
                }
                out.push((Token::Word(word), line));
            }
        }
    }
    Ok(out)
}

/// Parses one file (following its includes) into directives.
fn parse_file(
    path: &Path,
    conf_dir: &Path,
    depth: usize,
    from: Option<&Loc>,
) -> Result<Vec<Directive>, ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::TooDeep {
            at: from
                .cloned()
                .unwrap_or_else(|| Loc::new(&Arc::from(path), 1)),
            depth: MAX_DEPTH,
        });
    }
    let text = source::read_text(path)?;
    let file: File = Arc::from(path);
    let toks = tokens(&text, &file)?;
    let mut pos = 0;
    let out = parse_block(&toks, &mut pos, &file, conf_dir, depth, false)?;
    Ok(out)
}

fn parse_block(
    toks: &[(Token, usize)],
    pos: &mut usize,
    file: &File,
    conf_dir: &Path,
    depth: usize,
    nested: bool,
) -> Result<Vec<Directive>, ImportError> {
    let mut out = Vec::new();
    let mut words: Vec<(String, usize)> = Vec::new();
    while let Some((tok, line)) = toks.get(*pos) {
        *pos += 1;
        match tok {
            Token::Word(w) => words.push((w.clone(), *line)),
            Token::Semicolon => {
                let Some(((name, l), args)) = words.split_first() else {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "unexpected \";\"".to_string(),
                    });
                };
                let at = Loc::new(file, *l);
                let args: Vec<String> = args.iter().map(|(a, _)| a.clone()).collect();
                if name == "include" {
                    let Some(pattern) = args.first() else {
                        return Err(ImportError::Syntax {
                            at,
                            message: "include without a file".to_string(),
                        });
                    };
                    let pattern = resolve(conf_dir, pattern);
                    for f in source::include(&pattern, true, &at)? {
                        out.extend(parse_file(&f, conf_dir, depth + 1, Some(&at))?);
                    }
                } else {
                    out.push(Directive {
                        name: name.clone(),
                        args,
                        at,
                        block: None,
                    });
                }
                words.clear();
            }
            Token::Open => {
                let Some(((name, l), args)) = words.split_first() else {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "a block \"{\" without a directive name".to_string(),
                    });
                };
                let at = Loc::new(file, *l);
                let args = args.iter().map(|(a, _)| a.clone()).collect();
                let name = name.clone();
                words.clear();
                let block = parse_block(toks, pos, file, conf_dir, depth, true)?;
                out.push(Directive {
                    name,
                    args,
                    at,
                    block: Some(block),
                });
            }
            Token::Close => {
                if !words.is_empty() {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: format!("\"{}\" is not terminated by \";\"", words[0].0),
                    });
                }
                if !nested {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "unexpected \"}\"".to_string(),
                    });
                }
                return Ok(out);
            }
        }
    }
    if let Some((w, l)) = words.first() {
        return Err(ImportError::Syntax {
            at: Loc::new(file, *l),
            message: format!("\"{w}\" is not terminated by \";\" before the end of the file"),
        });
    }
    if nested {
        let last = toks.last().map(|(_, l)| *l).unwrap_or(1);
        return Err(ImportError::Syntax {
            at: Loc::new(file, last),
            message: "unexpected end of file, expecting \"}\"".to_string(),
        });
    }
    Ok(out)
}

/// Parses `file` and everything it includes.
pub fn parse(file: &Path) -> Result<Vec<Directive>, ImportError> {
    let conf_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_file(file, &conf_dir, 0, None)
}
