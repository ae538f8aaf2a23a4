//! Postmortem reports (HTML and Markdown), evidence extraction, and the HTML
//! report rendered in a real browser (headless Chromium).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use tfwire::capture::{CaptureReader, LinkType};
use tfwire::extract::{run_extract, ExtractArgs};
use tfwire::net::tcp_segment;
use tfwire::pipeline::Config;
use tfwire::report::postmortem::{self, analyze_files, Postmortem, ReportArgs, SourceArgs};
use tfwire::report::{html, markdown, plot};
use tfwire::tfserving::Exchange;

use crate::support::fixture;

#[derive(Parser)]
struct ReportCli {
    #[command(flatten)]
    args: ReportArgs,
}

#[derive(Parser)]
struct ExtractCli {
    #[command(flatten)]
    args: ExtractArgs,
}

/// A fresh directory for one test's files (kept after the run for inspection).
fn out_dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report-tests")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

/// The fixture models as `--model-dir` values.
fn models() -> Vec<String> {
    ["fraud", "bert", "resnet"]
        .iter()
        .map(|m| fixture("models").join(m).display().to_string())
        .collect()
}

/// `--model-dir DIR` for every fixture model.
fn model_args() -> Vec<String> {
    models()
        .into_iter()
        .flat_map(|m| ["--model-dir".to_string(), m])
        .collect()
}

/// `tfwire report ARGS…` through the library (the binary's entry point).
fn run_report(args: &[String]) -> u8 {
    let cli = ReportCli::try_parse_from(std::iter::once("report".to_string()).chain(args.to_vec()))
        .unwrap_or_else(|e| panic!("report {args:?}: {e}"));
    postmortem::run_report(cli.args).unwrap_or_else(|e| panic!("report {args:?}: {e}"))
}

fn extract(args: &[String]) -> Result<u8, tfwire::RunError> {
    let cli =
        ExtractCli::try_parse_from(std::iter::once("extract".to_string()).chain(args.to_vec()))
            .unwrap_or_else(|e| panic!("extract {args:?}: {e}"));
    run_extract(cli.args)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every exchange of the captures, diagnosed with the fixture models.
fn diagnosed(paths: &[PathBuf]) -> Vec<Exchange> {
    let book = tfwire::load_book(&models(), &[]).expect("models load");
    let mut out = Vec::new();
    analyze_files(paths, Config::default(), book, |ex| out.push(ex)).expect("analysis");
    out
}

/// The postmortem of a fixture, built the way `tfwire report` builds it.
fn postmortem_of(name: &str) -> Postmortem {
    let source = SourceArgs {
        captures: vec![fixture(name)],
        model_dirs: models(),
        signature_files: Vec::new(),
        grpc_ports: vec![8500],
        rest_ports: vec![8501],
    };
    postmortem::postmortem(&source, None).expect("postmortem")
}

fn truth_categories(name: &str) -> BTreeSet<String> {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.truth.json"))).expect("truth file"),
    )
    .expect("truth json");
    truth["exchanges"]
        .as_array()
        .expect("exchanges")
        .iter()
        .filter_map(|e| e["expect"]["category"].as_str().map(str::to_string))
        .collect()
}

const FAILING_FIXTURES: [&str; 2] = ["grpc_basic.pcapng", "grpc_diagnosis.pcapng"];

#[test]
fn html_report_names_every_root_cause_with_frames_and_filters() {
    let dir = out_dir("html");
    for name in FAILING_FIXTURES {
        let out = dir.join(format!("{name}.html"));
        let mut args = vec![fixture(name).display().to_string()];
        args.extend(model_args());
        args.extend(strings(&["-o", &out.display().to_string()]));
        let status = run_report(&args);
        assert_eq!(status, 1, "{name}: failures found → exit 1");
        let html = std::fs::read_to_string(&out).expect("report written");
        let pm = postmortem_of(name);
        let exchanges = diagnosed(&[fixture(name)]);
        let s = &pm.summary;
        assert!(s.failures > 0 && !s.root_causes.is_empty(), "{name}");

        // Self-contained: no scripts, nothing fetched, a CSP that forbids it.
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Content-Security-Policy"));
        for bad in ["<script", "src=", "@import", "url("] {
            assert!(!html.contains(bad), "{name}: report contains {bad}");
        }
        for (i, _) in html.match_indices("href=\"") {
            assert!(
                html[i + 6..].starts_with('#'),
                "{name}: link out of the report at {}",
                &html[i..(i + 60).min(html.len())]
            );
        }
        assert_eq!(html.matches("<svg").count(), 2, "{name}: two plots");
        assert!(html.contains(r#"id="timeline-plot""#) && html.contains(r#"id="latency-plot""#));

        // Overview numbers.
        assert!(html.contains(&format!(r#"<div class="v">{}</div>"#, s.exchanges)));
        assert!(html.contains(&format!(r#"<div class="v bad">{}</div>"#, s.failures)));

        // Every category the fixture's generator says it produced has a group.
        if name == "grpc_diagnosis.pcapng" {
            for c in truth_categories(name) {
                assert!(
                    s.root_causes.iter().any(|rc| rc.category == c),
                    "{name}: no root cause of category {c}"
                );
            }
        }

        // Every root cause: its section, explanation, fix, counts, and an
        // example naming its frames and display filter.
        for (i, rc) in s.root_causes.iter().enumerate() {
            let anchor = format!(r#"id="rc-{}""#, i + 1);
            let start = html
                .find(&anchor)
                .unwrap_or_else(|| panic!("{name}: no section for root cause {}", i + 1));
            let end = start + html[start..].find("</section>").expect("section end");
            let section = &html[start..end];
            let want = [
                rc.category.clone(),
                html::escape_html(&rc.summary),
                html::escape_html(&rc.fix),
                format!("<b>{}</b>", rc.count),
            ];
            for w in want {
                assert!(
                    section.contains(&w),
                    "{name}: root cause {} ({}) lacks {w}",
                    i + 1,
                    rc.category
                );
            }
            if let Some(first) = &rc.first_seen {
                assert!(section.contains(&postmortem::timestamp_str(first)));
            }
            let ex = exchanges
                .iter()
                .find(|e| e.id == rc.first_exchange)
                .expect("first exchange of the group");
            assert!(
                section.contains(&html::escape_html(&ex.wireshark_filter)),
                "{name}: root cause {}: filter {} missing",
                i + 1,
                ex.wireshark_filter
            );
            let frames = format!(
                "request {}",
                ex.request_frames
                    .iter()
                    .take(3)
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            assert!(
                section.contains(&frames),
                "{name}: root cause {}: '{frames}' missing",
                i + 1
            );
            if let Some(input) = ex.inputs.first() {
                assert!(
                    section.contains(&format!("<code>{}</code>", html::escape_html(&input.name))),
                    "{name}: root cause {}: tensor {} not compared",
                    i + 1,
                    input.name
                );
            }
        }
    }
}

/// Worked examples put the request's tensors beside the signature's.
#[test]
fn worked_example_compares_tensors_with_the_signature() {
    let pm = postmortem_of("grpc_diagnosis.pcapng");
    let rc = pm
        .summary
        .root_causes
        .iter()
        .find(|rc| rc.category == "dtype_mismatch" && rc.model.as_deref() == Some("bert"))
        .expect("bert dtype group");
    let ex = pm.example(rc.first_exchange).expect("example kept");
    let exp = ex.expected.as_ref().expect("bert's signature known");
    assert!(exp.declared, "from the SavedModel: {}", exp.source);
    let rows = postmortem::tensor_rows(ex);
    let fault: Vec<_> = rows.iter().filter(|r| r.at_fault).collect();
    assert_eq!(fault.len(), 1);
    assert_eq!(fault[0].alias, "token_type_ids");
    assert_eq!(fault[0].sent_dtype.as_deref(), Some("DT_INT64"));
    assert_eq!(fault[0].expected_dtype.as_deref(), Some("DT_INT32"));
    assert_eq!(fault[0].check, postmortem::Check::DtypeMismatch);
    // The other two inputs were right.
    assert_eq!(
        rows.iter()
            .filter(|r| r.check == postmortem::Check::Ok)
            .count(),
        2
    );

    let rc = pm
        .summary
        .root_causes
        .iter()
        .find(|rc| rc.category == "missing_input")
        .expect("missing_input group");
    let rows = postmortem::tensor_rows(pm.example(rc.first_exchange).expect("example"));
    let missing: Vec<_> = rows
        .iter()
        .filter(|r| r.check == postmortem::Check::Missing)
        .collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].alias, "attention_mask");
    assert!(missing[0].at_fault && missing[0].sent_dtype.is_none());
}

/// Cells of one Markdown table row, split on unescaped pipes.
fn cells(line: &str) -> Vec<String> {
    let inner = line
        .trim()
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("table row not enclosed in pipes: {line}"));
    let mut out = vec![String::new()];
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("cell");
                last.push(c);
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("cell").push(c),
        }
    }
    out
}

/// Checks every table of a Markdown document; returns how many there are.
fn check_markdown_tables(md: &str) -> usize {
    let lines: Vec<&str> = md.lines().collect();
    let mut tables = 0;
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with('|') {
            i += 1;
            continue;
        }
        tables += 1;
        assert!(
            i == 0 || lines[i - 1].trim().is_empty(),
            "table at line {} not preceded by a blank line",
            i + 1
        );
        let header = cells(lines[i]);
        let sep = lines.get(i + 1).copied().unwrap_or("");
        let sep_cells = cells(sep);
        assert_eq!(
            sep_cells.len(),
            header.len(),
            "line {}: separator row has {} cells, header {}",
            i + 2,
            sep_cells.len(),
            header.len()
        );
        for c in &sep_cells {
            let c = c.trim();
            let dashes = c.trim_start_matches(':').trim_end_matches(':');
            assert!(
                !dashes.is_empty() && dashes.chars().all(|ch| ch == '-'),
                "line {}: bad separator cell '{c}'",
                i + 2
            );
        }
        let mut j = i + 2;
        while j < lines.len() && lines[j].starts_with('|') {
            let row = cells(lines[j]);
            assert_eq!(
                row.len(),
                header.len(),
                "line {}: {} cells, header has {}:\n{}",
                j + 1,
                row.len(),
                header.len(),
                lines[j]
            );
            j += 1;
        }
        i = j;
    }
    tables
}

#[test]
fn markdown_report_has_valid_tables_and_every_root_cause() {
    let dir = out_dir("markdown");
    for name in FAILING_FIXTURES {
        let out = dir.join(format!("{}.md", name.trim_end_matches(".pcapng")));
        let mut args = vec![fixture(name).display().to_string()];
        args.extend(model_args());
        args.extend(strings(&["-o", &out.display().to_string()]));
        run_report(&args);
        let md = std::fs::read_to_string(&out).expect("report written");
        let tables = check_markdown_tables(&md);
        assert!(tables >= 8, "{name}: {tables} tables");
        // The plots sit beside the report and are linked from it.
        for plot in ["timeline", "latency"] {
            let file = format!("{}-{plot}.svg", name.trim_end_matches(".pcapng"));
            assert!(
                md.contains(&format!("(<{file}>)")),
                "{name}: {file} not linked"
            );
            let svg = std::fs::read_to_string(dir.join(&file)).expect("plot written");
            assert!(svg.starts_with("<svg xmlns=") && svg.ends_with("</svg>"));
        }
        let pm = postmortem_of(name);
        let exchanges = diagnosed(&[fixture(name)]);
        for (i, rc) in pm.summary.root_causes.iter().enumerate() {
            let heading = format!("### {}. {}", i + 1, markdown::escape_md(&rc.category));
            let start = md
                .find(&heading)
                .unwrap_or_else(|| panic!("{name}: no heading {heading}"));
            let end = md[start + 4..]
                .find("\n### ")
                .map_or(md.len(), |e| start + 4 + e);
            let section = &md[start..end];
            assert!(section.contains(&markdown::escape_md(&rc.summary)));
            let ex = exchanges
                .iter()
                .find(|e| e.id == rc.first_exchange)
                .expect("first exchange");
            assert!(
                section.contains(&format!("`{}`", ex.wireshark_filter)),
                "{name}: {heading}: filter missing"
            );
            let first_frame = ex.request_frames.first().expect("request frame");
            assert!(section.contains(&format!("request {first_frame}")));
        }
    }
}

/// A report of a capture with a failure-free tail, over stdout and with a
/// fixed interval, still renders; bad arguments are refused.
#[test]
fn report_options() {
    let dir = out_dir("options");
    let out = dir.join("large.html");
    let status = run_report(&strings(&[
        &fixture("grpc_large.pcapng").display().to_string(),
        "--interval",
        "250ms",
        "-o",
        &out.display().to_string(),
    ]));
    assert_eq!(status, 0, "no failures → exit 0");
    let html = std::fs::read_to_string(&out).expect("written");
    assert!(html.contains("No exchange failed."));
    assert!(html.contains("one bar per 250 ms"));

    let cli = ReportCli::try_parse_from([
        "report",
        fixture("grpc_basic.pcapng").to_str().expect("utf8 path"),
        "-o",
        dir.join("report.txt").to_str().expect("utf8 path"),
    ])
    .expect("parses");
    let err = postmortem::run_report(cli.args).expect_err("unknown extension");
    assert!(err.0.contains("--format"), "{err}");
    assert!(
        ReportCli::try_parse_from(["report", "x.pcap", "-o", "r.html", "--interval", "soon"])
            .is_err()
    );
}

/// Attacker-controlled text (model names, messages, aliases, request ids)
/// cannot inject markup into the HTML or break the Markdown tables.
#[test]
fn hostile_text_is_escaped() {
    const SCRIPT: &str = "<script>alert(1)</script>";
    const IMG: &str = "\"><img src=x onerror=alert(2)>";
    let mut pm = Postmortem::new(None);
    for mut ex in diagnosed(&[fixture("grpc_basic.pcapng")]) {
        ex.model = Some(format!("{SCRIPT}|m\u{1b}[31m\u{202e}"));
        ex.signature = Some(format!("{IMG}|sig"));
        ex.method = Some(format!("<b>{}</b>", ex.method.unwrap_or_default()).into());
        ex.request_id = Some(format!("</code>{SCRIPT}"));
        ex.client = format!("<i>{}</i>", ex.client);
        if let Some(m) = &mut ex.status.message {
            *m = format!("{m}\n| {IMG} |\n<iframe src=//evil>");
        }
        for t in &mut ex.inputs {
            t.name = format!("{}<svg onload=alert(3)>|", t.name);
        }
        if let Some(d) = &mut ex.diagnosis {
            d.summary = format!("{} {SCRIPT}", d.summary);
            d.fix = format!("{IMG} | {}", d.fix);
            d.evidence.push(format!("server: {SCRIPT}"));
            d.input = d
                .input
                .as_ref()
                .map(|i| format!("{i}<svg onload=alert(3)>|"));
        }
        pm.add(&ex);
    }
    pm.finish(
        &tfwire::diagnose::SignatureBook::new(),
        Default::default(),
        Default::default(),
        Default::default(),
    );
    let page = html::render(&pm);
    for bad in [
        "<script",
        "<img",
        "<iframe",
        "<i>",
        "<b><",
        "onload=alert(3)>",
        "\u{1b}",
        "\u{202e}",
    ] {
        assert!(!page.contains(bad), "HTML contains raw {bad:?}");
    }
    // Inline SVG may appear only as the two plots.
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(page.contains("\\u{1b}[31m\\u{202e}"));

    let md = markdown::render(&pm, &markdown::Images::default());
    check_markdown_tables(&md);
    for bad in ["<script", "<img", "<iframe", "<svg", "\u{1b}"] {
        assert!(!md.contains(bad), "Markdown contains raw {bad:?}");
    }
    assert!(md.contains("&lt;script&gt;"));
}

// ---------------------------------------------------------------------------
// extract

/// (request id, category) of failed exchanges.
fn failures(ex: &[Exchange], keep: impl Fn(&Exchange) -> bool) -> BTreeSet<(String, String)> {
    ex.iter()
        .filter(|e| !e.status.ok && keep(e))
        .map(|e| {
            (
                e.request_id.clone().unwrap_or_default(),
                e.diagnosis
                    .as_ref()
                    .map_or("undiagnosed", |d| d.category)
                    .to_string(),
            )
        })
        .collect()
}

/// What re-analysis must reproduce of each exchange.
fn view(
    e: &Exchange,
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<&str>,
) {
    (
        e.request_id.clone(),
        e.method.as_deref().map(str::to_string),
        e.model.clone(),
        e.status.ok,
        e.diagnosis.as_ref().map(|d| d.category),
    )
}

/// Packets of a capture as (timestamp, original length, link type, bytes).
fn packets(path: &Path) -> Vec<(i64, u32, LinkType, Vec<u8>)> {
    let mut r = CaptureReader::open(path).expect("capture opens");
    let mut out = Vec::new();
    r.for_each_packet(1, |p, _| {
        out.push((p.ts_ns, p.orig_len, p.link, p.data.to_vec()))
    });
    assert!(
        r.stats().cut_short.is_none(),
        "{}: cut short",
        path.display()
    );
    out
}

/// Extracts with `filter_args`, then checks the output: exactly the packets
/// of the selected exchanges' connections, unchanged, which re-analyse to the
/// same exchanges, with the selected failures exactly those that match.
fn check_extract(
    test: &str,
    inputs: &[&str],
    filter_args: &[&str],
    select: impl Fn(&Exchange) -> bool,
) -> Vec<Exchange> {
    let dir = out_dir(test);
    let out = dir.join("failed.pcapng");
    let paths: Vec<PathBuf> = inputs.iter().map(|n| fixture(n)).collect();
    let mut args: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(model_args());
    args.extend(strings(&["-o", &out.display().to_string()]));
    args.extend(strings(filter_args));
    let status = extract(&args).expect("extract runs");

    let original = diagnosed(&paths);
    let selected: Vec<&Exchange> = original
        .iter()
        .filter(|e| !e.status.ok && select(e))
        .collect();
    assert!(!selected.is_empty(), "{test}: the filter selects something");
    assert_eq!(status, 1, "{test}: matching failures → exit 1");
    let conns: HashSet<u64> = selected.iter().map(|e| e.connection).collect();

    let again = diagnosed(std::slice::from_ref(&out));
    // Exactly the exchanges of the selected connections, in order, and the
    // selected failures exactly those the filter picks in the output.
    let want: Vec<_> = original
        .iter()
        .filter(|e| conns.contains(&e.connection))
        .map(view)
        .collect();
    let got: Vec<_> = again.iter().map(view).collect();
    assert_eq!(got, want, "{test}: re-analysis differs");
    assert_eq!(
        failures(&again, &select),
        failures(&original, &select),
        "{test}: selected failures differ"
    );
    let new_conns: BTreeSet<u64> = again.iter().map(|e| e.connection).collect();
    assert_eq!(
        new_conns.len(),
        conns.len(),
        "{test}: connections renumbered 0..n"
    );
    assert!(new_conns.iter().all(|&c| c < conns.len() as u64));

    // The output holds every packet between the selected exchanges' client
    // and server endpoints (no 4-tuple is reused in the fixtures), unchanged
    // and in order, and nothing else.
    let endpoints: HashSet<(SocketAddr, SocketAddr)> = selected
        .iter()
        .map(|e| {
            (
                e.client.parse().expect("client address"),
                e.server.parse().expect("server address"),
            )
        })
        .collect();
    let input_packets: Vec<_> = paths.iter().flat_map(|p| packets(p)).collect();
    let want: Vec<_> = input_packets
        .iter()
        .filter(|(_, _, link, data)| {
            tcp_segment(*link, data).is_ok_and(|seg| {
                endpoints.contains(&(seg.src, seg.dst)) || endpoints.contains(&(seg.dst, seg.src))
            })
        })
        .cloned()
        .collect();
    let output_packets = packets(&out);
    assert!(!output_packets.is_empty());
    assert_eq!(
        output_packets.len(),
        want.len(),
        "{test}: {} packets written, the selected connections have {}",
        output_packets.len(),
        want.len()
    );
    assert!(output_packets == want, "{test}: packets differ");
    if original.iter().any(|e| !conns.contains(&e.connection)) {
        assert!(output_packets.len() < input_packets.len());
    }
    again
}

#[test]
fn extract_by_category_keeps_the_dtype_mismatch_evidence() {
    let again = check_extract(
        "extract-category",
        &["grpc_diagnosis.pcapng"],
        &["--category", "dtype_mismatch"],
        |e| {
            e.diagnosis
                .as_ref()
                .is_some_and(|d| d.category == "dtype_mismatch")
        },
    );
    let ids = failures(&again, |e| {
        e.diagnosis
            .as_ref()
            .is_some_and(|d| d.category == "dtype_mismatch")
    });
    assert_eq!(
        ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["diag-016", "diag-017"]
    );
    // The raw HTTP/2 connection (calls 034–036) is not evidence of this.
    assert!(again
        .iter()
        .all(|e| e.request_id.as_deref() < Some("diag-034")));
}

#[test]
fn extract_by_model_keeps_the_bert_evidence() {
    let again = check_extract(
        "extract-model",
        &["grpc_diagnosis.pcapng"],
        &["--model", "bert"],
        |e| e.model.as_deref() == Some("bert"),
    );
    let ids: Vec<String> = failures(&again, |e| e.model.as_deref() == Some("bert"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["diag-017", "diag-022", "diag-024"]);
}

/// When the matching failures have a connection to themselves, the output
/// re-analyses to exactly them and nothing else.
#[test]
fn extract_of_a_connection_of_its_own_is_exactly_the_selection() {
    let again = check_extract(
        "extract-own-connection",
        &["grpc_diagnosis.pcapng"],
        &["--category", "protocol_mismatch"],
        |e| {
            e.diagnosis
                .as_ref()
                .is_some_and(|d| d.category == "protocol_mismatch")
        },
    );
    let all: Vec<_> = again
        .iter()
        .map(|e| (e.request_id.as_deref(), e.status.ok))
        .collect();
    assert_eq!(
        all,
        [
            (Some("diag-034"), false),
            (Some("diag-035"), false),
            (Some("diag-036"), false)
        ]
    );
}

/// Two files: frame and connection numbers continue across them, and the
/// output holds one connection of each.
#[test]
fn extract_across_files_and_by_client() {
    check_extract(
        "extract-two-files",
        &["grpc_basic.pcapng", "grpc_diagnosis.pcapng"],
        &["--model", "bert", "--client", "127.0.0.1"],
        |e| e.model.as_deref() == Some("bert"),
    );
    // No client matches: nothing selected, an empty but valid capture.
    let dir = out_dir("extract-nothing");
    let out = dir.join("none.pcapng");
    let status = extract(&strings(&[
        &fixture("grpc_basic.pcapng").display().to_string(),
        "--client",
        "10.9.9.9",
        "-o",
        &out.display().to_string(),
    ]))
    .expect("runs");
    assert_eq!(status, 0);
    assert!(packets(&out).is_empty());
}

#[test]
fn extract_refuses_bad_arguments() {
    let dir = out_dir("extract-bad");
    let basic = fixture("grpc_basic.pcapng").display().to_string();
    let out = dir.join("x.pcapng").display().to_string();
    let err = extract(&strings(&[
        &basic,
        "--category",
        "dtype_mismatc",
        "-o",
        &out,
    ]))
    .expect_err("unknown category");
    assert!(err.0.contains("dtype_mismatch"), "{err}");
    let err = extract(&strings(&[&basic, "--client", "bert", "-o", &out])).expect_err("bad IP");
    assert!(err.0.contains("not an IP"), "{err}");
    let err = extract(&strings(&["-", "-o", &out])).expect_err("stdin");
    assert!(err.0.contains("standard input"), "{err}");
    let copy = dir.join("copy.pcapng");
    std::fs::copy(fixture("grpc_basic.pcapng"), &copy).expect("copy");
    let copy = copy.display().to_string();
    let err = extract(&strings(&[&copy, "-o", &copy])).expect_err("output is input");
    assert!(err.0.contains("input"), "{err}");
    assert!(!packets(Path::new(&copy)).is_empty(), "input left intact");
}

// ---------------------------------------------------------------------------
// In a real browser

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TFWIRE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// Renders a page headless; returns the console messages Chromium logged.
fn chromium_screenshot(chromium: &Path, page: &Path, png: &Path, height: u32) -> Vec<String> {
    let profile = png.with_extension("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--force-color-profile=srgb",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 120 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let log = reader.join().expect("stderr reader");
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    assert!(png.is_file(), "no screenshot written:\n{log}");
    let _ = std::fs::remove_dir_all(&profile);
    // Console messages (errors, CSP violations, failed loads) are logged as
    // `[…:INFO:CONSOLE:<line>] "message", source: …`. The report has no
    // script, so any console message at all is a problem.
    log.lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

struct Image {
    width: usize,
    height: usize,
    rgb: Vec<(u8, u8, u8)>,
}

fn decode_png(path: &Path) -> Image {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("png opens"));
    let mut reader = png::Decoder::new(file).read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| (p[0], p[1], p[2]))
        .collect();
    Image {
        width: info.width as usize,
        height: info.height as usize,
        rgb,
    }
}

/// Bounding box (x0, y0, x1, y1) of the pixels of exactly this colour.
fn bbox(img: &Image, color: (u8, u8, u8)) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for y in 0..img.height {
        for x in 0..img.width {
            if img.rgb[y * img.width + x] == color {
                b = Some(match b {
                    None => (x, y, x, y),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                });
            }
        }
    }
    b
}

fn hex_rgb(hex: &str) -> (u8, u8, u8) {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("hex colour");
    ((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// Checks that a plot, found by its unique background colour, is on screen
/// with a sensible size and has coloured marks (bars) in it.
fn check_plot(img: &Image, what: &str, background: (u8, u8, u8), marks: &[&str]) {
    let (x0, y0, x1, y1) =
        bbox(img, background).unwrap_or_else(|| panic!("{what}: plot area not in the screenshot"));
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    assert!(w >= 600 && h >= 100, "{what}: plot area only {w}×{h} px");
    let mut colored = 0usize;
    let mut found = vec![0usize; marks.len()];
    let wanted: Vec<(u8, u8, u8)> = marks.iter().map(|m| hex_rgb(m)).collect();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let p = img.rgb[y * img.width + x];
            let (hi, lo) = (p.0.max(p.1).max(p.2), p.0.min(p.1).min(p.2));
            if p != background && hi - lo > 40 {
                colored += 1;
            }
            for (k, c) in wanted.iter().enumerate() {
                if p == *c {
                    found[k] += 1;
                }
            }
        }
    }
    assert!(
        colored * 200 >= w * h,
        "{what}: plot area {w}×{h} px is nearly blank ({colored} coloured pixels)"
    );
    for (k, n) in found.iter().enumerate() {
        assert!(*n >= 20, "{what}: no bars of colour {} ({n} px)", marks[k]);
    }
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed: CI must run the browser test (apt-get install -y chromium)");
        }
        eprintln!("SKIPPED html_report_renders_in_headless_chromium: chromium not installed (apt-get install chromium)");
        return;
    };
    let dir = out_dir("browser");

    // The console check works: a page that logs an error is caught.
    let canary = dir.join("canary.html");
    std::fs::write(
        &canary,
        "<!DOCTYPE html><html><body><p>canary</p><script>console.error('tfwire-canary')</script></body></html>",
    )
    .expect("write canary");
    let messages = chromium_screenshot(&chromium, &canary, &dir.join("canary.png"), 400);
    assert!(
        messages.iter().any(|m| m.contains("tfwire-canary")),
        "console messages are not visible in Chromium's log; got {messages:?}"
    );

    let report = dir.join("report.html");
    let mut args = vec![fixture("grpc_diagnosis.pcapng").display().to_string()];
    args.extend(model_args());
    args.extend(strings(&["-o", &report.display().to_string()]));
    run_report(&args);
    let png = dir.join("report.png");
    let messages = chromium_screenshot(&chromium, &report, &png, 2000);
    assert!(messages.is_empty(), "console messages: {messages:#?}");

    let img = decode_png(&png);
    assert_eq!((img.width, img.height), (1280, 2000));
    check_plot(
        &img,
        "timeline",
        plot::TIMELINE_BACKGROUND,
        &[
            plot::OK_COLOR,
            plot::category_color("dtype_mismatch"),
            plot::category_color("protocol_mismatch"),
        ],
    );
    check_plot(
        &img,
        "latency",
        plot::LATENCY_BACKGROUND,
        &[plot::LATENCY_OK_COLOR, plot::LATENCY_FAILED_COLOR],
    );
}
