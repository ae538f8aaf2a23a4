//! Streaming output of `tfwire live`: every exchange is diagnosed and written
//! the moment the pipeline hands it over (a line per exchange, or a JSON
//! object flushed per line), with a status line on stderr kept out of its way.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::LiveFormat;
use crate::diagnose::Engine;
use crate::pipeline::ExchangeSink;
use crate::report::{escape_for_terminal, plural, JsonLines, Summary};
use crate::tfserving::dtype::shape_string;
use crate::tfserving::Exchange;

/// What the capture loop is doing when an exchange comes out of the
/// pipeline: exchanges cut short by expiry or by the end of the capture get
/// a note saying so (DESIGN.md §3: `notes` says what is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// `Analyzer::expire_idle` is closing connections idle for this long.
    Expiring(Duration),
    /// The capture stopped; open connections are being closed.
    Closing,
}

enum Out<W: Write> {
    Jsonl(JsonLines<W>),
    Table {
        out: W,
        failures_only: bool,
        color: bool,
        failed: Option<io::Error>,
    },
}

/// The pipeline's exchange sink: diagnoses, counts and prints.
pub struct LiveSink<W: Write> {
    engine: Engine,
    pub rep: Reporter<W>,
}

/// Counts and prints diagnosed exchanges.
pub struct Reporter<W: Write> {
    pub summary: Summary,
    out: Out<W>,
    pub status: StatusLine,
    /// `--count`: exchanges reported before the capture stops.
    limit: Option<u64>,
    pub phase: Phase,
}

impl<W: Write> LiveSink<W> {
    pub fn new(
        mut engine: Engine,
        out: W,
        format: LiveFormat,
        failures_only: bool,
        color: bool,
        status: StatusLine,
        limit: Option<u64>,
    ) -> Self {
        // Live output cannot wait for a later GetModelMetadata: diagnose now.
        engine.max_waiting = 0;
        let out = match format {
            LiveFormat::Jsonl => Out::Jsonl(JsonLines::new(out, true)),
            LiveFormat::Table => Out::Table {
                out,
                failures_only,
                color,
                failed: None,
            },
        };
        LiveSink {
            engine,
            rep: Reporter {
                summary: Summary::new(),
                out,
                status,
                limit,
                phase: Phase::Running,
            },
        }
    }
}

impl<W: Write> Reporter<W> {
    /// `--count` reached.
    pub fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|n| self.summary.exchanges >= n)
    }

    /// Standard output closed (`tfwire live | head`).
    pub fn output_closed(&self) -> bool {
        match &self.out {
            Out::Jsonl(j) => j.failed.is_some(),
            Out::Table { failed, .. } => failed.is_some(),
        }
    }

    /// Writes the closing summary: in JSON with `extra` added to the object,
    /// as a table followed by `lines`.
    pub fn finish(
        &mut self,
        extra: (&str, serde_json::Value),
        lines: &[String],
        color: bool,
    ) -> io::Result<()> {
        self.status.clear();
        self.summary.finish();
        match &mut self.out {
            Out::Jsonl(j) => {
                let mut v = serde_json::to_value(&self.summary).map_err(io::Error::from)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert(extra.0.to_string(), extra.1);
                }
                j.write(&v);
                j.finish()
            }
            Out::Table { out, failed, .. } => {
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                crate::report::TableReport::new(false, color).print(&self.summary, out)?;
                for l in lines {
                    writeln!(out, "{l}")?;
                }
                out.flush()
            }
        }
    }

    fn report(&mut self, mut ex: Box<Exchange>) -> bool {
        if self.limit_reached() || self.output_closed() {
            return false;
        }
        annotate(&mut ex, self.phase);
        self.summary.add(&ex);
        self.status.clear();
        match &mut self.out {
            Out::Jsonl(j) => {
                j.exchange(&ex);
            }
            Out::Table {
                out,
                failures_only,
                color,
                failed,
            } => {
                let hide = *failures_only && ex.status.ok && ex.warnings.is_empty();
                if !hide {
                    let r = out
                        .write_all(row(&ex, *color).as_bytes())
                        .and_then(|_| out.flush());
                    if let Err(e) = r {
                        *failed = Some(e);
                    }
                }
            }
        }
        !self.output_closed() && !self.limit_reached()
    }
}

impl<W: Write> ExchangeSink for LiveSink<W> {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        let LiveSink { engine, rep } = self;
        if rep.limit_reached() || rep.output_closed() {
            return false;
        }
        engine.push(ex, &mut |ex| rep.report(ex))
    }
}

/// While connections are being closed, an exchange without a latency and
/// with a `reset` is a request whose response had not ended.
fn annotate(ex: &mut Exchange, phase: Phase) {
    if ex.latency_ms.is_some() || ex.status.reset.is_none() {
        return;
    }
    match phase {
        Phase::Running => {}
        Phase::Expiring(idle) => ex.notes.push(format!(
            "connection idle for {} s: closed by tfwire live (--idle-timeout); the response never came",
            idle.as_secs_f64()
        )),
        Phase::Closing => ex
            .notes
            .push("capture stopped before the response was seen".to_string()),
    }
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// One exchange as table output: a line for the call, then (failures) the
/// server's message, the diagnosis and the fix, each on an indented line.
pub fn row(ex: &Exchange, color: bool) -> String {
    let paint = |c: &str, s: String| {
        if color {
            format!("{c}{s}{RESET}")
        } else {
            s
        }
    };
    let time = ex
        .start
        .as_deref()
        .and_then(|s| s.get(11..23))
        .unwrap_or("??:??:??.???");
    let call = crate::report::call_label(ex);
    let mut inputs: Vec<String> = ex
        .inputs
        .iter()
        .take(3)
        .map(|t| {
            format!(
                "{} {}{}",
                t.name,
                t.dtype
                    .unwrap_or("DT_?")
                    .trim_start_matches("DT_")
                    .to_lowercase(),
                t.shape
                    .as_deref()
                    .map(shape_string)
                    .unwrap_or_else(|| "[?]".into())
            )
        })
        .collect();
    if ex.inputs.len() > 3 {
        inputs.push(format!("+{} more", ex.inputs.len() - 3));
    }
    if let Some(n) = ex.examples {
        inputs.push(format!("{n} {}", plural(n, "example", "examples")));
    }
    let status = match (ex.status.grpc_status, ex.status.http_status) {
        (Some(s), _) => s.to_string(),
        (None, Some(h)) => format!("HTTP {h}"),
        (None, None) if ex.status.reset.is_some() => "no response".to_string(),
        (None, None) => "no status".to_string(),
    };
    let status = paint(if ex.status.ok { GREEN } else { RED }, status);
    let latency = ex
        .latency_ms
        .map(|l| format!(" {l:.1}ms"))
        .unwrap_or_default();

    let mut line = format!(
        "{time} #{id} {client} {call}",
        id = ex.id,
        client = ex.client,
        call = escape_for_terminal(&call),
    );
    if !inputs.is_empty() {
        line.push_str(&format!(" ({})", escape_for_terminal(&inputs.join(", "))));
    }
    line.push_str(&format!(" → {status}{latency}\n"));

    let indent = "    ";
    if !ex.status.ok {
        if let Some(m) = ex.status.message.as_deref().or(ex.status.reset.as_deref()) {
            line.push_str(&format!(
                "{indent}{}\n",
                paint(
                    DIM,
                    format!("server: {}", clip(&escape_for_terminal(m), 300))
                )
            ));
        }
    }
    if let Some(d) = &ex.diagnosis {
        let confidence = serde_json::to_value(d.confidence)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        line.push_str(&format!(
            "{indent}{} ({confidence}): {}\n",
            paint(RED, d.category.to_string()),
            escape_for_terminal(&d.summary)
        ));
        if !d.fix.is_empty() {
            line.push_str(&format!("{indent}fix: {}\n", escape_for_terminal(&d.fix)));
        }
    }
    for w in &ex.warnings {
        line.push_str(&format!("{indent}warning: {}\n", escape_for_terminal(w)));
    }
    if !ex.status.ok || !ex.complete {
        for n in &ex.notes {
            line.push_str(&format!("{indent}note: {}\n", escape_for_terminal(n)));
        }
    }
    line
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A one-line status on stderr, redrawn in place. Only used when stderr is a
/// terminal; cleared before anything else is printed.
pub struct StatusLine {
    enabled: bool,
    visible: bool,
    last: Option<Instant>,
}

/// How often the status line is redrawn.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);

impl StatusLine {
    pub fn new(enabled: bool) -> Self {
        StatusLine {
            enabled,
            visible: false,
            last: None,
        }
    }

    /// True when the line should be redrawn (enabled, and not drawn for a while
    /// or erased by output since).
    pub fn due(&self, now: Instant) -> bool {
        self.enabled
            && (!self.visible
                || self
                    .last
                    .is_none_or(|t| now.duration_since(t) >= STATUS_EVERY))
    }

    pub fn draw(&mut self, text: &str, now: Instant) {
        if !self.enabled {
            return;
        }
        let mut e = io::stderr().lock();
        let _ = write!(e, "\r\x1b[K{text}").and_then(|_| e.flush());
        self.visible = true;
        self.last = Some(now);
    }

    pub fn clear(&mut self) {
        if self.visible {
            let mut e = io::stderr().lock();
            let _ = write!(e, "\r\x1b[K").and_then(|_| e.flush());
            self.visible = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::SignatureBook;

    /// Real exchanges: grpc_basic.pcapng through the pipeline and the engine.
    fn basic() -> Vec<Exchange> {
        let raw = crate::pipeline::fixture_exchanges("grpc_basic.pcapng");
        let mut engine = Engine::new(SignatureBook::new());
        engine.max_waiting = 0;
        let mut out = Vec::new();
        for ex in raw {
            engine.push(Box::new(ex), &mut |ex| {
                out.push(*ex);
                true
            });
        }
        out
    }

    fn by_request_id<'a>(all: &'a [Exchange], id: &str) -> &'a Exchange {
        match all.iter().find(|e| e.request_id.as_deref() == Some(id)) {
            Some(e) => e,
            None => panic!("{id} not in grpc_basic.pcapng"),
        }
    }

    #[test]
    fn failed_row_shows_call_message_diagnosis_and_fix_escaped() {
        let all = basic();
        let mut ex = by_request_id(&all, "basic-006").clone();
        let r = row(&ex, false);
        let lines: Vec<&str> = r.lines().collect();
        assert!(
            lines[0].contains(
                " Predict fraud/serving_default (features double[1,10]) → INVALID_ARGUMENT"
            ),
            "{r}"
        );
        assert_eq!(
            lines[1],
            "    server: Expects arg[0] to be float but double is provided"
        );
        assert!(lines[2].starts_with("    dtype_mismatch ("), "{r}");
        assert!(lines[3].starts_with("    fix: "), "{r}");

        ex.status.message = Some("evil\u{1b}[31m".into());
        let r = row(&ex, false);
        assert!(
            !r.contains('\u{1b}'),
            "no raw escape reaches the terminal: {r:?}"
        );
        assert!(row(&ex, true).contains(RED));
    }

    #[test]
    fn successful_row_is_one_line() {
        let all = basic();
        let Some(ok) = all.iter().find(|e| e.status.ok && e.warnings.is_empty()) else {
            panic!("grpc_basic.pcapng has successes");
        };
        let r = row(ok, false);
        assert_eq!(r.lines().count(), 1, "{r}");
        assert!(r.contains("→ OK"), "{r}");
    }

    #[test]
    fn expired_requests_are_annotated() {
        let all = basic();
        let mut ex = all[0].clone();
        annotate(&mut ex, Phase::Closing);
        assert_eq!(ex.notes, all[0].notes, "complete exchanges are left alone");
        ex.complete = false;
        ex.latency_ms = None;
        ex.status.ok = false;
        ex.status.reset = Some("connection closed before the response ended".into());
        annotate(&mut ex, Phase::Expiring(Duration::from_secs(2)));
        assert!(
            ex.notes.last().is_some_and(|n| n.contains("idle for 2 s")),
            "{:?}",
            ex.notes
        );
    }
}
