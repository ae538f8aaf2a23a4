//! `tfwire report`: the postmortem of a capture. `Postmortem` collects what
//! the report needs while exchanges stream by, in bounded memory: counters
//! per interval (the timeline), fixed log-scale latency buckets per method,
//! capped failure-rate tables, and one worked example per root cause. The
//! renderers (`html`, `markdown`, `plot`) only read it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::capture::CaptureReader;
use crate::diagnose::{Engine, SignatureBook};
use crate::net::NetStats;
use crate::pipeline::{Analyzer, Config, ExchangeSink, ProtoStats};
use crate::report::summary::{client_host, CaptureTotals};
use crate::report::{escape_for_terminal, plural, Summary};
use crate::tfserving::exchange::rfc3339;
use crate::tfserving::{Exchange, Signature};
use crate::{RunError, EXIT_CLEAN, EXIT_FAILURES};

/// Diagnosis categories (DESIGN.md §3), in the order plots and legends use,
/// then `undiagnosed` for failures without a diagnosis.
pub const CATEGORIES: &[&str] = &[
    "dtype_mismatch",
    "shape_mismatch",
    "missing_batch_dim",
    "batch_size_mismatch",
    "unknown_input_alias",
    "missing_input",
    "unknown_output_alias",
    "unknown_signature",
    "wrong_signature_method",
    "model_not_found",
    "version_not_found",
    "malformed_tensor",
    "malformed_json",
    "wrong_format",
    "ragged_instances",
    "protocol_mismatch",
    "message_too_large",
    "server_error",
    "other",
    UNDIAGNOSED,
];

/// Category of a failure the engine could not diagnose.
pub const UNDIAGNOSED: &str = "undiagnosed";

/// Root-cause groups that keep a worked example (the rest are counted only).
const MAX_EXAMPLES: usize = 500;
/// Tensors, notes and frame numbers kept per worked example.
const MAX_EXAMPLE_TENSORS: usize = 64;
const MAX_EXAMPLE_NOTES: usize = 16;
const MAX_EXAMPLE_FRAMES: usize = 64;
/// Longest server message or note kept (characters).
const MAX_TEXT: usize = 4096;
/// Rows per failure-rate table; later keys are counted under "(other)".
const MAX_BREAKDOWN_ROWS: usize = 1000;
/// Longest key kept in a failure-rate table (characters).
const MAX_KEY: usize = 200;
/// Methods with their own latency histogram; later ones share "(other)".
const MAX_LATENCY_METHODS: usize = 16;

// ---------------------------------------------------------------------------
// Timeline

/// Automatic interval widths: each divides the next, so buckets merge exactly
/// when the capture turns out longer than expected.
const AUTO_WIDTHS_NS: &[i64] = &[
    1_000_000,
    2_000_000,
    10_000_000,
    20_000_000,
    100_000_000,
    200_000_000,
    1_000_000_000,
    2_000_000_000,
    10_000_000_000,
    20_000_000_000,
    60_000_000_000,
    120_000_000_000,
    600_000_000_000,
    1_200_000_000_000,
    3_600_000_000_000,
    7_200_000_000_000,
    21_600_000_000_000,
    43_200_000_000_000,
    86_400_000_000_000,
];
/// Bars the automatic interval aims at, at most.
const MAX_AUTO_BARS: i64 = 120;
/// Bars a user-given interval may produce before it is widened.
const MAX_BARS: i64 = 2000;

/// Requests in one interval: the successful ones and the failures by category.
#[derive(Debug, Default, Clone)]
pub struct Bucket {
    pub ok: u64,
    pub failed: BTreeMap<&'static str, u64>,
}

impl Bucket {
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.ok + self.failures()
    }

    fn merge(&mut self, other: &Bucket) {
        self.ok += other.ok;
        for (k, v) in &other.failed {
            *self.failed.entry(k).or_default() += v;
        }
    }
}

/// Requests and failures per interval. Holds at most `MAX_BARS` buckets: the
/// interval widens (buckets merge) when the exchanges span more.
#[derive(Debug, Clone)]
pub struct Timeline {
    width_ns: i64,
    auto: bool,
    /// A user-given interval was widened to keep the bar count bounded.
    pub widened_from: Option<i64>,
    /// Bucket index (start time / width) → counts.
    buckets: BTreeMap<i64, Bucket>,
    /// Exchanges without a timestamp.
    pub undated: u64,
}

impl Timeline {
    /// `interval_ns`: a fixed interval, or `None` to choose one.
    pub fn new(interval_ns: Option<i64>) -> Timeline {
        let fixed = interval_ns.filter(|&w| w > 0);
        Timeline {
            width_ns: fixed.unwrap_or(AUTO_WIDTHS_NS[0]),
            auto: fixed.is_none(),
            widened_from: None,
            buckets: BTreeMap::new(),
            undated: 0,
        }
    }

    /// `category`: `None` for a successful exchange.
    pub fn add(&mut self, ts_ns: Option<i64>, category: Option<&'static str>) {
        let Some(ts) = ts_ns else {
            self.undated += 1;
            return;
        };
        let b = self
            .buckets
            .entry(ts.div_euclid(self.width_ns))
            .or_default();
        match category {
            None => b.ok += 1,
            Some(c) => *b.failed.entry(c).or_default() += 1,
        }
        self.fit();
    }

    fn span(&self) -> i64 {
        match (self.buckets.keys().next(), self.buckets.keys().next_back()) {
            (Some(lo), Some(hi)) => hi.saturating_sub(*lo).saturating_add(1),
            _ => 0,
        }
    }

    fn fit(&mut self) {
        let max = if self.auto { MAX_AUTO_BARS } else { MAX_BARS };
        while self.span() > max {
            let next = if self.auto {
                AUTO_WIDTHS_NS
                    .iter()
                    .copied()
                    .find(|&w| w > self.width_ns)
                    .unwrap_or(self.width_ns.saturating_mul(2))
            } else {
                self.widened_from.get_or_insert(self.width_ns);
                self.width_ns.saturating_mul(2)
            };
            if next == self.width_ns {
                break;
            }
            let factor = next / self.width_ns;
            let old = std::mem::take(&mut self.buckets);
            for (k, b) in old {
                self.buckets
                    .entry(k.div_euclid(factor))
                    .or_default()
                    .merge(&b);
            }
            self.width_ns = next;
        }
    }

    pub fn width_ns(&self) -> i64 {
        self.width_ns
    }

    pub fn is_automatic(&self) -> bool {
        self.auto
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Every interval from the first to the last exchange, empty ones
    /// included: (interval start in ns since the epoch, counts).
    pub fn bars(&self) -> Vec<(i64, Bucket)> {
        let (Some(&lo), Some(&hi)) = (self.buckets.keys().next(), self.buckets.keys().next_back())
        else {
            return Vec::new();
        };
        (lo..=hi)
            .map(|k| {
                (
                    k.saturating_mul(self.width_ns),
                    self.buckets.get(&k).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Failure categories present, in `CATEGORIES` order (unknown ones last).
    pub fn categories(&self) -> Vec<&'static str> {
        let mut seen: Vec<&'static str> = Vec::new();
        for b in self.buckets.values() {
            for k in b.failed.keys() {
                if !seen.contains(k) {
                    seen.push(k);
                }
            }
        }
        seen.sort_by_key(|c| {
            (
                CATEGORIES.iter().position(|k| k == c).unwrap_or(usize::MAX),
                *c,
            )
        });
        seen
    }
}

// ---------------------------------------------------------------------------
// Latency

/// Log-scale buckets: `PER_DECADE` per decade from `LOW_MS` (1 µs) over
/// `DECADES` decades (to 100 s), plus one below and one above. A quantile
/// read from them is within ±6 % of the true value.
pub const LATENCY_PER_DECADE: usize = 20;
pub const LATENCY_LOW_MS: f64 = 1e-3;
const DECADES: usize = 8;
pub const LATENCY_BUCKETS: usize = LATENCY_PER_DECADE * DECADES + 2;

/// Latencies of one method: successful and failed exchanges apart.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    pub ok: Vec<u64>,
    pub failed: Vec<u64>,
    pub count: u64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub sum_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            ok: vec![0; LATENCY_BUCKETS],
            failed: vec![0; LATENCY_BUCKETS],
            count: 0,
            min_ms: f64::INFINITY,
            max_ms: 0.0,
            sum_ms: 0.0,
        }
    }
}

impl LatencyHistogram {
    /// Bucket index of a latency.
    pub fn bucket(ms: f64) -> usize {
        if ms < LATENCY_LOW_MS {
            return 0;
        }
        let i = ((ms / LATENCY_LOW_MS).log10() * LATENCY_PER_DECADE as f64).floor();
        if i.is_finite() && i >= 0.0 {
            (i as usize + 1).min(LATENCY_BUCKETS - 1)
        } else {
            LATENCY_BUCKETS - 1
        }
    }

    /// Lower and upper bound of a bucket, in ms (the outer ones use the
    /// observed min/max).
    pub fn bounds(&self, i: usize) -> (f64, f64) {
        let edge = |k: usize| LATENCY_LOW_MS * 10f64.powf(k as f64 / LATENCY_PER_DECADE as f64);
        match i {
            0 => (self.min_ms.min(LATENCY_LOW_MS), LATENCY_LOW_MS),
            i if i >= LATENCY_BUCKETS - 1 => (edge(LATENCY_BUCKETS - 2), self.max_ms),
            i => (edge(i - 1), edge(i)),
        }
    }

    pub fn add(&mut self, ms: f64, ok: bool) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let i = Self::bucket(ms);
        if ok {
            self.ok[i] += 1;
        } else {
            self.failed[i] += 1;
        }
        self.count += 1;
        self.min_ms = self.min_ms.min(ms);
        self.max_ms = self.max_ms.max(ms);
        self.sum_ms += ms;
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms / self.count as f64)
    }

    /// Approximate quantile (`q` in 0..=1): the geometric middle of the
    /// bucket holding it, clamped to the observed range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for i in 0..LATENCY_BUCKETS {
            seen += self.ok[i] + self.failed[i];
            if seen >= target {
                let (lo, hi) = self.bounds(i);
                let mid = (lo.max(1e-9) * hi.max(1e-9)).sqrt();
                return Some(mid.clamp(self.min_ms, self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

/// Latency histograms per method.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    methods: BTreeMap<String, LatencyHistogram>,
    other: LatencyHistogram,
    /// Exchanges without a latency (no response end seen, reset, …).
    pub unmeasured: u64,
}

/// Name of the shared row past the per-table caps.
pub const OTHER_ROW: &str = "(other)";

impl Latencies {
    pub fn add(&mut self, method: &str, ms: Option<f64>, ok: bool) {
        let Some(ms) = ms else {
            self.unmeasured += 1;
            return;
        };
        let method = clip_key(method);
        let h = if self.methods.contains_key(&method) || self.methods.len() < MAX_LATENCY_METHODS {
            self.methods.entry(method).or_default()
        } else {
            &mut self.other
        };
        h.add(ms, ok);
    }

    /// (method, histogram), most exchanges first; `(other)` last.
    pub fn methods(&self) -> Vec<(&str, &LatencyHistogram)> {
        let mut v: Vec<(&str, &LatencyHistogram)> = self
            .methods
            .iter()
            .filter(|(_, h)| h.count > 0)
            .map(|(k, h)| (k.as_str(), h))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        if self.other.count > 0 {
            v.push((OTHER_ROW, &self.other));
        }
        v
    }
}

// ---------------------------------------------------------------------------
// Failure-rate tables

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub exchanges: u64,
    pub failures: u64,
}

impl Rate {
    fn add(&mut self, failed: bool) {
        self.exchanges += 1;
        if failed {
            self.failures += 1;
        }
    }

    /// Failures per exchange, 0..=1.
    pub fn ratio(&self) -> f64 {
        if self.exchanges == 0 {
            0.0
        } else {
            self.failures as f64 / self.exchanges as f64
        }
    }
}

/// Exchanges and failures per key (model, signature, method, client), at
/// most `MAX_BREAKDOWN_ROWS` keys; later keys share one `(other)` row.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    rows: BTreeMap<String, Rate>,
    other: Rate,
}

impl Breakdown {
    pub fn add(&mut self, key: &str, failed: bool) {
        let key = clip_key(key);
        if let Some(r) = self.rows.get_mut(&key) {
            r.add(failed);
        } else if self.rows.len() < MAX_BREAKDOWN_ROWS {
            self.rows.entry(key).or_default().add(failed);
        } else {
            self.other.add(failed);
        }
    }

    /// Rows with the most failures first, then the busiest; `(other)` last.
    pub fn rows(&self) -> Vec<(&str, Rate)> {
        let mut v: Vec<(&str, Rate)> = self.rows.iter().map(|(k, r)| (k.as_str(), *r)).collect();
        v.sort_by(|a, b| {
            b.1.failures
                .cmp(&a.1.failures)
                .then(b.1.exchanges.cmp(&a.1.exchanges))
                .then(a.0.cmp(b.0))
        });
        if self.other.exchanges > 0 {
            v.push((OTHER_ROW, self.other));
        }
        v
    }
}

fn clip_key(key: &str) -> String {
    if key.chars().count() <= MAX_KEY {
        key.to_string()
    } else {
        let mut s: String = key.chars().take(MAX_KEY - 1).collect();
        s.push('…');
        s
    }
}

// ---------------------------------------------------------------------------
// Worked examples

/// What the model expects for the example's model/version/signature.
#[derive(Debug, Clone)]
pub struct Expected {
    pub signature_name: String,
    pub version: Option<i64>,
    pub signature: Signature,
    /// Where it came from (DESIGN.md §4), e.g. `signature: SavedModel …`.
    pub source: String,
    /// Declared by the model (SavedModel, metadata) rather than inferred from traffic.
    pub declared: bool,
}

/// The first exchange of a root-cause group, trimmed to what the report shows.
#[derive(Debug, Clone)]
pub struct Example {
    pub exchange: Exchange,
    /// Tensors / frames in the exchange before trimming.
    pub inputs_total: usize,
    pub request_frames_total: usize,
    pub response_frames_total: usize,
    pub expected: Option<Expected>,
}

impl Example {
    fn of(ex: &Exchange) -> Example {
        let mut e = ex.clone();
        let (inputs_total, req_total, resp_total) = (
            e.inputs.len(),
            e.request_frames.len(),
            e.response_frames.len(),
        );
        e.inputs.truncate(MAX_EXAMPLE_TENSORS);
        e.outputs.clear();
        e.output_filter.truncate(MAX_EXAMPLE_TENSORS);
        e.signatures = None;
        e.model_status = None;
        e.notes.truncate(MAX_EXAMPLE_NOTES);
        for n in &mut e.notes {
            *n = clip_text(n);
        }
        e.request_frames.truncate(MAX_EXAMPLE_FRAMES);
        e.response_frames.truncate(MAX_EXAMPLE_FRAMES);
        e.status.message = e.status.message.as_deref().map(clip_text);
        for t in &mut e.inputs {
            t.problems.truncate(4);
        }
        Example {
            exchange: e,
            inputs_total,
            request_frames_total: req_total,
            response_frames_total: resp_total,
            expected: None,
        }
    }
}

fn clip_text(s: &str) -> String {
    clip(s, MAX_TEXT)
}

/// At most `max` characters, the last one `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `model/signature` of a root-cause group for headings and tables (long
/// names clipped: the worked example shows them whole).
pub fn group_title(rc: &super::summary::RootCause) -> String {
    let mut s = rc
        .model
        .as_deref()
        .map_or_else(|| "unknown model".into(), |m| clip(m, 100));
    if let Some(sig) = &rc.signature {
        s.push('/');
        s.push_str(&clip(sig, 60));
    }
    s
}

// ---------------------------------------------------------------------------
// The collector

/// Everything the postmortem report shows, gathered in one pass.
#[derive(Debug, Clone)]
pub struct Postmortem {
    /// Counts, root-cause groups, capture statistics (the `analyze` summary).
    pub summary: Summary,
    pub timeline: Timeline,
    pub latencies: Latencies,
    pub by_model: Breakdown,
    /// Key: `model/signature`.
    pub by_signature: Breakdown,
    pub by_method: Breakdown,
    /// Key: the client's address without its port.
    pub by_client: Breakdown,
    /// First and last exchange start (ns since the epoch).
    pub first_exchange_ns: Option<i64>,
    pub last_exchange_ns: Option<i64>,
    /// Exchanges that succeeded with a warning (silently altered by the server).
    pub warnings: u64,
    /// Worked examples by the id of the root cause's first exchange.
    examples: HashMap<u64, Example>,
    /// Root-cause groups past `MAX_EXAMPLES` (no example kept).
    pub examples_dropped: u64,
}

impl Postmortem {
    /// `interval_ns`: timeline interval, `None` for automatic.
    pub fn new(interval_ns: Option<i64>) -> Postmortem {
        Postmortem {
            summary: Summary::new(),
            timeline: Timeline::new(interval_ns),
            latencies: Latencies::default(),
            by_model: Breakdown::default(),
            by_signature: Breakdown::default(),
            by_method: Breakdown::default(),
            by_client: Breakdown::default(),
            first_exchange_ns: None,
            last_exchange_ns: None,
            warnings: 0,
            examples: HashMap::new(),
            examples_dropped: 0,
        }
    }

    /// Takes one diagnosed exchange (in the order the engine releases them).
    pub fn add(&mut self, ex: &Exchange) {
        let groups = self.summary.root_causes.len();
        self.summary.add(ex);
        // A new group starts with this exchange: it is the group's example.
        if self.summary.root_causes.len() > groups {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.insert(ex.id, Example::of(ex));
            } else {
                self.examples_dropped += 1;
            }
        }
        let failed = !ex.status.ok;
        if let Some(ts) = ex.start_ts_ns {
            self.first_exchange_ns = Some(self.first_exchange_ns.map_or(ts, |f| f.min(ts)));
            self.last_exchange_ns = Some(self.last_exchange_ns.map_or(ts, |l| l.max(ts)));
        }
        let category = failed.then(|| ex.diagnosis.as_ref().map_or(UNDIAGNOSED, |d| d.category));
        self.timeline.add(ex.start_ts_ns, category);
        let method = ex.method.as_deref().unwrap_or("unknown");
        self.latencies.add(method, ex.latency_ms, !failed);
        self.by_method.add(method, failed);
        let model = ex.model.as_deref().unwrap_or("unknown");
        self.by_model.add(model, failed);
        if ex.model.is_some() || ex.signature.is_some() {
            let sig = format!("{model}/{}", ex.signature.as_deref().unwrap_or("–"));
            self.by_signature.add(&sig, failed);
        }
        self.by_client.add(&client_host(&ex.client), failed);
        if !ex.warnings.is_empty() {
            self.warnings += 1;
        }
    }

    /// End of input: capture statistics in, root causes ordered, and each
    /// example's expected signature looked up in what the book knows now.
    pub fn finish(
        &mut self,
        book: &SignatureBook,
        capture: CaptureTotals,
        network: NetStats,
        protocols: ProtoStats,
    ) {
        self.summary.capture = capture;
        self.summary.network = network;
        self.summary.protocols = protocols;
        self.summary.finish();
        for e in self.examples.values_mut() {
            let ex = &e.exchange;
            let Some(model) = ex.model.as_deref() else {
                continue;
            };
            let sig = ex
                .signature
                .as_deref()
                .unwrap_or(crate::tfserving::DEFAULT_SIGNATURE);
            if let Some(entry) = book.lookup(model, ex.version.or(ex.resolved_version), sig) {
                e.expected = Some(Expected {
                    signature_name: sig.to_string(),
                    version: entry.version,
                    signature: entry.signature.clone(),
                    source: entry.source.describe(),
                    declared: entry.source.is_declared(),
                });
            }
        }
    }

    /// The worked example of a root-cause group.
    pub fn example(&self, first_exchange: u64) -> Option<&Example> {
        self.examples.get(&first_exchange)
    }

    /// All exchanges started on one (UTC) day: tables may show times of day only.
    pub fn one_day(&self) -> bool {
        match (self.first_exchange_ns, self.last_exchange_ns) {
            (Some(a), Some(b)) => {
                a.div_euclid(86_400_000_000_000) == b.div_euclid(86_400_000_000_000)
            }
            _ => true,
        }
    }

    /// A root cause's first/last seen for a table cell: the time of day when
    /// every exchange is from one day.
    pub fn seen(&self, s: Option<&str>) -> String {
        match s {
            Some(s) if self.one_day() => clock(s),
            Some(s) => timestamp_str(s),
            None => String::new(),
        }
    }

    /// The exchanges' time range: (span, from–to text).
    pub fn time_range(&self) -> Option<(String, String)> {
        let (a, b) = (self.first_exchange_ns?, self.last_exchange_ns?);
        let (ra, rb) = (rfc3339(a), rfc3339(b));
        let text = if self.one_day() {
            format!(
                "{} {} to {} UTC",
                ra.get(..10).unwrap_or(""),
                clock(&ra),
                clock(&rb)
            )
        } else {
            format!("{} to {}", timestamp(a), timestamp(b))
        };
        Some((duration(b.saturating_sub(a)), text))
    }

    /// Failed exchanges / exchanges.
    pub fn failure_rate(&self) -> f64 {
        if self.summary.exchanges == 0 {
            0.0
        } else {
            self.summary.failures as f64 / self.summary.exchanges as f64
        }
    }
}

// ---------------------------------------------------------------------------
// Formatting shared by the renderers

/// Text from the traffic made visible: control characters and bidi
/// overrides (which could reorder what a reader sees) shown escaped.
/// `keep_newlines` keeps `\n` and `\t` (for pre-wrapped blocks).
pub fn visible(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' if keep_newlines => out.push(c),
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&c.escape_unicode().to_string())
            }
            c if c.is_control() => out.push_str(&escape_for_terminal(&c.to_string())),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-27 15:35:24.355 UTC`.
pub fn timestamp(ts_ns: i64) -> String {
    let s = rfc3339(ts_ns);
    match (s.get(..10), s.get(11..23)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => s,
    }
}

/// RFC 3339 string from an exchange → `2026-11-27 15:35:24.355 UTC`.
pub fn timestamp_str(s: &str) -> String {
    match (s.get(..10), s.get(11..23)) {
        (Some(d), Some(t)) if s.len() > 23 => format!("{d} {t} UTC"),
        _ => s.to_string(),
    }
}

/// Time of day of an RFC 3339 string: `15:35:24.355`.
pub fn clock(s: &str) -> String {
    s.get(11..23).unwrap_or(s).to_string()
}

/// A span in ns for humans: `1.26 s`, `20 ms`, `5 min`, `2 h 5 min`.
pub fn duration(ns: i64) -> String {
    let ns = ns.max(0);
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{} µs", trim_float(f / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{} ms", trim_float(f / 1e6))
    } else if ns < 60_000_000_000 {
        format!("{} s", trim_float(f / 1e9))
    } else if ns < 3_600_000_000_000 {
        let s = ns / 1_000_000_000;
        if s % 60 == 0 {
            format!("{} min", s / 60)
        } else {
            format!("{} min {} s", s / 60, s % 60)
        }
    } else if ns < 86_400_000_000_000 {
        let m = ns / 60_000_000_000;
        if m % 60 == 0 {
            format!("{} h", m / 60)
        } else {
            format!("{} h {} min", m / 60, m % 60)
        }
    } else {
        let h = ns / 3_600_000_000_000;
        if h % 24 == 0 {
            format!("{} d", h / 24)
        } else {
            format!("{} d {} h", h / 24, h % 24)
        }
    }
}

/// Latency in ms for humans: `850 µs`, `8.58 ms`, `1.2 s`.
pub fn latency(ms: f64) -> String {
    if ms < 1.0 {
        format!("{} µs", trim_float(ms * 1e3))
    } else if ms < 1000.0 {
        format!("{} ms", trim_float(ms))
    } else {
        format!("{} s", trim_float(ms / 1e3))
    }
}

/// Three significant digits, no trailing zeros.
pub fn trim_float(x: f64) -> String {
    let s = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `12.5 %`.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 || p >= 10.0 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Frame numbers as a short list: `48, 49, 50` or `48, 49, … (130 frames)`.
pub fn frame_list(frames: &[u64], total: usize) -> String {
    const SHOWN: usize = 12;
    let mut parts: Vec<String> = frames.iter().take(SHOWN).map(u64::to_string).collect();
    if total > SHOWN.min(frames.len()) {
        parts.push(format!("… ({total} frames)"));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// Wireshark display filter naming exactly these frames (`frame.number in {…}`).
pub fn frames_filter(ex: &Exchange) -> Option<String> {
    let mut f: Vec<u64> = ex
        .request_frames
        .iter()
        .chain(&ex.response_frames)
        .copied()
        .collect();
    f.sort_unstable();
    f.dedup();
    if f.is_empty() || f.len() > 32 {
        return None;
    }
    let list: Vec<String> = f.iter().map(u64::to_string).collect();
    Some(format!("frame.number in {{{}}}", list.join(" ")))
}

/// `fraud:2/serving_default` for an exchange's target; `None` without a model.
pub fn call_target(ex: &Exchange) -> Option<String> {
    let mut s = ex.model.clone()?;
    if let Some(v) = ex.version {
        s.push_str(&format!(":{v}"));
    } else if let Some(l) = &ex.version_label {
        s.push('@');
        s.push_str(l);
    }
    if let Some(sig) = &ex.signature {
        s.push('/');
        s.push_str(sig);
    }
    Some(s)
}

/// How one request tensor compares with the signature's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Sent, but the signature has no such alias.
    UnknownAlias,
    /// In the signature, not sent (and no default).
    Missing,
    DtypeMismatch,
    ShapeMismatch,
    /// Sent and expected dtype/shape both differ.
    DtypeAndShape,
    /// Nothing to compare with (signature unknown).
    Unknown,
}

impl Check {
    pub fn label(self) -> &'static str {
        match self {
            Check::Ok => "matches",
            Check::UnknownAlias => "not in signature",
            Check::Missing => "missing",
            Check::DtypeMismatch => "dtype differs",
            Check::ShapeMismatch => "shape differs",
            Check::DtypeAndShape => "dtype and shape differ",
            Check::Unknown => "no signature to compare",
        }
    }

    pub fn is_problem(self) -> bool {
        !matches!(self, Check::Ok | Check::Unknown)
    }
}

/// One row of the side-by-side comparison of a worked example.
#[derive(Debug, Clone)]
pub struct TensorRow {
    pub alias: String,
    pub sent_dtype: Option<String>,
    pub sent_shape: Option<Vec<i64>>,
    /// `10 values, tensor_content`.
    pub sent_values: Option<String>,
    pub expected_dtype: Option<String>,
    pub expected_shape: Option<Vec<i64>>,
    pub check: Check,
    /// The input the diagnosis names.
    pub at_fault: bool,
}

/// Request tensors side by side with the expected signature: every sent
/// input, then every expected input not sent.
pub fn tensor_rows(example: &Example) -> Vec<TensorRow> {
    let ex = &example.exchange;
    let diag = ex.diagnosis.as_ref();
    let fault = diag.and_then(|d| d.input.as_deref());
    let sig = example.expected.as_ref().map(|e| &e.signature);
    let mut rows = Vec::new();
    let specs = sig.map(Signature::inputs_by_alias);
    for t in &ex.inputs {
        let spec = specs.as_ref().and_then(|s| s.get(&t.name));
        // Without a signature, the diagnosis may still know what this input expects.
        let (exp_dtype, exp_shape) = match spec {
            Some(s) => (s.dtype.clone(), s.shape.clone()),
            None if sig.is_none() && Some(t.name.as_str()) == fault => (
                diag.and_then(|d| d.expected_dtype.clone()),
                diag.and_then(|d| d.expected_shape.clone()),
            ),
            None => (None, None),
        };
        let check = if sig.is_some() && spec.is_none() {
            Check::UnknownAlias
        } else if exp_dtype.is_none() && exp_shape.is_none() {
            Check::Unknown
        } else {
            let dt_bad = matches!((t.dtype, &exp_dtype), (Some(a), Some(b)) if a != b);
            let sh_bad = match (&t.shape, &exp_shape) {
                (Some(a), Some(b)) => {
                    a.len() != b.len() || a.iter().zip(b).any(|(x, y)| *y >= 0 && x != y)
                }
                _ => false,
            };
            match (dt_bad, sh_bad) {
                (true, true) => Check::DtypeAndShape,
                (true, false) => Check::DtypeMismatch,
                (false, true) => Check::ShapeMismatch,
                (false, false) => Check::Ok,
            }
        };
        let mut values = match t.values {
            Some(n) => format!("{n} {}", plural(n, "value", "values")),
            None => "? values".to_string(),
        };
        let enc = match t.encoding {
            crate::tfserving::ValueEncoding::TensorContent => "tensor_content".to_string(),
            crate::tfserving::ValueEncoding::Typed if !t.fields.is_empty() => t.fields.join("+"),
            crate::tfserving::ValueEncoding::Typed => "typed".to_string(),
            crate::tfserving::ValueEncoding::Empty => "no values".to_string(),
            crate::tfserving::ValueEncoding::Json => "JSON".to_string(),
        };
        values.push_str(", ");
        values.push_str(&enc);
        rows.push(TensorRow {
            alias: t.name.clone(),
            sent_dtype: t.dtype.map(str::to_string),
            sent_shape: t.shape.clone(),
            sent_values: Some(values),
            expected_dtype: exp_dtype,
            expected_shape: exp_shape,
            check,
            at_fault: fault == Some(t.name.as_str()),
        });
    }
    let by_name = crate::tfserving::names::ByName::new(&ex.inputs, |t| t.name.as_str());
    let sent = |alias: &str| by_name.contains(alias);
    // Only Predict sends tensors by alias; other methods send examples.
    let tensors_expected = ex.method.as_deref() == Some("Predict") || !ex.inputs.is_empty();
    if let Some(sig) = sig.filter(|_| tensors_expected) {
        for s in &sig.inputs {
            if sent(&s.alias) || example.inputs_total > ex.inputs.len() {
                continue;
            }
            let has_default = sig.defaults.contains(&s.alias);
            rows.push(TensorRow {
                alias: s.alias.clone(),
                sent_dtype: None,
                sent_shape: None,
                sent_values: None,
                expected_dtype: s.dtype.clone(),
                expected_shape: s.shape.clone(),
                check: if has_default {
                    Check::Ok
                } else {
                    Check::Missing
                },
                at_fault: fault == Some(s.alias.as_str()),
            });
        }
    } else if sig.is_none() {
        // The diagnosis names an expected input that was not sent.
        if let Some(d) = diag {
            if let Some(alias) = d.input.as_deref().filter(|a| !sent(a)) {
                if d.category == "missing_input" {
                    rows.push(TensorRow {
                        alias: alias.to_string(),
                        sent_dtype: None,
                        sent_shape: None,
                        sent_values: None,
                        expected_dtype: d.expected_dtype.clone(),
                        expected_shape: d.expected_shape.clone(),
                        check: Check::Missing,
                        at_fault: true,
                    });
                }
            }
        }
    }
    rows
}

// ---------------------------------------------------------------------------
// The command

/// Where the captures come from and what the models expect (shared by
/// `report` and `extract`).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Capture files (pcap or pcapng), read in the order given.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,

    /// A SavedModel directory whose signatures are the reference ([NAME=]DIR,
    /// version dir or model base dir). Repeatable.
    #[arg(long = "model-dir", value_name = "[NAME=]DIR")]
    pub model_dirs: Vec<String>,

    /// JSON returned by GET /v1/models/<m>[/versions/<v>]/metadata. Repeatable.
    #[arg(long = "signatures", value_name = "FILE")]
    pub signature_files: Vec<PathBuf>,

    /// TCP port of the gRPC API (repeatable).
    #[arg(long = "grpc-port", value_name = "PORT", default_values_t = [8500u16])]
    pub grpc_ports: Vec<u16>,

    /// TCP port of the REST API (repeatable).
    #[arg(long = "rest-port", value_name = "PORT", default_values_t = [8501u16])]
    pub rest_ports: Vec<u16>,
}

impl SourceArgs {
    pub fn config(&self) -> Config {
        Config {
            grpc_ports: self.grpc_ports.clone(),
            rest_ports: self.rest_ports.clone(),
            ..Config::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file (inline CSS and SVG, no scripts).
    Html,
    /// Markdown, with the plots as SVG files beside it.
    #[value(alias = "md")]
    Markdown,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Where to write the report: FILE.html or FILE.md ('-' for standard output, with --format).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub output: PathBuf,

    /// Report format [default: from the output file's extension]
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,

    /// Timeline interval, e.g. 100ms, 10s, 5m, 1h [default: automatic, up to 120 bars]
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<i64>,
}

/// `500ms`, `10s`, `5m`, `1h`, `250us`; a bare number is seconds. → ns.
pub fn parse_interval(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 10s, 5m, 1h)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1e9,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        u => {
            return Err(format!(
                "unknown unit '{u}' in '{s}' (ns, us, ms, s, m, h, d)"
            ))
        }
    };
    let ns = n * scale;
    if !(1.0..1e18).contains(&ns) {
        return Err(format!("interval '{s}' out of range"));
    }
    Ok(ns as i64)
}

/// What one run of the pipeline over capture files saw besides exchanges.
pub struct Analysis {
    pub totals: CaptureTotals,
    pub network: NetStats,
    pub protocols: ProtoStats,
    /// The signature book as it stood at the end (sources, traffic, metadata).
    pub book: SignatureBook,
}

/// Diagnoses exchanges in order, handing each to `f`.
struct Diagnosing<F> {
    engine: Engine,
    f: F,
}

impl<F: FnMut(Exchange)> ExchangeSink for Diagnosing<F> {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        let f = &mut self.f;
        self.engine.push(ex, &mut |e| {
            f(*e);
            true
        })
    }
}

/// Runs the pipeline and the root-cause engine over capture files, the way
/// `tfwire analyze` does, handing every diagnosed exchange to `on_exchange`.
pub fn analyze_files(
    captures: &[PathBuf],
    config: Config,
    book: SignatureBook,
    on_exchange: impl FnMut(Exchange),
) -> Result<Analysis, RunError> {
    if captures.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(RunError(
            "standard input ('-') can be given only once".into(),
        ));
    }
    // Open every file first so that a bad argument fails before any work.
    let mut readers = Vec::new();
    for path in captures {
        readers.push(CaptureReader::open(path).map_err(|e| RunError(e.to_string()))?);
    }
    let mut analyzer = Analyzer::new(
        config,
        Diagnosing {
            engine: Engine::new(book),
            f: on_exchange,
        },
    );
    let mut totals = CaptureTotals::default();
    let mut frame = 1u64;
    let (mut first_ts, mut last_ts) = (None::<i64>, None::<i64>);
    for mut reader in readers {
        frame = reader.for_each_packet(frame, |p, _| {
            analyzer.packet(p);
            if p.ts_ns != 0 {
                first_ts = Some(first_ts.map_or(p.ts_ns, |f| f.min(p.ts_ns)));
                last_ts = Some(last_ts.map_or(p.ts_ns, |l| l.max(p.ts_ns)));
            }
        });
        if let Some(c) = &reader.stats().cut_short {
            eprintln!(
                "tfwire: warning: {}: {}",
                escape_for_terminal(reader.name()),
                escape_for_terminal(c)
            );
        }
        totals.add(reader.name(), reader.stats());
    }
    analyzer.finish();
    totals.first_packet = first_ts.map(rfc3339);
    totals.last_packet = last_ts.map(rfc3339);
    let network = analyzer.net_stats();
    let protocols = analyzer.proto_stats();
    let Diagnosing { mut engine, mut f } = analyzer.into_sink();
    engine.finish(&mut |e| {
        f(*e);
        true
    });
    Ok(Analysis {
        totals,
        network,
        protocols,
        book: engine.book,
    })
}

/// Builds the postmortem of capture files.
pub fn postmortem(source: &SourceArgs, interval_ns: Option<i64>) -> Result<Postmortem, RunError> {
    let book = crate::load_book(&source.model_dirs, &source.signature_files)?;
    let mut pm = Postmortem::new(interval_ns);
    let a = analyze_files(&source.captures, source.config(), book, |ex| pm.add(&ex))?;
    pm.finish(&a.book, a.totals, a.network, a.protocols);
    Ok(pm)
}

/// Sibling file of the report for one plot: `report.md` → `report-timeline.svg`.
fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    output.with_file_name(format!("{stem}-{suffix}.svg"))
}

/// `tfwire report`: writes the postmortem as HTML or Markdown; returns the
/// exit status (1 when failures were found, as `analyze`).
pub fn run_report(args: ReportArgs) -> Result<u8, RunError> {
    let to_stdout = args.output.as_os_str() == "-";
    let format = match args.format {
        Some(f) => f,
        None => match args
            .output
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("html" | "htm") => ReportFormat::Html,
            Some("md" | "markdown") => ReportFormat::Markdown,
            _ => {
                return Err(RunError(format!(
                    "{}: cannot tell the report format from the file name; use .html or .md, or --format",
                    args.output.display()
                )))
            }
        },
    };
    let pm = postmortem(&args.source, args.interval)?;
    let text = match format {
        ReportFormat::Html => super::html::render(&pm),
        ReportFormat::Markdown => {
            let mut images = super::markdown::Images::default();
            if !to_stdout {
                let plots = [
                    ("timeline", super::plot::timeline_svg(&pm.timeline)),
                    ("latency", super::plot::latency_svg(&pm.latencies)),
                ];
                for (name, svg) in plots {
                    let Some(svg) = svg else { continue };
                    let path = sibling(&args.output, name);
                    std::fs::write(&path, svg)
                        .map_err(|e| RunError(format!("{}: {e}", path.display())))?;
                    let file = path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match name {
                        "timeline" => images.timeline = Some(file),
                        _ => images.latency = Some(file),
                    }
                }
            }
            super::markdown::render(&pm, &images)
        }
    };
    let written = if to_stdout {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|_| out.flush())
    } else {
        std::fs::write(&args.output, text.as_bytes())
    };
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            return Err(RunError(format!("{}: {e}", args.output.display())));
        }
        Ok(()) => {}
    }
    if !to_stdout {
        eprintln!(
            "tfwire: wrote {} ({} {}, {} failed, {} {})",
            escape_for_terminal(&args.output.display().to_string()),
            pm.summary.exchanges,
            plural(pm.summary.exchanges, "exchange", "exchanges"),
            pm.summary.failures,
            pm.summary.root_causes.len(),
            plural(pm.summary.root_causes.len(), "root cause", "root causes")
        );
    }
    Ok(if pm.summary.failures > 0 {
        EXIT_FAILURES
    } else {
        EXIT_CLEAN
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_interval_merges_buckets_exactly() {
        let mut t = Timeline::new(None);
        // 2.5 s of one request per ms: 2500 fine buckets → 100 ms bars.
        for i in 0..2500i64 {
            let failed = (i % 10 == 0).then_some("dtype_mismatch");
            t.add(Some(1_000_000_000_000 + i * 1_000_000), failed);
        }
        assert_eq!(t.width_ns(), 100_000_000);
        let bars = t.bars();
        assert_eq!(bars.len(), 25);
        assert_eq!(bars.iter().map(|(_, b)| b.total()).sum::<u64>(), 2500);
        assert_eq!(bars.iter().map(|(_, b)| b.failures()).sum::<u64>(), 250);
        assert!(bars.windows(2).all(|w| w[1].0 - w[0].0 == 100_000_000));
    }

    #[test]
    fn fixed_interval_is_kept_and_widened_only_past_the_cap() {
        let mut t = Timeline::new(Some(1_000_000_000));
        t.add(Some(0), None);
        t.add(Some(5_500_000_000), Some("other"));
        assert_eq!(t.width_ns(), 1_000_000_000);
        assert_eq!(t.bars().len(), 6);
        assert!(t.widened_from.is_none());
        t.add(Some(10_000 * 1_000_000_000), None);
        assert!(t.bars().len() as i64 <= MAX_BARS);
        assert_eq!(t.widened_from, Some(1_000_000_000));
        t.add(None, None);
        assert_eq!(t.undated, 1);
    }

    #[test]
    fn latency_quantiles_are_close() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.add(i as f64 / 10.0, i % 7 != 0);
        }
        let p50 = h.quantile(0.5).expect("p50");
        let p99 = h.quantile(0.99).expect("p99");
        assert!((p50 / 50.0 - 1.0).abs() < 0.07, "{p50}");
        assert!((p99 / 99.0 - 1.0).abs() < 0.07, "{p99}");
        assert_eq!(h.quantile(1.0), Some(100.0));
        assert_eq!(h.count, 1000);
        assert_eq!(LatencyHistogram::bucket(0.0), 0);
        assert_eq!(LatencyHistogram::bucket(1e9), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn breakdown_is_capped() {
        let mut b = Breakdown::default();
        for i in 0..(MAX_BREAKDOWN_ROWS + 10) {
            b.add(&format!("m{i}"), i % 2 == 0);
        }
        b.add("m0", true);
        let rows = b.rows();
        assert_eq!(rows.len(), MAX_BREAKDOWN_ROWS + 1);
        assert_eq!(rows.last().map(|r| r.0), Some(OTHER_ROW));
        assert_eq!(
            rows[0],
            (
                "m0",
                Rate {
                    exchanges: 2,
                    failures: 2
                }
            )
        );
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("100ms"), Ok(100_000_000));
        assert_eq!(parse_interval("10s"), Ok(10_000_000_000));
        assert_eq!(parse_interval("2"), Ok(2_000_000_000));
        assert_eq!(parse_interval("5m"), Ok(300_000_000_000));
        assert_eq!(parse_interval("1.5h"), Ok(5_400_000_000_000));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("ten").is_err());
        assert!(parse_interval("10 parsecs").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(duration(1_260_000_000), "1.26 s");
        assert_eq!(duration(20_000_000), "20 ms");
        assert_eq!(duration(300_000_000_000), "5 min");
        assert_eq!(duration(7_500_000_000_000), "2 h 5 min");
        assert_eq!(latency(0.85), "850 µs");
        assert_eq!(latency(8.582), "8.58 ms");
        assert_eq!(percent(0.5), "50 %");
        assert_eq!(percent(0.0123), "1.2 %");
        assert_eq!(
            visible("a\u{1b}[31m\u{202e}b\nc", false),
            "a\\u{1b}[31m\\u{202e}b\\nc"
        );
        assert_eq!(visible("x\n\ty", true), "x\n\ty");
        assert_eq!(
            timestamp(1_795_788_184_123_456_789),
            "2026-11-27 14:03:04.123 UTC"
        );
        assert_eq!(frame_list(&[1, 2], 2), "1, 2");
    }
}
