//! Printing results: JSON with `--output json`, readable text otherwise.

use serde::Serialize;
use serde_json::Value;

use crate::cli::Output;

/// Writes to stdout (with a newline if `line`). A reader that has gone away (`| head`) ends the
/// program with success, as command-line tools do; any other write failure is an error exit.
pub fn write_stdout(args: std::fmt::Arguments<'_>, line: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if line { out.write_all(b"\n") } else { Ok(()) });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("sigil: cannot write to stdout: {e}");
            std::process::exit(1)
        }
    }
}

/// Prints the outcome of a command that returns no object: `json` with `--output json`, `text`
/// otherwise.
pub fn report(out: Output, json: Value, text: &str) {
    match out {
        Output::Json => println!("{json}"),
        Output::Text => println!("{text}"),
    }
}

/// Reports that `what` happened to `name` (`deleted alice`, `{"result":"deleted","name":"alice"}`).
pub fn done(out: Output, what: &str, name: &str) {
    report(
        out,
        serde_json::json!({ "result": what, "name": name }),
        &format!("{what} {name}"),
    );
}

/// Prints one object.
pub fn item(out: Output, v: &impl Serialize) {
    let value = serde_json::to_value(v).unwrap_or(Value::Null);
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Output::Text => {
            if let Value::Object(map) = &value {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in map {
                    println!("{k:width$}  {}", scalar(v));
                }
            }
        }
    }
}

/// Prints a list as a table of `columns` (text) or a JSON array.
pub fn table(out: Output, rows: &[Value], columns: &[&str]) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(*c).map(scalar).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals.iter().zip(&widths).map(|(v, w)| format!("{v:w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s),
        Value::Null => String::new(),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            printable(&a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        }
        Value::Object(m) if m.values().all(Value::is_string) => printable(
            &m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => other.to_string(),
    }
}

/// `s` with its control characters escaped (`\n`, `\t`, `\u{1b}`): text output is one line per
/// row or field, so a description holding a newline cannot forge a row or field of its own,
/// and stored text cannot send escape sequences to the operator's terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(unprintable) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if unprintable(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Control characters, line and paragraph separators, and the bidirectional controls that
/// reorder what a terminal shows ("Trojan Source").
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_escapes_control_characters() {
        assert_eq!(printable("plain ü text"), "plain ü text");
        assert_eq!(printable("two\nlines\tand\u{1b}[31m"), "two\\nlines\\tand\\u{1b}[31m");
        assert_eq!(scalar(&serde_json::json!(["a\nb", "c"])), "a\\nb,c");
        assert_eq!(printable("a\u{202E}b"), "a\\u{202e}b");
    }
}
