//! The report's plots, drawn as SVG by hand: no scripts, no fonts or images
//! to fetch, so a report opens offline and the same file embeds in HTML or
//! sits beside a Markdown report. Hover titles (`<title>`) give exact counts.

use std::fmt::Write as _;

use super::html::escape_html as esc;
use super::plural;
use super::postmortem::{self, Bucket, Latencies, Timeline, LATENCY_BUCKETS, UNDIAGNOSED};

/// Background of the timeline's plot area. No other element of a report has
/// this colour, so a screenshot test can find the plot by it.
pub const TIMELINE_BACKGROUND: (u8, u8, u8) = (0xf5, 0xf7, 0xfa);
/// Background of the latency panels (also unique to them).
pub const LATENCY_BACKGROUND: (u8, u8, u8) = (0xf4, 0xf9, 0xf4);
/// Successful requests in the timeline.
pub const OK_COLOR: &str = "#c3ccd6";
/// Latency histograms: successful and failed exchanges.
pub const LATENCY_OK_COLOR: &str = "#4e79a7";
pub const LATENCY_FAILED_COLOR: &str = "#e15759";

const WIDTH: f64 = 1100.0;
const FONT: &str = "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
const GRID: &str = "#dde3ea";
const AXIS: &str = "#5b6670";
const TEXT: &str = "#222a33";

/// The colour of a failure category, stable across reports.
pub fn category_color(category: &str) -> &'static str {
    match category {
        "dtype_mismatch" => "#d62728",
        "shape_mismatch" => "#ff7f0e",
        "missing_batch_dim" => "#bcbd22",
        "batch_size_mismatch" => "#8c564b",
        "unknown_input_alias" => "#9467bd",
        "missing_input" => "#e377c2",
        "unknown_output_alias" => "#b39ddb",
        "unknown_signature" => "#17becf",
        "wrong_signature_method" => "#2ca02c",
        "model_not_found" => "#1f77b4",
        "version_not_found" => "#6baed6",
        "malformed_tensor" => "#ff9896",
        "malformed_json" => "#98df8a",
        "wrong_format" => "#ffbb78",
        "ragged_instances" => "#c7c76b",
        "protocol_mismatch" => "#393b79",
        "message_too_large" => "#843c39",
        "server_error" => "#637939",
        "other" => "#66c2cf",
        UNDIAGNOSED => "#525252",
        _ => "#8a8a8a",
    }
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A round number ≥ `x` (1, 2 or 5 × 10^k) and a tick step for ~4 ticks.
fn nice_axis(max: u64) -> (u64, u64) {
    let max = max.max(1);
    let mut step = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let s = step.saturating_mul(m);
            if s.saturating_mul(4) >= max {
                let top = max.div_ceil(s).saturating_mul(s);
                return (top, s);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Tick steps for the time axis.
const TICK_STEPS_NS: &[i64] = &[
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    15_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
    600_000_000_000,
    900_000_000_000,
    1_800_000_000_000,
    3_600_000_000_000,
    7_200_000_000_000,
    10_800_000_000_000,
    21_600_000_000_000,
    43_200_000_000_000,
    86_400_000_000_000,
    172_800_000_000_000,
    604_800_000_000_000,
];

/// Clock label of a tick, as precise as the step needs.
fn tick_label(ts_ns: i64, step_ns: i64, multi_day: bool) -> String {
    let s = crate::tfserving::exchange::rfc3339(ts_ns);
    let date = s.get(5..10).unwrap_or("");
    let time = if step_ns < 1_000_000_000 {
        s.get(11..23)
    } else if step_ns < 60_000_000_000 {
        s.get(11..19)
    } else {
        s.get(11..16)
    }
    .unwrap_or("");
    if multi_day || step_ns >= 86_400_000_000_000 {
        format!("{date} {time}")
    } else {
        time.to_string()
    }
}

/// Legend entries laid out in rows; returns the SVG and its height.
fn legend(items: &[(String, String)], x0: f64, y0: f64, width: f64) -> (String, f64) {
    let mut s = String::new();
    let (mut x, mut y) = (x0, y0);
    for (color, label) in items {
        let w = 22.0 + 6.6 * label.chars().count() as f64 + 16.0;
        if x + w > x0 + width && x > x0 {
            x = x0;
            y += 20.0;
        }
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 10.0,
            x + 17.0,
            y,
            esc(label)
        );
        x += w;
    }
    (s, y - y0 + 20.0)
}

fn svg_open(height: f64, label: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{}" font-family="{FONT}" font-size="12" fill="{TEXT}"><rect width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>"##,
        esc(label)
    )
}

/// Requests and failures per interval, failures stacked by category under
/// the successful requests. `None` when no exchange has a timestamp.
pub fn timeline_svg(t: &Timeline) -> Option<String> {
    let bars = t.bars();
    if bars.is_empty() {
        return None;
    }
    let width_ns = t.width_ns();
    let categories = t.categories();
    let (left, right, top, plot_h) = (58.0, 16.0, 34.0, 230.0);
    let plot_w = WIDTH - left - right;
    let mut items: Vec<(String, String)> = vec![(OK_COLOR.to_string(), "successful".into())];
    items.extend(
        categories
            .iter()
            .map(|c| (category_color(c).to_string(), (*c).to_string())),
    );
    let (legend_svg, legend_h) = legend(&items, left, top + plot_h + 62.0, plot_w);
    let height = top + plot_h + 52.0 + legend_h;
    let title = format!(
        "Requests per {} ({}), failures by category",
        postmortem::duration(width_ns),
        if t.is_automatic() {
            "automatic interval"
        } else {
            "interval"
        }
    );
    let mut s = svg_open(height, &title);
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="13" font-weight="600">{}</text>"#,
        esc(&title)
    );
    let _ = write!(
        s,
        r#"<rect class="plot-area" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="{}"/>"#,
        hex(TIMELINE_BACKGROUND)
    );
    let max = bars.iter().map(|(_, b)| b.total()).max().unwrap_or(1);
    let (ymax, ystep) = nice_axis(max);
    let y_of = |v: u64| top + plot_h - plot_h * v as f64 / ymax as f64;
    // Horizontal grid and y labels.
    let mut v = 0;
    while v <= ymax {
        let y = y_of(v);
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{AXIS}">{v}</text>"#,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
        v += ystep;
    }
    let _ = write!(
        s,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" fill="{AXIS}">requests</text>"#,
        top + plot_h / 2.0
    );
    // Bars.
    let n = bars.len() as f64;
    let slot = plot_w / n;
    let bar_w = (slot * 0.84).max(1.0).min(slot);
    for (i, (start, b)) in bars.iter().enumerate() {
        if b.total() == 0 {
            continue;
        }
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let _ = write!(
            s,
            "<g><title>{}</title>",
            esc(&bar_title(*start, width_ns, b))
        );
        let mut acc = 0u64;
        let mut seg = |count: u64, color: &str, s: &mut String| {
            if count == 0 {
                return;
            }
            let (y1, y0) = (y_of(acc + count), y_of(acc));
            let _ = write!(
                s,
                r#"<rect x="{x:.2}" y="{y1:.2}" width="{bar_w:.2}" height="{:.2}" fill="{color}"/>"#,
                (y0 - y1).max(0.5)
            );
            acc += count;
        };
        for c in &categories {
            seg(
                b.failed.get(c).copied().unwrap_or(0),
                category_color(c),
                &mut s,
            );
        }
        seg(b.ok, OK_COLOR, &mut s);
        s.push_str("</g>");
    }
    // Time axis.
    let t0 = bars.first().map_or(0, |b| b.0);
    let t1 = bars.last().map_or(0, |b| b.0).saturating_add(width_ns);
    let span = t1.saturating_sub(t0).max(1);
    let step = TICK_STEPS_NS
        .iter()
        .copied()
        .find(|&st| span / st <= 8)
        .unwrap_or_else(|| {
            let day = 86_400_000_000_000i64;
            (span / 8 / day + 1) * day
        });
    let multi_day =
        t0.div_euclid(86_400_000_000_000) != t1.saturating_sub(1).div_euclid(86_400_000_000_000);
    let x_of = |ts: i64| left + plot_w * (ts as f64 - t0 as f64) / span as f64;
    let axis_y = top + plot_h;
    let _ = write!(
        s,
        r#"<line x1="{left}" x2="{:.1}" y1="{axis_y}" y2="{axis_y}" stroke="{AXIS}"/>"#,
        left + plot_w
    );
    let mut tick = t0.div_euclid(step).saturating_mul(step);
    if tick < t0 {
        tick = tick.saturating_add(step);
    }
    // Bounded: timestamps near the ends of the i64 range saturate.
    for _ in 0..64 {
        if tick > t1 {
            break;
        }
        let x = x_of(tick);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{axis_y}" y2="{:.1}" stroke="{AXIS}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
            axis_y + 5.0,
            axis_y + 18.0,
            esc(&tick_label(tick, step, multi_day))
        );
        if tick == i64::MAX {
            break;
        }
        tick = tick.saturating_add(step);
    }
    let day = crate::tfserving::exchange::rfc3339(t0);
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{AXIS}">time (UTC, {})</text>"#,
        left + plot_w / 2.0,
        axis_y + 36.0,
        esc(day.get(..10).unwrap_or(""))
    );
    s.push_str(&legend_svg);
    s.push_str("</svg>");
    Some(s)
}

fn bar_title(start: i64, width: i64, b: &Bucket) -> String {
    let mut t = format!(
        "{} + {}: {} {}, {} failed",
        postmortem::timestamp(start),
        postmortem::duration(width),
        b.total(),
        plural(b.total(), "request", "requests"),
        b.failures()
    );
    for (c, n) in &b.failed {
        let _ = write!(t, "\n  {c}: {n}");
    }
    t
}

/// Decade tick labels of the latency axis (ms).
fn latency_tick(ms: f64) -> String {
    if ms < 1.0 {
        format!("{} µs", (ms * 1000.0).round())
    } else if ms < 1000.0 {
        format!("{} ms", ms.round())
    } else {
        format!("{} s", (ms / 1000.0).round())
    }
}

/// One log-scale histogram per method (successful and failed exchanges
/// stacked), with p50 and p99 marked. `None` when no latency was measured.
pub fn latency_svg(l: &Latencies) -> Option<String> {
    let methods = l.methods();
    if methods.is_empty() {
        return None;
    }
    let lo = methods
        .iter()
        .map(|(_, h)| h.min_ms)
        .fold(f64::INFINITY, f64::min)
        .max(1e-4);
    let hi = methods
        .iter()
        .map(|(_, h)| h.max_ms)
        .fold(0.0, f64::max)
        .max(lo);
    let d0 = lo.log10().floor();
    let d1 = hi.log10().ceil().max(d0 + 1.0);
    let (left, right, top) = (150.0, 16.0, 34.0);
    let plot_w = WIDTH - left - right;
    let (panel_h, gap) = (64.0, 14.0);
    let x_of = |ms: f64| {
        let v = (ms.max(1e-9).log10() - d0) / (d1 - d0);
        left + plot_w * v.clamp(0.0, 1.0)
    };
    let rows = methods.len() as f64;
    let axis_y = top + rows * (panel_h + gap) - gap;
    let items = vec![
        (LATENCY_OK_COLOR.to_string(), "successful".to_string()),
        (LATENCY_FAILED_COLOR.to_string(), "failed".to_string()),
        (TEXT.to_string(), "p50 (solid) and p99 (dashed)".to_string()),
    ];
    let (legend_svg, legend_h) = legend(&items, left, axis_y + 48.0, plot_w);
    let height = axis_y + 38.0 + legend_h;
    let title = "Latency per method (request start to response end, log scale)";
    let mut s = svg_open(height, title);
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="13" font-weight="600">{}</text>"#,
        esc(title)
    );
    for (row, (method, h)) in methods.iter().enumerate() {
        let y0 = top + row as f64 * (panel_h + gap);
        let _ = write!(
            s,
            r#"<rect class="plot-area" x="{left}" y="{y0:.1}" width="{plot_w}" height="{panel_h}" fill="{}"/>"#,
            hex(LATENCY_BACKGROUND)
        );
        // Decade grid lines.
        let mut d = d0;
        while d <= d1 {
            let x = x_of(10f64.powf(d));
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{y0:.1}" y2="{:.1}" stroke="{GRID}"/>"#,
                y0 + panel_h
            );
            d += 1.0;
        }
        let peak = (0..LATENCY_BUCKETS)
            .map(|i| h.ok[i] + h.failed[i])
            .max()
            .unwrap_or(1)
            .max(1);
        let y_of = |v: u64| y0 + panel_h - (panel_h - 6.0) * v as f64 / peak as f64;
        for i in 0..LATENCY_BUCKETS {
            let (ok, failed) = (h.ok[i], h.failed[i]);
            if ok + failed == 0 {
                continue;
            }
            let (b_lo, b_hi) = h.bounds(i);
            let (x0, x1) = (x_of(b_lo), x_of(b_hi));
            let w = (x1 - x0).max(2.0);
            let _ = write!(
                s,
                "<g><title>{}</title>",
                esc(&format!(
                    "{method}: {} – {}: {} successful, {} failed",
                    postmortem::latency(b_lo),
                    postmortem::latency(b_hi),
                    ok,
                    failed
                ))
            );
            let mut acc = 0;
            for (count, color) in [(failed, LATENCY_FAILED_COLOR), (ok, LATENCY_OK_COLOR)] {
                if count == 0 {
                    continue;
                }
                let (ya, yb) = (y_of(acc + count), y_of(acc));
                let _ = write!(
                    s,
                    r#"<rect x="{x0:.2}" y="{ya:.2}" width="{w:.2}" height="{:.2}" fill="{color}"/>"#,
                    (yb - ya).max(0.5)
                );
                acc += count;
            }
            s.push_str("</g>");
        }
        for (q, dash) in [(0.5, ""), (0.99, r#" stroke-dasharray="4 3""#)] {
            if let Some(v) = h.quantile(q) {
                let x = x_of(v);
                let _ = write!(
                    s,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{y0:.1}" y2="{:.1}" stroke="{TEXT}" stroke-width="1.5"{dash}/>"#,
                    y0 + panel_h
                );
            }
        }
        let label = postmortem::visible(method, false);
        let label: String = if label.chars().count() > 20 {
            label.chars().take(19).chain(['…']).collect()
        } else {
            label
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-weight="600">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{AXIS}">n={} p50 {}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{AXIS}">p99 {}</text>"#,
            left - 8.0,
            y0 + 16.0,
            esc(&label),
            left - 8.0,
            y0 + 34.0,
            h.count,
            esc(&h.quantile(0.5).map(postmortem::latency).unwrap_or_default()),
            left - 8.0,
            y0 + 50.0,
            esc(&h
                .quantile(0.99)
                .map(postmortem::latency)
                .unwrap_or_default()),
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{AXIS}" font-size="10">{peak}</text>"#,
            left + plot_w - 4.0,
            y0 + 12.0
        );
    }
    let _ = write!(
        s,
        r#"<line x1="{left}" x2="{:.1}" y1="{axis_y:.1}" y2="{axis_y:.1}" stroke="{AXIS}"/>"#,
        left + plot_w
    );
    let mut d = d0;
    while d <= d1 {
        let ms = 10f64.powf(d);
        let x = x_of(ms);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{axis_y:.1}" y2="{:.1}" stroke="{AXIS}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="{AXIS}">{}</text>"#,
            axis_y + 5.0,
            axis_y + 18.0,
            esc(&latency_tick(ms))
        );
        d += 1.0;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{AXIS}">latency (count per bucket; each panel scaled to its peak, shown top right)</text>"#,
        left + plot_w / 2.0,
        axis_y + 34.0
    );
    s.push_str(&legend_svg);
    s.push_str("</svg>");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(0), (1, 1));
        assert_eq!(nice_axis(7), (8, 2));
        assert_eq!(nice_axis(18), (20, 5));
        assert_eq!(nice_axis(230), (300, 100));
    }

    #[test]
    fn timeline_svg_is_well_formed_and_escaped() {
        let mut t = Timeline::new(Some(1_000_000_000));
        t.add(Some(1_000_000_000), None);
        t.add(Some(3_500_000_000), Some("dtype_mismatch"));
        t.add(Some(3_600_000_000), Some("<script>"));
        let s = timeline_svg(&t).expect("svg");
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.ends_with("</svg>"));
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;"));
        assert!(s.contains(category_color("dtype_mismatch")));
        // Three one-second bars (1 s, 2 s empty, 3 s).
        assert_eq!(t.bars().len(), 3);
    }

    /// Timestamps come from the capture: the extremes must not overflow
    /// or loop (pcapng if_tsoffset can push them anywhere).
    #[test]
    fn extreme_timestamps_render() {
        for fixed in [None, Some(1_000_000_000)] {
            let mut t = Timeline::new(fixed);
            t.add(Some(i64::MIN), Some("other"));
            t.add(Some(0), None);
            t.add(Some(i64::MAX), None);
            assert!(t.bars().len() <= 2000);
            let s = timeline_svg(&t).expect("svg");
            assert!(s.ends_with("</svg>"));
        }
        let mut t = Timeline::new(None);
        t.add(Some(i64::MAX - 5), None);
        t.add(Some(i64::MAX), Some("other"));
        assert!(timeline_svg(&t).is_some());
    }

    #[test]
    fn latency_svg_has_one_panel_per_method() {
        let mut l = Latencies::default();
        for i in 0..50 {
            l.add("Predict", Some(1.0 + i as f64), i % 5 != 0);
        }
        l.add("GetModelStatus", Some(0.2), true);
        l.add("Predict", None, false);
        let s = latency_svg(&l).expect("svg");
        assert_eq!(s.matches(r#"class="plot-area""#).count(), 2);
        assert!(s.contains("Predict"));
        assert_eq!(l.unmeasured, 1);
        assert!(latency_svg(&Latencies::default()).is_none());
    }
}
