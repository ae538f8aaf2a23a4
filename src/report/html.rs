//! The postmortem as one self-contained HTML file: inline CSS and SVG, no
//! scripts, no external assets (a Content-Security-Policy says so to the
//! browser too), so it opens offline and can be mailed or attached to a
//! ticket. Every string from the traffic is escaped: it is attacker-controlled.

use std::fmt::Write as _;

use super::plot;
use super::plural;
use super::postmortem::{
    self, call_target, clip, frame_list, frames_filter, group_title, percent, tensor_rows,
    timestamp_str, visible, Breakdown, Example, Postmortem, OTHER_ROW,
};
use super::summary::RootCause;
use crate::tfserving::dtype::shape_string;

/// Root-cause groups shown in full; the rest are listed in the summary table.
const MAX_DETAILED_GROUPS: usize = 100;
/// Rows shown per failure-rate table.
const MAX_TABLE_ROWS: usize = 25;
/// Rows of the root-cause summary table.
const MAX_SUMMARY_ROWS: usize = 1000;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Traffic text on one line.
fn t(s: &str) -> String {
    escape_html(&visible(s, false))
}

/// Traffic text that keeps its line breaks (shown pre-wrapped).
fn block(s: &str) -> String {
    escape_html(&visible(s, true))
}

const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #ffffff; color: #1d2530; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid #1d2530; margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d5dbe1; }
h3 { font-size: 16px; margin: 0 0 8px; }
h4 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: #56616c; margin: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 10px; margin: 12px 0 6px; }
.card { border: 1px solid #d5dbe1; border-radius: 6px; padding: 10px 12px; }
.card .k { color: #56616c; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 650; }
.card .v.bad { color: #b3261e; }
.card .d { color: #56616c; font-size: 12px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e7ec; vertical-align: top; }
td.name, h3, dd, li, .explain, .fix { overflow-wrap: anywhere; }
td.time { white-space: nowrap; }
th { background: #eef1f4; font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.problem td { background: #fdecea; }
tr.fault td { background: #fbd9d5; font-weight: 600; }
.rate { display: inline-block; vertical-align: middle; width: 60px; height: 8px; background: #e3e7ec; margin-left: 6px; border-radius: 2px; }
.rate span { display: block; height: 8px; background: #d62728; border-radius: 2px; }
.chip { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600; white-space: nowrap; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
code { background: #eef1f4; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
pre { background: #f3f5f7; border: 1px solid #e3e7ec; padding: 8px 10px; border-radius: 4px; white-space: pre-wrap; word-break: break-word; margin: 6px 0; }
figure { margin: 8px 0 14px; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #56616c; font-size: 12.5px; }
section.rc { border: 1px solid #d5dbe1; border-left: 6px solid #8a8a8a; border-radius: 6px; padding: 14px 16px; margin: 16px 0; }
.explain { font-size: 15px; margin: 4px 0 8px; }
.fix { background: #e8f4ea; border: 1px solid #b9dcbf; border-radius: 4px; padding: 8px 10px; margin: 8px 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 8px 0; }
dl.facts dt { color: #56616c; }
dl.facts dd { margin: 0; }
.ok { color: #1e7b34; }
.bad { color: #b3261e; }
.muted { color: #56616c; }
footer { margin-top: 40px; color: #56616c; font-size: 12.5px; border-top: 1px solid #d5dbe1; padding-top: 8px; }
@media print { main { max-width: none; } section.rc { break-inside: avoid; } }
"#;

/// Black or white text on a category colour, whichever reads better.
fn chip(category: &str) -> String {
    let color = plot::category_color(category);
    let rgb = u32::from_str_radix(color.trim_start_matches('#'), 16).unwrap_or(0x8a8a8a);
    let (r, g, b) = ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255);
    let luma = 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
    let fg = if luma > 150.0 { "#111" } else { "#fff" };
    format!(
        r#"<span class="chip" style="background:{color};color:{fg}">{}</span>"#,
        t(category)
    )
}

fn rate_cell(ratio: f64) -> String {
    format!(
        r#"{}<span class="rate"><span style="width:{:.0}%"></span></span>"#,
        percent(ratio),
        (ratio * 100.0).clamp(0.0, 100.0)
    )
}

fn breakdown_table(out: &mut String, title: &str, key: &str, b: &Breakdown) {
    let rows = b.rows();
    let _ = write!(
        out,
        r#"<div><h4>{}</h4><table><thead><tr><th>{}</th><th class="n">exchanges</th><th class="n">failed</th><th class="n">failure rate</th></tr></thead><tbody>"#,
        escape_html(title),
        escape_html(key)
    );
    if rows.is_empty() {
        out.push_str(r#"<tr><td colspan="4" class="muted">none</td></tr>"#);
    }
    for (k, r) in rows.iter().take(MAX_TABLE_ROWS) {
        let name = if *k == OTHER_ROW {
            r#"<span class="muted">(others, past the table limit)</span>"#.to_string()
        } else {
            t(k)
        };
        let _ = write!(
            out,
            r#"<tr{}><td class="name">{name}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            if r.failures > 0 {
                r#" class="problem""#
            } else {
                ""
            },
            r.exchanges,
            r.failures,
            rate_cell(r.ratio())
        );
    }
    if rows.len() > MAX_TABLE_ROWS {
        let rest = &rows[MAX_TABLE_ROWS..];
        let _ = write!(
            out,
            r#"<tr><td class="muted">… {} more</td><td class="n">{}</td><td class="n">{}</td><td></td></tr>"#,
            rest.len(),
            rest.iter().map(|r| r.1.exchanges).sum::<u64>(),
            rest.iter().map(|r| r.1.failures).sum::<u64>()
        );
    }
    out.push_str("</tbody></table></div>");
}

fn shape_or_dash(s: Option<&[i64]>) -> String {
    s.map(shape_string).unwrap_or_else(|| "–".into())
}

fn example_html(out: &mut String, ex_data: &Example) {
    let ex = &ex_data.exchange;
    out.push_str("<h4>Worked example</h4><dl class=\"facts\">");
    let _ = write!(
        out,
        "<dt>exchange</dt><dd>#{}{}</dd>",
        ex.id,
        ex.request_id
            .as_deref()
            .map(|r| format!(", request id <code>{}</code>", t(r)))
            .unwrap_or_default()
    );
    if let Some(s) = &ex.start {
        let _ = write!(
            out,
            "<dt>time</dt><dd>{}</dd>",
            escape_html(&timestamp_str(s))
        );
    }
    let _ = write!(
        out,
        "<dt>client → server</dt><dd>{} → {} ({})</dd>",
        t(&ex.client),
        t(&ex.server),
        match ex.transport {
            crate::tfserving::Transport::Grpc => "gRPC",
            crate::tfserving::Transport::Rest => "REST",
        }
    );
    let _ = write!(
        out,
        "<dt>call</dt><dd>{}{}</dd>",
        t(ex.method.as_deref().unwrap_or("unknown method")),
        call_target(ex)
            .map(|c| format!(" <code>{}</code>", t(&c)))
            .unwrap_or_default()
    );
    let status = match (ex.status.grpc_status, ex.status.http_status) {
        (Some(s), _) => s.to_string(),
        (None, Some(h)) => format!("HTTP {h}"),
        (None, None) => "no status".to_string(),
    };
    let _ = write!(out, "<dt>status</dt><dd class=\"bad\">{}", t(&status));
    if let Some(r) = &ex.status.reset {
        let _ = write!(out, " ({})", t(r));
    }
    out.push_str("</dd>");
    if let Some(m) = &ex.status.message {
        let _ = write!(
            out,
            "<dt>server message</dt><dd><pre>{}</pre></dd>",
            block(m)
        );
    }
    let _ = write!(
        out,
        "<dt>Wireshark frames</dt><dd>request {}; response {}</dd>",
        escape_html(&frame_list(
            &ex.request_frames,
            ex_data.request_frames_total
        )),
        escape_html(&frame_list(
            &ex.response_frames,
            ex_data.response_frames_total
        ))
    );
    let _ = write!(
        out,
        "<dt>display filter</dt><dd><code class=\"filter\">{}</code>",
        t(&ex.wireshark_filter)
    );
    if let Some(f) = frames_filter(ex) {
        let _ = write!(out, " or <code>{}</code>", escape_html(&f));
    }
    out.push_str("</dd></dl>");

    let rows = tensor_rows(ex_data);
    if !rows.is_empty() {
        let sig_head = match &ex_data.expected {
            Some(e) => format!(
                "expected by signature <code>{}</code>{}",
                t(&e.signature_name),
                e.version
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            ),
            None => "expected".to_string(),
        };
        let _ = write!(
            out,
            r#"<table class="tensors"><thead><tr><th rowspan="2">input</th><th colspan="3">sent in the request</th><th colspan="2">{sig_head}</th><th rowspan="2">check</th></tr><tr><th>dtype</th><th>shape</th><th>values</th><th>dtype</th><th>shape</th></tr></thead><tbody>"#
        );
        for r in &rows {
            let class = if r.at_fault {
                r#" class="fault""#
            } else if r.check.is_problem() {
                r#" class="problem""#
            } else {
                ""
            };
            let _ = write!(
                out,
                "<tr{class}><td class=\"name\"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                t(if r.alias.is_empty() { "(no alias)" } else { &r.alias }),
                t(r.sent_dtype.as_deref().unwrap_or("–")),
                escape_html(&shape_or_dash(r.sent_shape.as_deref())),
                t(r.sent_values.as_deref().unwrap_or("not sent")),
                t(r.expected_dtype.as_deref().unwrap_or("–")),
                escape_html(&shape_or_dash(r.expected_shape.as_deref())),
                if r.check.is_problem() {
                    format!("<span class=\"bad\">✗ {}</span>", r.check.label())
                } else if r.check == postmortem::Check::Ok {
                    format!("<span class=\"ok\">✓ {}</span>", r.check.label())
                } else {
                    format!("<span class=\"muted\">{}</span>", r.check.label())
                }
            );
        }
        out.push_str("</tbody></table>");
        if ex_data.inputs_total > ex.inputs.len() {
            let _ = write!(
                out,
                "<p class=\"muted\">{} more {} not shown.</p>",
                ex_data.inputs_total - ex.inputs.len(),
                plural(ex_data.inputs_total - ex.inputs.len(), "input", "inputs")
            );
        }
    } else if let Some(n) = ex.examples {
        let _ = write!(
            out,
            "<p>The request carried {n} {} (no tensors to compare).</p>",
            plural(n, "tf.Example", "tf.Examples")
        );
    }
    match &ex_data.expected {
        Some(e) => {
            let _ = write!(
                out,
                "<p class=\"muted\">Expected signature from {}{}.</p>",
                t(e.source.trim_start_matches("signature: ")),
                if e.declared {
                    ""
                } else {
                    " (inferred, not declared by the model)"
                }
            );
        }
        None if ex.model.is_some() && !ex.inputs.is_empty() => {
            out.push_str("<p class=\"muted\">The model's signature is not known: give <code>--model-dir</code> or <code>--signatures</code>, or capture a GetModelMetadata call.</p>");
        }
        None => {}
    }
    if !ex.output_filter.is_empty() {
        let names: Vec<String> = ex.output_filter.iter().map(|o| t(o)).collect();
        let _ = write!(
            out,
            "<p>output_filter: <code>{}</code></p>",
            names.join(", ")
        );
    }
    if !ex.notes.is_empty() {
        out.push_str("<p class=\"muted\">Notes:</p><ul>");
        for n in &ex.notes {
            let _ = write!(out, "<li>{}</li>", t(n));
        }
        out.push_str("</ul>");
    }
}

fn root_cause_html(out: &mut String, pm: &Postmortem, n: usize, rc: &RootCause) {
    let example = pm.example(rc.first_exchange);
    let _ = write!(
        out,
        r#"<section class="rc" id="rc-{n}" style="border-left-color:{}"><h3>{n}. {} <span class="muted">{}</span></h3>"#,
        plot::category_color(&rc.category),
        chip(&rc.category),
        t(&group_title(rc))
    );
    let _ = write!(out, r#"<p class="explain">{}</p>"#, t(&rc.summary));
    if !rc.fix.is_empty() {
        let _ = write!(out, r#"<div class="fix"><b>Fix:</b> {}</div>"#, t(&rc.fix));
    }
    out.push_str("<dl class=\"facts\">");
    let _ = write!(
        out,
        "<dt>failures</dt><dd><b>{}</b> ({} of all failures)</dd>",
        rc.count,
        percent(if pm.summary.failures == 0 {
            0.0
        } else {
            rc.count as f64 / pm.summary.failures as f64
        })
    );
    let _ = write!(
        out,
        "<dt>first seen</dt><dd>{}</dd><dt>last seen</dt><dd>{}</dd>",
        escape_html(
            &rc.first_seen
                .as_deref()
                .map(timestamp_str)
                .unwrap_or("–".into())
        ),
        escape_html(
            &rc.last_seen
                .as_deref()
                .map(timestamp_str)
                .unwrap_or("–".into())
        )
    );
    let clients: Vec<String> = rc.clients.iter().map(|c| t(c)).collect();
    let _ = write!(
        out,
        "<dt>clients affected</dt><dd>{}{}</dd>",
        clients.len(),
        if clients.is_empty() {
            String::new()
        } else {
            format!(": {}", clients.join(", "))
        }
    );
    if let Some(i) = &rc.input {
        let _ = write!(out, "<dt>input</dt><dd><code>{}</code></dd>", t(i));
    }
    if let Some(s) = &rc.sent {
        let _ = write!(out, "<dt>sent</dt><dd>{}</dd>", t(s));
    }
    if let Some(e) = &rc.expected {
        let _ = write!(out, "<dt>expected</dt><dd>{}</dd>", t(e));
    }
    if let Some(d) = example.and_then(|e| e.exchange.diagnosis.as_ref()) {
        let _ = write!(
            out,
            "<dt>confidence</dt><dd>{}</dd>",
            match d.confidence {
                crate::diagnose::Confidence::Certain =>
                    "certain (the server's message and the model's signature agree)",
                crate::diagnose::Confidence::Likely => "likely (one source)",
                crate::diagnose::Confidence::Possible => "possible (inferred)",
            }
        );
        if !d.evidence.is_empty() {
            out.push_str("<dt>evidence</dt><dd><ul>");
            for e in &d.evidence {
                let _ = write!(out, "<li>{}</li>", t(e));
            }
            out.push_str("</ul></dd>");
        }
    }
    out.push_str("</dl>");
    match example {
        Some(e) => example_html(out, e),
        None => out.push_str(
            "<p class=\"muted\">No worked example kept (too many root-cause groups).</p>",
        ),
    }
    out.push_str("</section>");
}

fn quality_html(out: &mut String, pm: &Postmortem) {
    let s = &pm.summary;
    let c = &s.capture;
    let n = &s.network;
    let p = &s.protocols;
    // (what, value, is it a problem, what it means)
    let rows: Vec<(&str, String, bool, &str)> = vec![
        ("capture files", c.files.len().to_string(), false, ""),
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
            false,
            "",
        ),
        ("packets", c.packets.to_string(), false, ""),
        ("bytes captured", c.bytes.to_string(), false, ""),
        (
            "packets cut by the snaplen",
            c.truncated_packets.to_string(),
            c.truncated_packets > 0,
            "capture with -s 0 to keep whole packets",
        ),
        ("TCP connections", n.connections.to_string(), false, ""),
        (
            "HTTP/2 · HTTP/1 · TLS · other connections",
            format!(
                "{} · {} · {} · {}",
                p.http2_connections, p.http1_connections, p.tls_connections, p.other_connections
            ),
            false,
            "",
        ),
        (
            "gaps in TCP streams (bytes missing)",
            format!("{} ({})", n.gaps, n.gap_bytes),
            n.gaps > 0,
            "packets lost by the capture: exchanges across a gap are incomplete",
        ),
        (
            "retransmitted bytes",
            n.retransmitted_bytes.to_string(),
            false,
            "",
        ),
        (
            "out-of-order segments",
            n.out_of_order_segments.to_string(),
            false,
            "",
        ),
        (
            "overlapping segments that disagree",
            n.overlap_conflicts.to_string(),
            n.overlap_conflicts > 0,
            "the first copy was kept",
        ),
        (
            "malformed · non-TCP · IP fragments · unsupported link",
            format!(
                "{} · {} · {} · {}",
                n.malformed_packets, n.non_tcp_packets, n.ip_fragments, n.unsupported_link_packets
            ),
            n.malformed_packets > 0 || n.unsupported_link_packets > 0,
            "",
        ),
        (
            "connections picked up mid-way",
            p.mid_connection_pickups.to_string(),
            p.mid_connection_pickups > 0,
            "the capture started after the connection: early HPACK state unknown",
        ),
        (
            "HTTP/2 resyncs",
            p.http2.resyncs.to_string(),
            p.http2.resyncs > 0,
            "",
        ),
        (
            "streams with unknown headers",
            p.streams_with_unknown_headers.to_string(),
            p.streams_with_unknown_headers > 0,
            "header fields refer to HPACK state from before the capture",
        ),
        (
            "incomplete exchanges",
            s.incomplete.to_string(),
            s.incomplete > 0,
            "part of the exchange was not seen",
        ),
        (
            "protocol mismatches",
            p.protocol_mismatches.to_string(),
            p.protocol_mismatches > 0,
            "",
        ),
        (
            "exchanges without a timestamp · without a latency",
            format!("{} · {}", pm.timeline.undated, pm.latencies.unmeasured),
            false,
            "",
        ),
    ];
    out.push_str(r#"<table><thead><tr><th>what</th><th class="n">count</th><th>meaning</th></tr></thead><tbody>"#);
    for (what, value, problem, meaning) in rows {
        let _ = write!(
            out,
            r#"<tr{}><td>{}</td><td class="n">{}</td><td class="muted">{}</td></tr>"#,
            if problem { r#" class="problem""# } else { "" },
            escape_html(what),
            escape_html(&value),
            escape_html(meaning)
        );
    }
    out.push_str("</tbody></table>");
    if !c.cut_short.is_empty() {
        out.push_str("<p class=\"bad\">Files that end early or are corrupt:</p><ul>");
        for cs in &c.cut_short {
            let _ = write!(out, "<li>{}</li>", t(cs));
        }
        out.push_str("</ul>");
    }
    if s.limits_hit.is_empty() {
        out.push_str("<p>Limits hit: <span class=\"ok\">none</span>.</p>");
    } else {
        out.push_str("<p class=\"bad\">Limits hit (raise them with the <code>--max-*</code> options of <code>tfwire analyze</code>):</p><ul>");
        for (k, v) in &s.limits_hit {
            let _ = write!(out, "<li><code>{}</code> × {v}</li>", escape_html(k));
        }
        out.push_str("</ul>");
    }
}

/// Renders the whole report.
pub fn render(pm: &Postmortem) -> String {
    let s = &pm.summary;
    let mut out = String::with_capacity(64 << 10);
    let files: Vec<String> = s.capture.files.iter().map(|f| t(f)).collect();
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="generator" content="tfwire {version}">
<title>TF Serving postmortem: {title}</title>
<style>{STYLE}</style></head>
<body><main>
<header><h1>TF Serving postmortem</h1><p class="sub">{files}</p></header>
"#,
        version = env!("CARGO_PKG_VERSION"),
        title = files.join(", "),
        files = files.join(", "),
    );

    // Overview.
    out.push_str(r#"<section id="overview"><h2>Overview</h2><div class="cards">"#);
    let (span, range) = pm
        .time_range()
        .unwrap_or_else(|| ("–".into(), "no timestamps".into()));
    let range = escape_html(&range);
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">time range</div><div class="v">{}</div><div class="d">{range}</div></div>"#,
        escape_html(&span)
    );
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">exchanges</div><div class="v">{}</div><div class="d">{} incomplete</div></div>"#,
        s.exchanges, s.incomplete
    );
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">failed</div><div class="v{}">{}</div><div class="d">{} of exchanges</div></div>"#,
        if s.failures > 0 { " bad" } else { "" },
        s.failures,
        percent(pm.failure_rate())
    );
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">root causes</div><div class="v">{}</div><div class="d">{} {}</div></div>"#,
        s.root_causes.len(),
        s.failures_by_category.len(),
        plural(s.failures_by_category.len(), "category", "categories")
    );
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">clients</div><div class="v">{}</div><div class="d">{} with failures</div></div>"#,
        pm.by_client.rows().len(),
        pm.by_client
            .rows()
            .iter()
            .filter(|r| r.1.failures > 0)
            .count()
    );
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">silently altered</div><div class="v">{}</div><div class="d">successful, with a warning</div></div>"#,
        pm.warnings
    );
    out.push_str("</div>");
    out.push_str(r#"<div class="grid2">"#);
    breakdown_table(&mut out, "Failure rate per model", "model", &pm.by_model);
    breakdown_table(
        &mut out,
        "Failure rate per signature",
        "model/signature",
        &pm.by_signature,
    );
    breakdown_table(&mut out, "Failure rate per method", "method", &pm.by_method);
    breakdown_table(&mut out, "Failure rate per client", "client", &pm.by_client);
    out.push_str("</div></section>");

    // Timeline.
    out.push_str(r#"<section id="timeline"><h2>Timeline</h2>"#);
    match plot::timeline_svg(&pm.timeline) {
        Some(svg) => {
            let _ = write!(
                out,
                r#"<figure class="plot" id="timeline-plot">{svg}<figcaption>Exchanges by start time, one bar per {}{}. Failures are stacked at the bottom by category; hover a bar for its counts.</figcaption></figure>"#,
                escape_html(&postmortem::duration(pm.timeline.width_ns())),
                match pm.timeline.widened_from {
                    Some(w) => format!(
                        " (widened from {} to keep the bar count bounded)",
                        postmortem::duration(w)
                    ),
                    None => String::new(),
                }
            );
        }
        None => out.push_str("<p class=\"muted\">No exchange has a timestamp.</p>"),
    }
    out.push_str("</section>");

    // Latency.
    out.push_str(r#"<section id="latency"><h2>Latency per method</h2>"#);
    match plot::latency_svg(&pm.latencies) {
        Some(svg) => {
            let _ = write!(
                out,
                r#"<figure class="plot" id="latency-plot">{svg}<figcaption>Quantiles are read from log-scale buckets (20 per decade, within ±6 %); min and max are exact.</figcaption></figure>"#
            );
            out.push_str(r#"<table><thead><tr><th>method</th><th class="n">measured</th><th class="n">failed</th><th class="n">min</th><th class="n">p50</th><th class="n">p90</th><th class="n">p99</th><th class="n">max</th><th class="n">mean</th></tr></thead><tbody>"#);
            for (m, h) in pm.latencies.methods() {
                let q = |x: f64| h.quantile(x).map(postmortem::latency).unwrap_or_default();
                let _ = write!(
                    out,
                    r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
                    t(m),
                    h.count,
                    h.failed.iter().sum::<u64>(),
                    escape_html(&postmortem::latency(h.min_ms)),
                    escape_html(&q(0.5)),
                    escape_html(&q(0.9)),
                    escape_html(&q(0.99)),
                    escape_html(&postmortem::latency(h.max_ms)),
                    escape_html(&h.mean_ms().map(postmortem::latency).unwrap_or_default())
                );
            }
            out.push_str("</tbody></table>");
        }
        None => out.push_str("<p class=\"muted\">No exchange has a measured latency.</p>"),
    }
    if pm.latencies.unmeasured > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} {} without a latency (the response's end was not seen, or the stream was reset).</p>",
            pm.latencies.unmeasured,
            plural(pm.latencies.unmeasured, "exchange", "exchanges")
        );
    }
    out.push_str("</section>");

    // Root causes.
    out.push_str(r#"<section id="root-causes"><h2>Root causes</h2>"#);
    if s.root_causes.is_empty() {
        out.push_str("<p class=\"ok\">No exchange failed.</p>");
    } else {
        let _ = write!(
            out,
            "<p>{} {} in {} {} that share a root cause, most frequent first.</p>",
            s.failures,
            plural(s.failures, "failure", "failures"),
            s.root_causes.len(),
            plural(s.root_causes.len(), "group", "groups")
        );
        out.push_str(r#"<table><thead><tr><th class="n">#</th><th class="n">failures</th><th>category</th><th>model/signature</th><th>what happened</th><th>first seen</th><th>last seen</th><th class="n">clients</th></tr></thead><tbody>"#);
        for (i, rc) in s.root_causes.iter().enumerate().take(MAX_SUMMARY_ROWS) {
            let n = i + 1;
            let link = if i < MAX_DETAILED_GROUPS {
                format!(r##"<a href="#rc-{n}">{n}</a>"##)
            } else {
                n.to_string()
            };
            let _ = write!(
                out,
                r#"<tr><td class="n">{link}</td><td class="n">{}</td><td>{}</td><td class="name">{}</td><td class="name">{}</td><td class="time">{}</td><td class="time">{}</td><td class="n">{}</td></tr>"#,
                rc.count,
                chip(&rc.category),
                t(&group_title(rc)),
                t(&clip(&rc.summary, 240)),
                escape_html(&pm.seen(rc.first_seen.as_deref())),
                escape_html(&pm.seen(rc.last_seen.as_deref())),
                rc.clients.len()
            );
        }
        out.push_str("</tbody></table>");
        if s.root_causes.len() > MAX_SUMMARY_ROWS {
            let _ = write!(
                out,
                "<p class=\"muted\">{} more {} not listed; <code>tfwire analyze --format jsonl</code> has them all.</p>",
                s.root_causes.len() - MAX_SUMMARY_ROWS,
                plural(s.root_causes.len() - MAX_SUMMARY_ROWS, "group", "groups")
            );
        }
        for (i, rc) in s.root_causes.iter().enumerate().take(MAX_DETAILED_GROUPS) {
            root_cause_html(&mut out, pm, i + 1, rc);
        }
        if s.root_causes.len() > MAX_DETAILED_GROUPS {
            let _ = write!(
                out,
                "<p class=\"muted\">Groups after the first {MAX_DETAILED_GROUPS} are listed in the table above without details.</p>"
            );
        }
    }
    out.push_str("</section>");

    // Capture quality.
    out.push_str(r#"<section id="capture-quality"><h2>Capture quality</h2>"#);
    quality_html(&mut out, pm);
    out.push_str("</section>");

    let _ = write!(
        out,
        r#"<footer>Generated by tfwire {}. Frame numbers are Wireshark's, counted across the capture files in the order given (merge them with <code>mergecap -a</code> in that order to open them as one); <code>tcp.stream</code> numbers likewise. Text from the traffic is shown escaped.</footer>
</main></body></html>
"#,
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(t("a\u{1b}b\u{202e}"), "a\\u{1b}b\\u{202e}");
    }

    /// A postmortem of no traffic at all.
    fn empty_postmortem() -> Postmortem {
        let mut pm = Postmortem::new(None);
        pm.finish(
            &crate::diagnose::SignatureBook::new(),
            Default::default(),
            Default::default(),
            Default::default(),
        );
        pm
    }

    #[test]
    fn empty_postmortem_renders() {
        let pm = empty_postmortem();
        let html = render(&pm);
        assert!(html.contains("No exchange failed."));
        assert!(html.contains("No exchange has a timestamp."));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn counts_of_one_are_singular() {
        let mut pm = empty_postmortem();
        pm.latencies.unmeasured = 1;
        pm.summary.failures_by_category.insert("x".into(), 1);
        let html = render(&pm);
        assert!(html.contains("1 exchange without a latency"), "{html}");
        assert!(
            html.contains(r#"<div class="d">1 category</div>"#),
            "{html}"
        );
        let md = super::super::markdown::render(&pm, &Default::default());
        assert!(md.contains("1 exchange without a latency"), "{md}");
        assert!(md.contains("0 in 1 category |"), "{md}");
    }
}
