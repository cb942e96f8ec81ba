//! The serial console as captured from QEMU: raw bytes for the log, clean lines for people and parsers.

use std::fmt;

/// How many console lines a failure shows.
pub const TAIL_LINES: usize = 50;

/// Everything the guest wrote to its serial console during one boot.
#[derive(Debug, Clone, Default)]
pub struct Console {
    raw: Vec<u8>,
    lines: Vec<String>,
    /// Bytes after the last newline: a line the guest had not finished when the console closed.
    partial: Vec<u8>,
}

impl Console {
    /// An empty console.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes as they arrive and returns the lines they completed (already cleaned).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.raw.extend_from_slice(bytes);
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = clean_line(&self.partial);
                self.partial.clear();
                self.lines.push(line.clone());
                done.push(line);
            } else {
                self.partial.push(b);
            }
        }
        done
    }

    /// Ends the capture: an unterminated last line becomes a line of its own.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = clean_line(&self.partial);
        self.partial.clear();
        self.lines.push(line.clone());
        Some(line)
    }

    /// The bytes exactly as QEMU passed them on (firmware escape sequences, `\r\n` and all).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The complete lines, without `\r` and terminal escape sequences.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The cleaned lines joined with `\n`.
    pub fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> Tail<'_> {
        let start = self.lines.len().saturating_sub(n);
        Tail {
            lines: &self.lines[start..],
            skipped: start,
        }
    }
}

/// The end of a console, displayed as an indented block.
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    lines: &'a [String],
    skipped: usize,
}

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return write!(f, "    (the console stayed empty)");
        }
        if self.skipped > 0 {
            writeln!(
                f,
                "    ... {} earlier lines not shown (set IMAGER_BOOT_LOG_DIR to keep the whole log)",
                self.skipped
            )?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "    | {line}")?;
        }
        Ok(())
    }
}

/// Turns one raw console line into plain text.
///
/// Firmware (OVMF, systemd-boot) paints the serial console with ANSI escape sequences and the
/// kernel ends lines with `\r\n`; neither means anything to a parser or in an error message, and
/// raw escapes in a test report would repaint the reader's terminal. Invalid UTF-8 is replaced
/// rather than rejected because a console can carry binary noise (e.g. a firmware's line noise).
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: ESC [ parameters... final byte in '@'..='~'.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // Two-character escapes such as ESC c (reset) or ESC ( B (charset, one more char).
                Some('(' | ')') => {
                    chars.next();
                    chars.next();
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_carriage_returns_and_escapes() {
        let mut console = Console::new();
        let done =
            console.push(b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\nimager-node-init: st");
        assert_eq!(done, vec!["BdsDxe: loading".to_string()]);
        let done = console.push(b"art\r\n\x1b(Bplain\ttab\x07\n");
        assert_eq!(
            done,
            vec![
                "imager-node-init: start".to_string(),
                "plain\ttab".to_string()
            ]
        );
        assert_eq!(console.finish(), None);
        assert_eq!(
            console.raw().len(),
            b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\nimager-node-init: start\r\n\x1b(Bplain\ttab\x07\n"
                .len()
        );
    }

    #[test]
    fn an_unfinished_last_line_is_kept() {
        let mut console = Console::new();
        console.push(b"one\ntwo");
        assert_eq!(console.lines(), ["one"]);
        assert_eq!(console.finish().as_deref(), Some("two"));
        assert_eq!(console.text(), "one\ntwo\n");
    }

    #[test]
    fn tail_shows_only_the_last_lines_and_says_how_many_were_cut() {
        let mut console = Console::new();
        for i in 0..60 {
            console.push(format!("line {i}\n").as_bytes());
        }
        let shown = console.tail(TAIL_LINES).to_string();
        assert!(shown.starts_with("    ... 10 earlier lines not shown"));
        assert!(!shown.contains("line 9\n"));
        assert!(shown.contains("    | line 10\n"));
        assert!(shown.ends_with("    | line 59"));
        assert_eq!(shown.lines().count(), 51);
        assert_eq!(
            Console::new().tail(5).to_string(),
            "    (the console stayed empty)"
        );
    }

    #[test]
    fn invalid_utf8_does_not_lose_the_line() {
        assert_eq!(clean_line(b"a\xffb"), "a\u{fffd}b");
    }
}
