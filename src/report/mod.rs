//! Output: JSON Lines (the machine contract), a table for humans, and the
//! summary that closes both.

pub mod html;
pub mod json;
pub mod markdown;
pub mod plot;
pub mod postmortem;
pub mod summary;

use std::io::{self, Write};

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

pub use summary::Summary;

use crate::tfserving::dtype::shape_string;
use crate::tfserving::{Exchange, TensorSummary};

/// Writes one JSON object per line. A write error (a closed pipe) stops the
/// writer; the caller ends quietly.
///
/// Lines are gathered in a buffer of about [`JSONL_BUFFER`] bytes and handed
/// to `out` in large writes.
pub struct JsonLines<W: Write> {
    out: W,
    /// Flush after every line (live capture, pipes into `jq`).
    pub flush_each: bool,
    pub failed: Option<io::Error>,
    buf: Vec<u8>,
}

/// Output gathered before a write to the underlying writer.
pub const JSONL_BUFFER: usize = 64 << 10;

impl<W: Write> JsonLines<W> {
    pub fn new(out: W, flush_each: bool) -> Self {
        JsonLines {
            out,
            flush_each,
            failed: None,
            buf: Vec::with_capacity(JSONL_BUFFER + (4 << 10)),
        }
    }

    /// Writes one exchange through the hand-written writer
    /// ([`json::write_exchange`]: serde_json's bytes, several times faster).
    pub fn exchange(&mut self, ex: &Exchange) -> bool {
        self.write_with(|buf| json::write_exchange(buf, ex))
    }

    /// Writes one line of anything else through serde_json.
    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, value) {
            let e = io::Error::from(e);
            self.buf.truncate(start);
            self.failed = Some(e);
            return false;
        }
        self.end_line()
    }

    /// Writes one line that `put` appends (without its newline).
    pub fn write_with(&mut self, put: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.failed.is_some() {
            return false;
        }
        put(&mut self.buf);
        self.end_line()
    }

    /// Ends the line in the buffer; writes the buffer out when it is full
    /// (or after every line with `flush_each`).
    fn end_line(&mut self) -> bool {
        self.buf.push(b'\n');
        if self.flush_each || self.buf.len() >= JSONL_BUFFER {
            let r = self.out.write_all(&self.buf).and_then(|_| {
                if self.flush_each {
                    self.out.flush()
                } else {
                    Ok(())
                }
            });
            self.buf.clear();
            if let Err(e) = r {
                self.failed = Some(e);
                return false;
            }
        }
        true
    }

    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        r.and_then(|_| self.out.flush())
    }
}

/// `one` for a count of 1, else `many`: "1 failure", "2 failures" in the
/// human-readable outputs (the JSON keeps its fixed field names).
pub fn plural<'a, N: PartialEq + From<u8>>(n: N, one: &'a str, many: &'a str) -> &'a str {
    if n == N::from(1) {
        one
    } else {
        many
    }
}

/// Text from the capture is attacker-controlled: control characters (ANSI
/// escapes included) are shown escaped, never sent to the terminal.
pub fn escape_for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn tensor_line(t: &TensorSummary) -> String {
    let shape = t
        .shape
        .as_deref()
        .map(shape_string)
        .unwrap_or_else(|| "<unknown>".into());
    let dtype = t.dtype.unwrap_or("DT_?");
    format!(
        "{} {} {}",
        escape_for_terminal(&t.name),
        dtype.trim_start_matches("DT_").to_lowercase(),
        shape
    )
}

/// `Predict fraud:1/serving_default`: method, model, version or label,
/// signature, as the table and the live view show a call (not escaped).
pub fn call_label(ex: &Exchange) -> String {
    let mut call = ex.method.as_deref().unwrap_or("?").to_string();
    if let Some(m) = &ex.model {
        call.push(' ');
        call.push_str(m);
        if let Some(v) = ex.version {
            call.push_str(&format!(":{v}"));
        } else if let Some(l) = &ex.version_label {
            call.push_str(&format!("@{l}"));
        }
        if let Some(s) = &ex.signature {
            call.push('/');
            call.push_str(s);
        }
    }
    call
}

/// The width to fix a table at, or `None` to let comfy-table follow the
/// terminal. Off a terminal there is no width to fit, and some pseudo-terminals
/// (`script`, CI runners) report 0 columns, which comfy-table would take
/// literally (one-character columns): both use `$COLUMNS`, or 120.
fn fixed_width(terminal: Option<u16>, columns: Option<&str>) -> Option<u16> {
    match terminal {
        Some(w) if w > 0 => None,
        _ => Some(
            columns
                .and_then(|c| c.trim().parse::<u16>().ok())
                .filter(|&c| c >= 40)
                .unwrap_or(120),
        ),
    }
}

/// Collects rows and prints them as a table at the end.
pub struct TableReport {
    /// Show successful exchanges too.
    pub all: bool,
    pub color: bool,
    /// Rows kept at most; the rest are counted (the JSON Lines output has them all).
    pub max_rows: usize,
    rows: Vec<Exchange>,
    hidden_ok: u64,
    hidden_rows: u64,
}

impl TableReport {
    pub fn new(all: bool, color: bool) -> Self {
        TableReport {
            all,
            color,
            max_rows: 2000,
            rows: Vec::new(),
            hidden_ok: 0,
            hidden_rows: 0,
        }
    }

    pub fn add(&mut self, ex: Exchange) {
        if ex.status.ok && !self.all {
            self.hidden_ok += 1;
        } else if self.rows.len() >= self.max_rows {
            self.hidden_rows += 1;
        } else {
            self.rows.push(ex);
        }
    }

    pub fn print(&self, summary: &Summary, out: &mut impl Write) -> io::Result<()> {
        if !self.rows.is_empty() {
            let mut t = Table::new();
            t.load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(vec!["#", "call", "inputs sent", "status", "diagnosis"]);
            let detected = if std::io::IsTerminal::is_terminal(&io::stdout()) {
                t.width()
            } else {
                None
            };
            if let Some(w) = fixed_width(detected, std::env::var("COLUMNS").ok().as_deref()) {
                t.set_width(w);
            }
            for ex in &self.rows {
                let time = ex
                    .start
                    .as_deref()
                    .and_then(|s| s.get(11..23))
                    .unwrap_or("?")
                    .to_string();
                let call = call_label(ex);
                let inputs = if let Some(n) = ex.examples {
                    format!("{n} {}", plural(n, "example", "examples"))
                } else {
                    let mut lines: Vec<String> = ex
                        .inputs
                        .iter()
                        .take(8)
                        .map(|t| clip(&tensor_line(t), 60))
                        .collect();
                    if ex.inputs.len() > 8 {
                        lines.push(format!("… {} more", ex.inputs.len() - 8));
                    }
                    lines.join("\n")
                };
                let mut status = match (ex.status.grpc_status, ex.status.http_status) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(h)) => format!("HTTP {h}"),
                    (None, None) => "no status".to_string(),
                };
                if let Some(m) = &ex.status.message {
                    status.push('\n');
                    status.push_str(&clip(&escape_for_terminal(m), 160));
                } else if let Some(r) = &ex.status.reset {
                    status.push('\n');
                    status.push_str(r);
                }
                let diagnosis = match &ex.diagnosis {
                    Some(d) => format!(
                        "{} ({:?})\n{}\nfix: {}",
                        d.category,
                        d.confidence,
                        escape_for_terminal(&d.summary),
                        escape_for_terminal(&d.fix)
                    )
                    .replace("(Certain)", "(certain)")
                    .replace("(Likely)", "(likely)")
                    .replace("(Possible)", "(possible)"),
                    None if !ex.notes.is_empty() => escape_for_terminal(&ex.notes.join("; ")),
                    None => String::new(),
                };
                let mut status_cell = Cell::new(status);
                if self.color {
                    status_cell = status_cell.fg(if ex.status.ok {
                        Color::Green
                    } else {
                        Color::Red
                    });
                }
                t.add_row(vec![
                    Cell::new(ex.id),
                    Cell::new(format!(
                        "{}\n{}\n{}",
                        clip(&escape_for_terminal(&call), 80),
                        ex.client,
                        time
                    )),
                    Cell::new(inputs),
                    status_cell,
                    Cell::new(diagnosis),
                ]);
            }
            writeln!(out, "{t}")?;
        }
        if self.hidden_rows > 0 {
            writeln!(
                out,
                "… {} more {} not shown; use --format jsonl for every exchange",
                self.hidden_rows,
                plural(self.hidden_rows, "row", "rows")
            )?;
        }
        writeln!(
            out,
            "{} {}, {} failed{}{}",
            summary.exchanges,
            plural(summary.exchanges, "exchange", "exchanges"),
            summary.failures,
            if summary.incomplete > 0 {
                format!(", {} incomplete", summary.incomplete)
            } else {
                String::new()
            },
            if self.hidden_ok > 0 {
                format!(
                    " ({} successful not shown; --all shows them)",
                    self.hidden_ok
                )
            } else {
                String::new()
            }
        )?;
        if !summary.root_causes.is_empty() {
            let n = summary.root_causes.len();
            writeln!(
                out,
                "{} {}, {} {}:",
                summary.failures,
                plural(summary.failures, "failure", "failures"),
                n,
                plural(n, "cause", "causes")
            )?;
            for rc in &summary.root_causes {
                writeln!(
                    out,
                    "  {:>6} × {} [{}{}] {}",
                    rc.count,
                    rc.category,
                    clip(&escape_for_terminal(rc.model.as_deref().unwrap_or("?")), 60),
                    rc.signature
                        .as_deref()
                        .map(|s| format!("/{}", escape_for_terminal(s)))
                        .unwrap_or_default(),
                    clip(&escape_for_terminal(&rc.summary), 200)
                )?;
                if !rc.fix.is_empty() {
                    writeln!(out, "           fix: {}", rc.fix)?;
                }
            }
        }
        let c = &summary.capture;
        let n = &summary.network;
        writeln!(
            out,
            "capture: {} {}, {} {}, {} TCP {} ({} HTTP/2), {} {} ({} {} missing){}",
            c.packets,
            plural(c.packets, "packet", "packets"),
            c.bytes,
            plural(c.bytes, "byte", "bytes"),
            n.connections,
            plural(n.connections, "connection", "connections"),
            summary.protocols.http2_connections,
            n.gaps,
            plural(n.gaps, "gap", "gaps"),
            n.gap_bytes,
            plural(n.gap_bytes, "byte", "bytes"),
            if c.cut_short.is_empty() {
                String::new()
            } else {
                format!("; {}", c.cut_short.join("; "))
            }
        )?;
        let p = &summary.protocols;
        if p.streams_with_unknown_headers > 0 || p.mid_connection_pickups > 0 || p.http2.resyncs > 0
        {
            writeln!(
                out,
                "capture quality: {} {} picked up mid-way, {} HTTP/2 {}, {} {} with headers from before the capture (unknown)",
                p.mid_connection_pickups,
                plural(p.mid_connection_pickups, "connection", "connections"),
                p.http2.resyncs,
                plural(p.http2.resyncs, "resync", "resyncs"),
                p.streams_with_unknown_headers,
                plural(p.streams_with_unknown_headers, "stream", "streams")
            )?;
        }
        if !summary.limits_hit.is_empty() {
            let hits: Vec<String> = summary
                .limits_hit
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            writeln!(
                out,
                "limits hit: {} (raise them with the --max-* options)",
                hits.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The `tfwire signature` table: one row per input/output.
pub fn print_signatures(
    models: &[(String, Option<i64>, crate::tfserving::SignatureMap)],
    out: &mut impl Write,
) -> io::Result<()> {
    for (model, version, map) in models {
        writeln!(
            out,
            "model {}{}",
            escape_for_terminal(model),
            version.map(|v| format!(" version {v}")).unwrap_or_default()
        )?;
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec![
                "signature",
                "method",
                "",
                "alias",
                "dtype",
                "shape",
                "tensor",
            ]);
        // Piped, this table keeps its natural width; only a terminal that
        // reports 0 columns needs one (see `fixed_width`).
        let columns = std::env::var("COLUMNS").ok();
        if let Some(w) = t
            .width()
            .and_then(|w| fixed_width(Some(w), columns.as_deref()))
        {
            t.set_width(w);
        }
        // TF's internal init signature is not something clients call.
        for (name, sig) in map.iter().filter(|(n, _)| !n.starts_with("__")) {
            for (kind, specs) in [("input", &sig.inputs), ("output", &sig.outputs)] {
                for s in specs {
                    t.add_row(vec![
                        escape_for_terminal(name),
                        escape_for_terminal(&sig.method_name),
                        kind.to_string(),
                        escape_for_terminal(&s.alias),
                        s.dtype.clone().unwrap_or_else(|| "?".into()),
                        s.shape
                            .as_deref()
                            .map(shape_string)
                            .unwrap_or_else(|| "<unknown>".into()),
                        escape_for_terminal(s.tensor_name.as_deref().unwrap_or("")),
                    ]);
                }
            }
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_for_terminal("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape_for_terminal("x\n\ty"), "x\\n\\ty");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn counts_of_one_are_singular() {
        assert_eq!(plural(1u64, "failure", "failures"), "failure");
        assert_eq!(plural(0usize, "failure", "failures"), "failures");
        assert_eq!(plural(2u32, "failure", "failures"), "failures");

        let mut s = Summary::new();
        s.exchanges = 1;
        s.capture.packets = 1;
        s.capture.bytes = 1;
        s.network.connections = 1;
        s.network.gaps = 1;
        s.network.gap_bytes = 1;
        s.protocols.mid_connection_pickups = 1;
        s.protocols.http2.resyncs = 1;
        s.protocols.streams_with_unknown_headers = 1;
        let mut out = Vec::new();
        TableReport::new(false, false)
            .print(&s, &mut out)
            .expect("print");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("1 exchange, 0 failed"), "{text}");
        assert!(
            text.contains(
                "capture: 1 packet, 1 byte, 1 TCP connection (0 HTTP/2), 1 gap (1 byte missing)"
            ),
            "{text}"
        );
        assert!(
            text.contains("1 connection picked up mid-way, 1 HTTP/2 resync, 1 stream with headers"),
            "{text}"
        );
    }

    #[test]
    fn table_width_falls_back_when_the_terminal_reports_none_or_zero() {
        // A real terminal width: comfy-table follows the terminal.
        assert_eq!(fixed_width(Some(100), Some("60")), None);
        // 0 columns (`script`, some CI pseudo-terminals) is no width at all.
        assert_eq!(fixed_width(Some(0), Some("90")), Some(90));
        assert_eq!(fixed_width(Some(0), None), Some(120));
        assert_eq!(fixed_width(None, Some(" 100 ")), Some(100));
        assert_eq!(fixed_width(None, Some("0")), Some(120));
        assert_eq!(fixed_width(None, Some("wide")), Some(120));
    }
}
