//! The postmortem as Markdown (GitHub-flavoured tables), for tickets, wikis
//! and review threads. The plots are SVG files beside the report, linked as
//! images. Text from the traffic is escaped for Markdown and for the HTML a
//! renderer may pass through: it cannot break a table or inject markup.

use std::fmt::Write as _;

use super::plural;
use super::postmortem::{
    self, call_target, clip, frame_list, frames_filter, group_title, percent, tensor_rows,
    timestamp, timestamp_str, visible, Breakdown, Example, Postmortem, OTHER_ROW,
};
use super::summary::RootCause;
use crate::tfserving::dtype::shape_string;

const MAX_DETAILED_GROUPS: usize = 100;
const MAX_TABLE_ROWS: usize = 25;
const MAX_SUMMARY_ROWS: usize = 1000;

/// File names of the plot images written beside the report, if any.
#[derive(Debug, Default, Clone)]
pub struct Images {
    pub timeline: Option<String>,
    pub latency: Option<String>,
}

/// Escapes text for Markdown inline content and table cells: backslash
/// escapes for Markdown punctuation (`|` included, so cells never split),
/// entities for HTML, line breaks as spaces.
pub fn escape_md(s: &str) -> String {
    let s = visible(s, false);
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // An underscore inside a word cannot start or end emphasis
            // (CommonMark flanking rules): `token_type_ids` stays readable.
            '_' if i > 0
                && chars[i - 1].is_alphanumeric()
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric()) =>
            {
                out.push('_')
            }
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A code span for text tfwire wrote itself (filters, shapes): no
/// backticks or pipes can occur in it, but make sure.
fn code(s: &str) -> String {
    if s.contains('`') || s.contains('|') || s.contains('\n') {
        escape_md(s)
    } else {
        format!("`{s}`")
    }
}

fn table(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let sep: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if right.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    let _ = writeln!(out, "| {} |", sep.join(" | "));
    for r in rows {
        let cells: Vec<&str> = (0..header.len())
            .map(|i| r.get(i).map_or("", String::as_str))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn breakdown_table(out: &mut String, title: &str, key: &str, b: &Breakdown) {
    let _ = writeln!(out, "### {title}\n");
    let all = b.rows();
    let mut rows: Vec<Vec<String>> = all
        .iter()
        .take(MAX_TABLE_ROWS)
        .map(|(k, r)| {
            vec![
                if *k == OTHER_ROW {
                    "(others, past the table limit)".to_string()
                } else {
                    escape_md(k)
                },
                r.exchanges.to_string(),
                r.failures.to_string(),
                percent(r.ratio()),
            ]
        })
        .collect();
    if all.len() > MAX_TABLE_ROWS {
        let rest = &all[MAX_TABLE_ROWS..];
        rows.push(vec![
            format!("… {} more", rest.len()),
            rest.iter().map(|r| r.1.exchanges).sum::<u64>().to_string(),
            rest.iter().map(|r| r.1.failures).sum::<u64>().to_string(),
            String::new(),
        ]);
    }
    if rows.is_empty() {
        rows.push(vec![
            "none".into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    table(
        out,
        &[key, "exchanges", "failed", "failure rate"],
        &[false, true, true, true],
        &rows,
    );
}

fn shape(s: Option<&[i64]>) -> String {
    s.map(|d| code(&shape_string(d)))
        .unwrap_or_else(|| "–".into())
}

fn example_md(out: &mut String, e: &Example) {
    let ex = &e.exchange;
    out.push_str("**Worked example**\n\n");
    let mut facts = vec![format!(
        "- exchange #{}{}",
        ex.id,
        ex.request_id
            .as_deref()
            .map(|r| format!(", request id {}", escape_md(r)))
            .unwrap_or_default()
    )];
    if let Some(s) = &ex.start {
        facts.push(format!("- time: {}", escape_md(&timestamp_str(s))));
    }
    facts.push(format!(
        "- client → server: {} → {} ({})",
        escape_md(&ex.client),
        escape_md(&ex.server),
        match ex.transport {
            crate::tfserving::Transport::Grpc => "gRPC",
            crate::tfserving::Transport::Rest => "REST",
        }
    ));
    facts.push(format!(
        "- call: {}{}",
        escape_md(ex.method.as_deref().unwrap_or("unknown method")),
        call_target(ex)
            .map(|c| format!(" {}", escape_md(&c)))
            .unwrap_or_default()
    ));
    let status = match (ex.status.grpc_status, ex.status.http_status) {
        (Some(s), _) => s.to_string(),
        (None, Some(h)) => format!("HTTP {h}"),
        (None, None) => "no status".to_string(),
    };
    let mut st = format!("- status: {}", escape_md(&status));
    if let Some(r) = &ex.status.reset {
        let _ = write!(st, " ({})", escape_md(r));
    }
    facts.push(st);
    if let Some(m) = &ex.status.message {
        facts.push(format!("- server message: {}", escape_md(m)));
    }
    facts.push(format!(
        "- Wireshark frames: request {}; response {}",
        escape_md(&frame_list(&ex.request_frames, e.request_frames_total)),
        escape_md(&frame_list(&ex.response_frames, e.response_frames_total))
    ));
    let mut filter = format!("- display filter: {}", code(&ex.wireshark_filter));
    if let Some(f) = frames_filter(ex) {
        let _ = write!(filter, " or {}", code(&f));
    }
    facts.push(filter);
    for f in facts {
        let _ = writeln!(out, "{f}");
    }
    out.push('\n');

    let rows = tensor_rows(e);
    if !rows.is_empty() {
        let exp = match &e.expected {
            Some(x) => format!(
                "expected by {}{}",
                escape_md(&x.signature_name),
                x.version.map(|v| format!(" v{v}")).unwrap_or_default()
            ),
            None => "expected".into(),
        };
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let alias = if r.alias.is_empty() {
                    "(no alias)".to_string()
                } else {
                    escape_md(&r.alias)
                };
                vec![
                    if r.at_fault {
                        format!("**{alias}**")
                    } else {
                        alias
                    },
                    escape_md(r.sent_dtype.as_deref().unwrap_or("–")),
                    shape(r.sent_shape.as_deref()),
                    escape_md(r.sent_values.as_deref().unwrap_or("not sent")),
                    escape_md(r.expected_dtype.as_deref().unwrap_or("–")),
                    shape(r.expected_shape.as_deref()),
                    if r.check.is_problem() {
                        format!("✗ {}", r.check.label())
                    } else if r.check == postmortem::Check::Ok {
                        format!("✓ {}", r.check.label())
                    } else {
                        r.check.label().to_string()
                    },
                ]
            })
            .collect();
        let head_dtype = format!("{exp}: dtype");
        let head_shape = format!("{exp}: shape");
        table(
            out,
            &[
                "input",
                "sent dtype",
                "sent shape",
                "sent values",
                &head_dtype,
                &head_shape,
                "check",
            ],
            &[],
            &body,
        );
        if e.inputs_total > ex.inputs.len() {
            let _ = writeln!(
                out,
                "{} more {} not shown.\n",
                e.inputs_total - ex.inputs.len(),
                plural(e.inputs_total - ex.inputs.len(), "input", "inputs")
            );
        }
    } else if let Some(n) = ex.examples {
        let _ = writeln!(
            out,
            "The request carried {n} {} (no tensors to compare).\n",
            plural(n, "tf.Example", "tf.Examples")
        );
    }
    match &e.expected {
        Some(x) => {
            let _ = writeln!(
                out,
                "Expected signature from {}{}.\n",
                escape_md(x.source.trim_start_matches("signature: ")),
                if x.declared {
                    ""
                } else {
                    " (inferred, not declared by the model)"
                }
            );
        }
        None if ex.model.is_some() && !ex.inputs.is_empty() => {
            out.push_str("The model's signature is not known: give `--model-dir` or `--signatures`, or capture a GetModelMetadata call.\n\n");
        }
        None => {}
    }
    if !ex.output_filter.is_empty() {
        let names: Vec<String> = ex.output_filter.iter().map(|o| escape_md(o)).collect();
        let _ = writeln!(out, "output\\_filter: {}\n", names.join(", "));
    }
    if !ex.notes.is_empty() {
        out.push_str("Notes:\n\n");
        for n in &ex.notes {
            let _ = writeln!(out, "- {}", escape_md(n));
        }
        out.push('\n');
    }
}

fn root_cause_md(out: &mut String, pm: &Postmortem, n: usize, rc: &RootCause) {
    let _ = writeln!(
        out,
        "### {n}. {} — {}\n",
        escape_md(&rc.category),
        escape_md(&group_title(rc))
    );
    let _ = writeln!(out, "{}\n", escape_md(&rc.summary));
    if !rc.fix.is_empty() {
        let _ = writeln!(out, "> **Fix:** {}\n", escape_md(&rc.fix));
    }
    let mut facts = vec![
        format!(
            "- failures: **{}** ({} of all failures)",
            rc.count,
            percent(if pm.summary.failures == 0 {
                0.0
            } else {
                rc.count as f64 / pm.summary.failures as f64
            })
        ),
        format!(
            "- first seen: {}",
            escape_md(
                &rc.first_seen
                    .as_deref()
                    .map(timestamp_str)
                    .unwrap_or("–".into())
            )
        ),
        format!(
            "- last seen: {}",
            escape_md(
                &rc.last_seen
                    .as_deref()
                    .map(timestamp_str)
                    .unwrap_or("–".into())
            )
        ),
    ];
    let clients: Vec<String> = rc.clients.iter().map(|c| escape_md(c)).collect();
    facts.push(format!(
        "- clients affected: {}{}",
        clients.len(),
        if clients.is_empty() {
            String::new()
        } else {
            format!(" ({})", clients.join(", "))
        }
    ));
    if let Some(i) = &rc.input {
        facts.push(format!("- input: {}", escape_md(i)));
    }
    if let Some(s) = &rc.sent {
        facts.push(format!("- sent: {}", escape_md(s)));
    }
    if let Some(e) = &rc.expected {
        facts.push(format!("- expected: {}", escape_md(e)));
    }
    let example = pm.example(rc.first_exchange);
    if let Some(d) = example.and_then(|e| e.exchange.diagnosis.as_ref()) {
        facts.push(format!(
            "- confidence: {}",
            match d.confidence {
                crate::diagnose::Confidence::Certain =>
                    "certain (the server's message and the model's signature agree)",
                crate::diagnose::Confidence::Likely => "likely (one source)",
                crate::diagnose::Confidence::Possible => "possible (inferred)",
            }
        ));
        for e in &d.evidence {
            facts.push(format!("- evidence: {}", escape_md(e)));
        }
    }
    for f in facts {
        let _ = writeln!(out, "{f}");
    }
    out.push('\n');
    match example {
        Some(e) => example_md(out, e),
        None => out.push_str("No worked example kept (too many root-cause groups).\n\n"),
    }
}

/// Renders the whole report. `images` names the plot files beside it.
pub fn render(pm: &Postmortem, images: &Images) -> String {
    let s = &pm.summary;
    let mut out = String::with_capacity(32 << 10);
    out.push_str("# TF Serving postmortem\n\n");
    let files: Vec<String> = s.capture.files.iter().map(|f| escape_md(f)).collect();
    let _ = writeln!(
        out,
        "Captures: {}. Generated by tfwire {}.\n",
        if files.is_empty() {
            "none".to_string()
        } else {
            files.join(", ")
        },
        env!("CARGO_PKG_VERSION")
    );

    out.push_str("## Overview\n\n");
    let range = match pm.time_range() {
        Some((span, range)) => format!("{span}: {range}"),
        None => "no timestamps".into(),
    };
    let clients = pm.by_client.rows();
    table(
        &mut out,
        &["", ""],
        &[],
        &[
            vec!["time range".into(), escape_md(&range)],
            vec![
                "exchanges".into(),
                format!("{} ({} incomplete)", s.exchanges, s.incomplete),
            ],
            vec![
                "failed".into(),
                format!("{} ({})", s.failures, percent(pm.failure_rate())),
            ],
            vec![
                "root causes".into(),
                format!(
                    "{} in {} {}",
                    s.root_causes.len(),
                    s.failures_by_category.len(),
                    plural(s.failures_by_category.len(), "category", "categories")
                ),
            ],
            vec![
                "clients".into(),
                format!(
                    "{} ({} with failures)",
                    clients.len(),
                    clients.iter().filter(|r| r.1.failures > 0).count()
                ),
            ],
            vec![
                "silently altered".into(),
                format!("{} successful with a warning", pm.warnings),
            ],
        ],
    );
    breakdown_table(&mut out, "Failure rate per model", "model", &pm.by_model);
    breakdown_table(
        &mut out,
        "Failure rate per signature",
        "model/signature",
        &pm.by_signature,
    );
    breakdown_table(&mut out, "Failure rate per method", "method", &pm.by_method);
    breakdown_table(&mut out, "Failure rate per client", "client", &pm.by_client);

    out.push_str("## Timeline\n\n");
    if pm.timeline.is_empty() {
        out.push_str("No exchange has a timestamp.\n\n");
    } else {
        if let Some(f) = &images.timeline {
            let _ = writeln!(out, "![Requests and failures per interval](<{f}>)\n");
        }
        let _ = writeln!(
            out,
            "One bar per {}{}; failures stacked by category.\n",
            postmortem::duration(pm.timeline.width_ns()),
            match pm.timeline.widened_from {
                Some(w) => format!(
                    " (widened from {} to keep the bar count bounded)",
                    postmortem::duration(w)
                ),
                None => String::new(),
            }
        );
        // The busiest failure intervals, for readers without the image.
        let mut bars = pm.timeline.bars();
        bars.retain(|(_, b)| b.failures() > 0);
        bars.sort_by(|a, b| b.1.failures().cmp(&a.1.failures()).then(a.0.cmp(&b.0)));
        if !bars.is_empty() {
            let rows: Vec<Vec<String>> = bars
                .iter()
                .take(10)
                .map(|(start, b)| {
                    let cats: Vec<String> = b
                        .failed
                        .iter()
                        .map(|(c, n)| format!("{} {n}", escape_md(c)))
                        .collect();
                    vec![
                        escape_md(&timestamp(*start)),
                        b.total().to_string(),
                        b.failures().to_string(),
                        cats.join(", "),
                    ]
                })
                .collect();
            let _ = writeln!(out, "Intervals with the most failures:\n");
            table(
                &mut out,
                &["interval start", "requests", "failed", "by category"],
                &[false, true, true, false],
                &rows,
            );
        }
    }

    out.push_str("## Latency per method\n\n");
    let methods = pm.latencies.methods();
    if methods.is_empty() {
        out.push_str("No exchange has a measured latency.\n\n");
    } else {
        if let Some(f) = &images.latency {
            let _ = writeln!(out, "![Latency per method](<{f}>)\n");
        }
        let rows: Vec<Vec<String>> = methods
            .iter()
            .map(|(m, h)| {
                let q = |x: f64| h.quantile(x).map(postmortem::latency).unwrap_or_default();
                vec![
                    escape_md(m),
                    h.count.to_string(),
                    h.failed.iter().sum::<u64>().to_string(),
                    postmortem::latency(h.min_ms),
                    q(0.5),
                    q(0.9),
                    q(0.99),
                    postmortem::latency(h.max_ms),
                    h.mean_ms().map(postmortem::latency).unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "method", "measured", "failed", "min", "p50", "p90", "p99", "max", "mean",
            ],
            &[false, true, true, true, true, true, true, true, true],
            &rows,
        );
        out.push_str(
            "Quantiles are read from log-scale buckets (20 per decade, within ±6 %); min and max are exact.\n\n",
        );
    }
    if pm.latencies.unmeasured > 0 {
        let _ = writeln!(
            out,
            "{} {} without a latency (the response's end was not seen, or the stream was reset).\n",
            pm.latencies.unmeasured,
            plural(pm.latencies.unmeasured, "exchange", "exchanges")
        );
    }

    out.push_str("## Root causes\n\n");
    if s.root_causes.is_empty() {
        out.push_str("No exchange failed.\n\n");
    } else {
        let _ = writeln!(
            out,
            "{} {} in {} {} that share a root cause, most frequent first.\n",
            s.failures,
            plural(s.failures, "failure", "failures"),
            s.root_causes.len(),
            plural(s.root_causes.len(), "group", "groups")
        );
        let rows: Vec<Vec<String>> = s
            .root_causes
            .iter()
            .take(MAX_SUMMARY_ROWS)
            .enumerate()
            .map(|(i, rc)| {
                vec![
                    (i + 1).to_string(),
                    rc.count.to_string(),
                    escape_md(&rc.category),
                    escape_md(&group_title(rc)),
                    escape_md(&clip(&rc.summary, 240)),
                    escape_md(&pm.seen(rc.first_seen.as_deref())),
                    escape_md(&pm.seen(rc.last_seen.as_deref())),
                    rc.clients.len().to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "#",
                "failures",
                "category",
                "model/signature",
                "what happened",
                "first seen",
                "last seen",
                "clients",
            ],
            &[true, true, false, false, false, false, false, true],
            &rows,
        );
        if s.root_causes.len() > MAX_SUMMARY_ROWS {
            let _ = writeln!(
                out,
                "{} more {} not listed; `tfwire analyze --format jsonl` has them all.\n",
                s.root_causes.len() - MAX_SUMMARY_ROWS,
                plural(s.root_causes.len() - MAX_SUMMARY_ROWS, "group", "groups")
            );
        }
        for (i, rc) in s.root_causes.iter().enumerate().take(MAX_DETAILED_GROUPS) {
            root_cause_md(&mut out, pm, i + 1, rc);
        }
    }

    out.push_str("## Capture quality\n\n");
    let c = &s.capture;
    let n = &s.network;
    let p = &s.protocols;
    let rows: Vec<Vec<String>> = [
        ("capture files", c.files.len().to_string()),
        (
            "first · last packet",
            format!(
                "{} · {}",
                c.first_packet
                    .as_deref()
                    .map(timestamp_str)
                    .unwrap_or("–".into()),
                c.last_packet
                    .as_deref()
                    .map(timestamp_str)
                    .unwrap_or("–".into())
            ),
        ),
        ("packets", c.packets.to_string()),
        ("bytes captured", c.bytes.to_string()),
        (
            "packets cut by the snaplen",
            c.truncated_packets.to_string(),
        ),
        ("TCP connections", n.connections.to_string()),
        (
            "HTTP/2 · HTTP/1 · TLS · other connections",
            format!(
                "{} · {} · {} · {}",
                p.http2_connections, p.http1_connections, p.tls_connections, p.other_connections
            ),
        ),
        (
            "gaps in TCP streams (bytes missing)",
            format!("{} ({})", n.gaps, n.gap_bytes),
        ),
        ("retransmitted bytes", n.retransmitted_bytes.to_string()),
        ("out-of-order segments", n.out_of_order_segments.to_string()),
        (
            "overlapping segments that disagree",
            n.overlap_conflicts.to_string(),
        ),
        (
            "malformed · non-TCP · IP fragments · unsupported link",
            format!(
                "{} · {} · {} · {}",
                n.malformed_packets, n.non_tcp_packets, n.ip_fragments, n.unsupported_link_packets
            ),
        ),
        (
            "connections picked up mid-way",
            p.mid_connection_pickups.to_string(),
        ),
        ("HTTP/2 resyncs", p.http2.resyncs.to_string()),
        (
            "streams with unknown headers",
            p.streams_with_unknown_headers.to_string(),
        ),
        ("incomplete exchanges", s.incomplete.to_string()),
        ("protocol mismatches", p.protocol_mismatches.to_string()),
        (
            "exchanges without a timestamp · without a latency",
            format!("{} · {}", pm.timeline.undated, pm.latencies.unmeasured),
        ),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    table(&mut out, &["what", "count"], &[false, true], &rows);
    if !c.cut_short.is_empty() {
        out.push_str("Files that end early or are corrupt:\n\n");
        for cs in &c.cut_short {
            let _ = writeln!(out, "- {}", escape_md(cs));
        }
        out.push('\n');
    }
    if s.limits_hit.is_empty() {
        out.push_str("Limits hit: none.\n\n");
    } else {
        out.push_str("Limits hit (raise them with the `--max-*` options of `tfwire analyze`):\n\n");
        for (k, v) in &s.limits_hit {
            let _ = writeln!(out, "- {} × {v}", code(k));
        }
        out.push('\n');
    }
    out.push_str("---\n\nFrame numbers are Wireshark's, counted across the capture files in the order given (merge them with `mergecap -a` in that order to open them as one); `tcp.stream` numbers likewise.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_split_or_inject() {
        assert_eq!(escape_md("a|b"), "a\\|b");
        assert_eq!(escape_md("x\ny"), "x\\\\ny");
        assert_eq!(escape_md("<img src=x>"), "&lt;img src=x&gt;");
        assert_eq!(escape_md("`*_"), "\\`\\*\\_");
        assert_eq!(escape_md("token_type_ids _x_"), "token_type_ids \\_x\\_");
        assert_eq!(code("tcp.stream eq 0"), "`tcp.stream eq 0`");
    }
}
