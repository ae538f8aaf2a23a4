//! tfwire: reads TensorFlow Serving traffic off the wire and explains why
//! requests were rejected.
//!
//! Pipeline (one module per stage): `capture` → `net` → `http2` → `grpc` →
//! `tfserving` → `diagnose` → `report`, driven by `pipeline::Analyzer`.

pub mod capture;
pub mod cli;
pub mod diagnose;
pub mod extract;
pub mod grpc;
pub mod http1;
pub mod http2;
pub mod live;
pub mod net;
pub mod pipeline;
pub mod report;
pub mod shard;
pub mod tfserving;

/// Deterministic pseudo-random numbers below `n` for the tests (xorshift64),
/// without a dev-dependency.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

use std::io::{self, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use capture::CaptureReader;
use cli::{AnalyzeOptions, Format};
use pipeline::Analyzer;
use report::{JsonLines, Summary, TableReport};
use tfserving::Exchange;

/// Exit statuses (DESIGN.md §5).
pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_FAILURES: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Where exchanges go while the analysis runs.
enum Output<W: Write> {
    Jsonl(JsonLines<W>),
    Table(TableReport),
    SummaryOnly,
}

struct Collector<W: Write> {
    engine: diagnose::Engine,
    summary: Summary,
    output: Output<W>,
    /// Exchanges reported, in order, for their shard thread to free (None:
    /// kept by the table); collected only in sharded runs.
    spent: Option<Vec<Option<shard::Spent>>>,
    /// Sharded runs: the line a worker wrote for each exchange in the
    /// engine, in the engine's (first in, first out) order.
    lines: std::collections::VecDeque<Option<shard::Line>>,
}

fn report_one<W: Write>(
    summary: &mut Summary,
    output: &mut Output<W>,
    spent: &mut Option<Vec<Option<shard::Spent>>>,
    line: Option<shard::Line>,
    ex: Box<Exchange>,
) -> bool {
    summary.add(&ex);
    let (ok, done) = match output {
        Output::Jsonl(j) => {
            let ok = match &line {
                // Written by a worker; the merger adds the diagnosis or warnings.
                Some(l) => j.write_with(|buf| {
                    l.write(
                        buf,
                        ex.id,
                        ex.connection,
                        ex.diagnosis.as_deref(),
                        &ex.warnings,
                    )
                }),
                _ => j.exchange(&ex),
            };
            (ok, Some((ex, line)))
        }
        Output::Table(t) => {
            t.add(*ex);
            (true, None)
        }
        Output::SummaryOnly => (true, Some((ex, line))),
    };
    if let Some(s) = spent {
        s.push(done);
    }
    ok
}

impl<W: Write> Collector<W> {
    fn take(&mut self, ex: Box<Exchange>) -> bool {
        let Collector {
            engine,
            summary,
            output,
            spent,
            lines,
        } = self;
        engine.push(ex, &mut |ex| {
            report_one(summary, output, spent, lines.pop_front().flatten(), ex)
        })
    }

    fn finish(&mut self) -> bool {
        self.spent = None;
        let Collector {
            engine,
            summary,
            output,
            spent,
            lines,
        } = self;
        engine.finish(&mut |ex| report_one(summary, output, spent, lines.pop_front().flatten(), ex))
    }
}

impl<W: Write> pipeline::ExchangeSink for Collector<W> {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        self.take(ex)
    }
}

impl<W: Write> pipeline::ExchangeSink for &mut Collector<W> {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        self.take(ex)
    }
}

impl<W: Write> shard::Merged for &mut Collector<W> {
    fn recycle(&mut self) {
        self.spent.get_or_insert_with(Vec::new);
    }

    fn exchange_with_line(&mut self, ex: Box<Exchange>, line: Option<shard::Line>) -> bool {
        self.lines.push_back(line);
        self.take(ex)
    }

    fn spent(&mut self, into: &mut Vec<Option<shard::Spent>>) {
        if let Some(s) = &mut self.spent {
            into.append(s);
        }
    }
}

/// Builds the SignatureBook from `--model-dir` and `--signatures`.
pub fn load_book(
    model_dirs: &[String],
    signature_files: &[std::path::PathBuf],
) -> Result<diagnose::SignatureBook, RunError> {
    let mut book = diagnose::SignatureBook::new();
    for arg in model_dirs {
        for l in diagnose::sources::load_model_dir(arg).map_err(RunError)? {
            let source = diagnose::Source::ModelDir(l.path.display().to_string());
            book.add_map(&l.model, l.version, &l.signatures, source);
        }
    }
    for path in signature_files {
        let (model, version, map) =
            diagnose::sources::load_signatures_file(path).map_err(RunError)?;
        let model = model.ok_or_else(|| {
            RunError(format!(
                "{}: no model_spec.name in the metadata JSON",
                path.display()
            ))
        })?;
        let source = diagnose::Source::SignaturesFile(path.display().to_string());
        book.add_map(&model, version, &map, source);
    }
    Ok(book)
}

/// Error that stops a run with exit status 2.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs `tfwire analyze` writing to `out`; returns the exit status.
pub fn analyze(opts: &AnalyzeOptions, out: impl Write) -> Result<u8, RunError> {
    // JSON Lines streams into `out`; the other formats write it at the end.
    let mut out = Some(out);
    let output = match (opts.format, out.take_if(|_| opts.format == Format::Jsonl)) {
        (Format::Jsonl, Some(w)) => Output::Jsonl(JsonLines::new(w, false)),
        (Format::Table, _) => Output::Table(TableReport::new(opts.all, opts.color)),
        _ => Output::SummaryOnly,
    };
    let mut collector = Collector {
        engine: diagnose::Engine::new(load_book(&opts.model_dirs, &opts.signature_files)?),
        summary: Summary::new(),
        output,
        spent: None,
        lines: std::collections::VecDeque::new(),
    };

    // Open every file first so that a bad argument fails before any output.
    let mut readers = Vec::new();
    for path in &opts.captures {
        let r = CaptureReader::open(path).map_err(|e| RunError(e.to_string()))?;
        let size = std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        readers.push((r, size));
    }
    let shards = shard::usable_shards(&opts.captures, opts.threads);
    let (totals, net, protocols) = if shards > 1 {
        drop(readers);
        analyze_sharded(opts, shards, &mut collector)?
    } else {
        analyze_one(opts, readers, &mut collector)
    };
    collector.finish();
    let summary = &mut collector.summary;
    summary.capture = totals;
    summary.network = net;
    summary.protocols = protocols;
    summary.finish();
    let status = if summary.failures > 0 {
        EXIT_FAILURES
    } else {
        EXIT_CLEAN
    };

    let result = match &mut collector.output {
        Output::Jsonl(j) => {
            j.write(&collector.summary);
            j.finish()
        }
        Output::Table(t) => match out.as_mut() {
            Some(w) => t.print(&collector.summary, w).and_then(|_| w.flush()),
            None => Ok(()),
        },
        Output::SummaryOnly => match out.as_mut() {
            Some(w) => serde_json::to_writer(&mut *w, &collector.summary)
                .map_err(io::Error::from)
                .and_then(|_| writeln!(w))
                .and_then(|_| w.flush()),
            None => Ok(()),
        },
    };
    match result {
        // A closed pipe (`tfwire analyze … | head`) is a normal end.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(RunError(format!("writing output: {e}")))
        }
        _ => Ok(status),
    }
}

type Readers = Vec<(CaptureReader<'static>, Option<u64>)>;

/// Everything in this thread, packet by packet.
fn analyze_one<W: Write>(
    opts: &AnalyzeOptions,
    readers: Readers,
    collector: &mut Collector<W>,
) -> (
    report::summary::CaptureTotals,
    net::NetStats,
    pipeline::ProtoStats,
) {
    let mut analyzer = Analyzer::new(opts.config.clone(), collector);
    let mut totals = report::summary::CaptureTotals::default();
    let mut frame = 1u64;
    let (mut first_ts, mut last_ts) = (None::<i64>, None::<i64>);
    for (mut reader, size) in readers {
        let bar = progress_bar(opts.progress, size, reader.name());
        let mut since = 0u32;
        frame = reader.for_each_packet(frame, |p, consumed| {
            analyzer.packet(p);
            if p.ts_ns != 0 {
                first_ts = Some(first_ts.map_or(p.ts_ns, |f: i64| f.min(p.ts_ns)));
                last_ts = Some(last_ts.map_or(p.ts_ns, |l: i64| l.max(p.ts_ns)));
            }
            since += 1;
            if since == 4096 {
                since = 0;
                if let Some(b) = &bar {
                    b.set_position(consumed);
                }
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        warn_cut_short(reader.name(), reader.stats());
        totals.add(reader.name(), reader.stats());
        if analyzer.stopped() {
            break;
        }
    }
    analyzer.finish();
    totals.first_packet = first_ts.map(tfserving::exchange::rfc3339);
    totals.last_packet = last_ts.map(tfserving::exchange::rfc3339);
    (totals, analyzer.net_stats(), analyzer.proto_stats())
}

/// Connections shared out to `shards` threads (see `shard`).
fn analyze_sharded<W: Write>(
    opts: &AnalyzeOptions,
    shards: usize,
    collector: &mut Collector<W>,
) -> Result<
    (
        report::summary::CaptureTotals,
        net::NetStats,
        pipeline::ProtoStats,
    ),
    RunError,
> {
    let bar = std::sync::Mutex::new(None::<ProgressBar>);
    let progress = |p: shard::Progress<'_>| {
        let Ok(mut bar) = bar.lock() else {
            return;
        };
        match p {
            shard::Progress::File { name, size } => *bar = progress_bar(opts.progress, size, name),
            shard::Progress::Consumed(n) => {
                if let Some(b) = bar.as_ref() {
                    b.set_position(n);
                }
            }
            shard::Progress::FileDone => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    };
    let job = shard::Job {
        captures: &opts.captures,
        config: &opts.config,
        shards,
        output: match opts.format {
            Format::Jsonl => shard::Output::Lines,
            Format::Summary => shard::Output::Counts,
            Format::Table => shard::Output::Whole,
        },
        progress: &progress,
    };
    let mut sink = collector;
    let ends = shard::run(&job, &mut sink).map_err(RunError)?;
    let mut totals = report::summary::CaptureTotals::default();
    let mut net = net::NetStats::default();
    let mut protocols = pipeline::ProtoStats::default();
    for end in &ends {
        net.add(&end.net);
        protocols.add(&end.protocols);
    }
    if let Some(lead) = ends.first() {
        for (name, stats) in &lead.captures {
            warn_cut_short(name, stats);
            totals.add(name, stats);
        }
        totals.first_packet = lead.first_ts.map(tfserving::exchange::rfc3339);
        totals.last_packet = lead.last_ts.map(tfserving::exchange::rfc3339);
    }
    Ok((totals, net, protocols))
}

fn warn_cut_short(name: &str, stats: &capture::CaptureStats) {
    if let Some(c) = &stats.cut_short {
        eprintln!("tfwire: warning: {name}: {c}");
    }
}

/// `tfwire signature`: prints the signatures of a SavedModel or metadata JSON.
pub fn show_signatures(args: &cli::SignatureArgs, out: &mut impl Write) -> Result<u8, RunError> {
    let path = std::path::Path::new(&args.source);
    let loaded: Vec<(String, Option<i64>, tfserving::SignatureMap)> = if path.is_file() {
        let (model, version, map) =
            diagnose::sources::load_signatures_file(path).map_err(RunError)?;
        vec![(model.unwrap_or_else(|| "?".into()), version, map)]
    } else {
        diagnose::sources::load_model_dir(&args.source)
            .map_err(RunError)?
            .into_iter()
            .map(|l| (l.model, l.version, l.signatures))
            .collect()
    };
    let result = if args.json {
        let v: Vec<serde_json::Value> = loaded
            .iter()
            .map(|(m, v, s)| serde_json::json!({"model": m, "version": v, "signatures": s}))
            .collect();
        serde_json::to_writer_pretty(&mut *out, &v)
            .map_err(io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        report::print_signatures(&loaded, out)
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(RunError(format!("writing output: {e}")))
        }
        _ => Ok(EXIT_CLEAN),
    }
}

fn progress_bar(enabled: bool, size: Option<u64>, name: &str) -> Option<ProgressBar> {
    let size = size.filter(|_| enabled)?;
    let bar = ProgressBar::new(size);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .ok()?
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(report::escape_for_terminal(name));
    Some(bar)
}

/// Entry point of the binary.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    use clap::Parser;
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                EXIT_ERROR
            } else {
                EXIT_CLEAN
            });
        }
    };
    let result = match cli.command {
        cli::Command::Analyze(args) => match args.validate() {
            Ok(opts) => analyze(&opts, io::BufWriter::new(io::stdout().lock())),
            Err(e) => Err(RunError(e)),
        },
        cli::Command::Signature(args) => show_signatures(&args, &mut io::stdout().lock()),
        cli::Command::Live(args) => live::run(args),
        cli::Command::Report(args) => report::postmortem::run_report(args),
        cli::Command::Extract(args) => extract::run_extract(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tfwire: {}", report::escape_for_terminal(&e.0));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
