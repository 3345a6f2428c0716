//! `starling archive import`: messages into one account's message archive (XEP-0313) from
//! JSON lines, one object per line, oldest first, as `compat/bench`'s `archive-gen --format
//! jsonl` writes them:
//!
//! ```json
//! {"ts_us":1764547200000000,"direction":"in","with":"peer3@localhost/phone","id":"m17","stanza":"<message …/>"}
//! ```
//!
//! `ts_us` is when the message was archived (microseconds since the epoch: its position, so
//! distinct from every other in the database), `direction` `in` or `out`, `with` the other
//! party as addressed, `id` the message's own id (not used: the archive gives its own ids),
//! `stanza` the message as routed (kept as the server serialises it once parsed, so that
//! queries write it out without parsing it again). Rows go through
//! [`ArchiveStore::insert_bulk`], 10,000 per transaction.
//!
//! The objects are flat (strings and integers), so a small reader does, rather than a JSON
//! library for one command.

use std::io::BufRead;

use jid::{BareJid, Jid};

use crate::storage::{ArchiveStore, BulkMessage, StorageError};

/// Lines per call of the bulk insert (one transaction).
const CHUNK: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// One message to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLine {
    pub ts_us: i64,
    pub with: Jid,
    pub stanza: String,
}

/// Read every line of `input` into `owner`'s archive; returns how many messages went in.
/// Nothing of a chunk with a bad line is written; earlier chunks stay.
pub async fn import(store: &ArchiveStore, owner: &BareJid, input: impl BufRead) -> Result<u64, ImportError> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut imported = 0u64;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(&line).map_err(|reason| ImportError::Line { line: i + 1, reason })?;
        chunk.push(BulkMessage { owner: owner.clone(), with: parsed.with, stanza: parsed.stanza, at_micros: Some(parsed.ts_us) });
        if chunk.len() == CHUNK {
            imported += store.insert_bulk(&chunk).await?.len() as u64;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        imported += store.insert_bulk(&chunk).await?.len() as u64;
    }
    Ok(imported)
}

/// One line: the fields above, checked (the stanza must be a `<message/>` our reader takes).
pub fn parse_line(line: &str) -> Result<ImportLine, String> {
    let mut ts_us = None;
    let mut with = None;
    let mut stanza = None;
    let mut direction = None;
    for (key, value) in parse_flat_object(line)? {
        match (key.as_str(), value) {
            ("ts_us", Value::Int(n)) => ts_us = Some(n),
            ("with", Value::Str(s)) => with = Some(Jid::new(&s).map_err(|_| format!("'with' is not a JID: {s:?}"))?),
            ("stanza", Value::Str(s)) => stanza = Some(s),
            ("direction", Value::Str(s)) if s == "in" || s == "out" => direction = Some(s),
            ("id", Value::Str(_)) => {}
            (key, _) => return Err(format!("unexpected or mistyped field {key:?}")),
        }
    }
    let stanza = stanza.ok_or("no 'stanza'")?;
    let el = crate::xml::parse_element(&stanza).map_err(|e| format!("'stanza' is not XML: {e}"))?;
    if !el.is("message", crate::xml::ns::CLIENT) {
        return Err("'stanza' is not a jabber:client <message/>".into());
    }
    direction.ok_or("no 'direction' (in or out)")?;
    Ok(ImportLine { ts_us: ts_us.ok_or("no 'ts_us'")?, with: with.ok_or("no 'with'")?, stanza })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(i64),
}

/// A JSON object whose values are strings or integers, nothing else (RFC 8259 syntax).
fn parse_flat_object(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Reader { chars: text.char_indices().peekable(), text };
    let mut fields = Vec::new();
    p.skip_ws();
    p.expect('{')?;
    p.skip_ws();
    if p.peek() == Some('}') {
        p.next();
    } else {
        loop {
            p.skip_ws();
            let key = p.string()?;
            p.skip_ws();
            p.expect(':')?;
            p.skip_ws();
            let value = match p.peek() {
                Some('"') => Value::Str(p.string()?),
                Some(c) if c == '-' || c.is_ascii_digit() => Value::Int(p.integer()?),
                other => return Err(format!("field {key:?}: expected a string or an integer, found {other:?}")),
            };
            fields.push((key, value));
            p.skip_ws();
            match p.next() {
                Some(',') => continue,
                Some('}') => break,
                other => return Err(format!("expected ',' or '}}', found {other:?}")),
            }
        }
    }
    p.skip_ws();
    match p.next() {
        None => Ok(fields),
        Some(c) => Err(format!("unexpected {c:?} after the object")),
    }
}

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl Reader<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|(_, c)| *c)
    }

    fn next(&mut self) -> Option<char> {
        self.chars.next().map(|(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.next();
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.next() {
            Some(c) if c == want => Ok(()),
            other => Err(format!("expected {want:?}, found {other:?}")),
        }
    }

    fn integer(&mut self) -> Result<i64, String> {
        let start = self.chars.peek().map(|(i, _)| *i).unwrap_or(self.text.len());
        let mut end = start;
        while let Some(&(i, c)) = self.chars.peek() {
            if (c == '-' && i == start) || c.is_ascii_digit() {
                end = i + 1;
                self.next();
            } else if matches!(c, '.' | 'e' | 'E' | '+') {
                return Err("only integers are expected".into());
            } else {
                break;
            }
        }
        self.text[start..end].parse().map_err(|_| format!("not an integer: {:?}", &self.text[start..end]))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut n = 0;
        for _ in 0..4 {
            let d = self.next().and_then(|c| c.to_digit(16)).ok_or("a \\u escape needs four hex digits")?;
            n = n * 16 + d;
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.next().ok_or("unterminated string")? {
                '"' => return Ok(out),
                '\\' => match self.next().ok_or("unterminated escape")? {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let first = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&first) {
                            if self.next() != Some('\\') || self.next() != Some('u') {
                                return Err("a high surrogate without its low one".into());
                            }
                            let second = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return Err("a high surrogate without its low one".into());
                            }
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        out.push(char::from_u32(code).ok_or("a lone surrogate")?);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                },
                c if (c as u32) < 0x20 => return Err("a control character in a string".into()),
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bench_format() {
        let line = r#"{"ts_us":1764547200000000,"direction":"in","with":"peer3@localhost/phone","id":"m17","stanza":"<message xmlns='jabber:client' from='peer3@localhost/phone' to='a0@localhost' type='chat' id='m17'><body>arch 17 \"q\" \u00e9\ud83d\ude00 \\ \/</body></message>"}"#;
        let parsed = parse_line(line).unwrap();
        assert_eq!(parsed.ts_us, 1_764_547_200_000_000);
        assert_eq!(parsed.with.as_str(), "peer3@localhost/phone");
        assert!(parsed.stanza.contains("arch 17 \"q\" é😀 \\ /"), "{}", parsed.stanza);
        let spaced = " { \"ts_us\" : -5 , \"direction\" : \"out\" , \"with\" : \"a@b\" , \"stanza\" : \"<message xmlns='jabber:client'/>\" } ";
        assert_eq!(parse_line(spaced).unwrap().ts_us, -5);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let ok = r#""direction":"in","with":"a@b","stanza":"<message xmlns='jabber:client'/>""#;
        for bad in [
            format!("{{\"ts_us\":1.5,{ok}}}"),
            format!("{{\"ts_us\":1e3,{ok}}}"),
            format!("{{\"ts_us\":\"1\",{ok}}}"),
            format!("{{\"ts_us\":99999999999999999999,{ok}}}"),
            format!("{{{ok}}}"),
            format!("{{\"ts_us\":1,{ok},\"extra\":true}}"),
            format!("{{\"ts_us\":1,{ok}}} trailing"),
            format!("{{\"ts_us\":1,{ok}"),
            r#"{"ts_us":1,"direction":"sideways","with":"a@b","stanza":"<message xmlns='jabber:client'/>"}"#.to_string(),
            r#"{"ts_us":1,"direction":"in","with":"a@b@c","stanza":"<message xmlns='jabber:client'/>"}"#.to_string(),
            r#"{"ts_us":1,"direction":"in","with":"a@b","stanza":"<iq xmlns='jabber:client'/>"}"#.to_string(),
            r#"{"ts_us":1,"direction":"in","with":"a@b","stanza":"<message"}"#.to_string(),
            r#"{"ts_us":1,"direction":"in","with":"a@b","stanza":"\ud83d"}"#.to_string(),
            "{\"ts_us\":1,\"direction\":\"in\",\"with\":\"a@b\",\"stanza\":\"a\tb\"}".to_string(),
            String::new(),
        ] {
            assert!(parse_line(&bad).is_err(), "{bad}");
        }
    }
}
