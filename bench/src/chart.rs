//! The latency chart: one panel per cell, the distribution of acquire latency
//! of each system, as percentile (y) against latency (x). Both axes are
//! logarithmic, the y axis in the tail (each step up is ten times rarer:
//! 0.5, 0.9, 0.99, 0.999), so tails that differ a hundredfold are both
//! visible. Plain SVG, written by hand.

use std::fmt::Write as _;

use crate::report::Report;

/// Panel size and layout (px).
const PANEL_W: f64 = 560.0;
const PANEL_H: f64 = 350.0;
const COLUMNS: usize = 2;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 76.0;
/// The y axis ends at this many nines (p99.9).
const NINES: f64 = 3.0;
/// Points drawn per curve at most.
const POINTS: usize = 400;

/// A colour per system, the same in every panel.
fn colour(system: &str) -> &'static str {
    match system {
        "globallock" => "#d62728",
        "etcd-1" => "#1f77b4",
        "etcd-3" => "#2ca02c",
        "redlock" => "#9467bd",
        "etcd-stretched" => "#ff7f0e",
        _ => "#7f7f7f",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn duration_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// The chart for `report`, as an SVG document.
pub fn svg(report: &Report) -> String {
    let cells = &report.cells;
    let rows = cells.len().div_ceil(COLUMNS).max(1);
    let width = PANEL_W * COLUMNS as f64;
    let height = PANEL_H * rows as f64 + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="12" y="24" font-size="15" font-weight="bold">Acquire latency by percentile (both axes logarithmic) — {} build{}</text>"##,
        report.build,
        if report.smoke { ", smoke run" } else { "" }
    );
    for (i, cell) in cells.iter().enumerate() {
        let x0 = PANEL_W * (i % COLUMNS) as f64;
        let y0 = 40.0 + PANEL_H * (i / COLUMNS) as f64;
        panel(&mut out, cell, x0, y0);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, cell: &crate::report::CellReport, x0: f64, y0: f64) {
    let plot_w = PANEL_W - LEFT - RIGHT;
    let plot_h = PANEL_H - TOP - BOTTOM;
    let (px, py) = (x0 + LEFT, y0 + TOP);
    // The decades the samples span (at least 0.1 ms to 10 ms).
    let all = cell
        .systems
        .iter()
        .flat_map(|m| m.samples_us.iter().copied());
    let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_ms = if lo == u64::MAX {
        0.1
    } else {
        (lo.max(1) as f64) / 1000.0
    };
    let hi_ms = (hi as f64 / 1000.0).max(lo_ms);
    let first = lo_ms.log10().floor().min(-1.0);
    let last = hi_ms.log10().ceil().max(first + 2.0);
    let x_of = |ms: f64| px + (ms.max(1e-3).log10() - first) / (last - first) * plot_w;
    // Percentile p sits at -log10(1 - p) nines: 0.9 at 1, 0.99 at 2.
    let y_of = |fraction: f64| {
        let nines = (-(1.0 - fraction).max(1e-9).log10()).clamp(0.0, NINES);
        py + plot_h * (1.0 - nines / NINES)
    };

    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"##,
        x0 + 12.0,
        y0 + 18.0,
        escape(&cell.cell)
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
        x0 + 12.0,
        y0 + 32.0,
        escape(&truncate(&cell.description, 90))
    );
    let _ = writeln!(
        out,
        r##"<rect x="{px}" y="{py}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
    );
    // Grid: every decade on x; p0, p50, p90, p99, p99.9 on y.
    let mut decade = first;
    while decade <= last {
        let x = x_of(10f64.powf(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{}" stroke="#e3e3e3"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            py + plot_h,
            py + plot_h + 14.0,
            duration_label(10f64.powf(decade))
        );
        decade += 1.0;
    }
    for (fraction, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
    ] {
        let y = y_of(fraction);
        let _ = writeln!(
            out,
            r##"<line x1="{px}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            px + plot_w,
            px - 4.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">acquire latency</text>"##,
        px + plot_w / 2.0,
        py + plot_h + 30.0
    );
    for (k, m) in cell.systems.iter().enumerate() {
        let samples = &m.samples_us;
        let colour = colour(&m.system);
        if !samples.is_empty() {
            let n = samples.len();
            let steps = POINTS.min(n);
            let mut points = String::new();
            for s in 0..=steps {
                let index = (s * (n - 1)) / steps.max(1);
                let ms = samples[index] as f64 / 1000.0;
                // The sample's mid-rank: the slowest of n stays finite.
                let fraction = (index as f64 + 0.5) / n as f64;
                let _ = write!(points, "{:.1},{:.1} ", x_of(ms), y_of(fraction));
            }
            let _ = writeln!(
                out,
                r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.8"/>"##,
                points.trim_end()
            );
        }
        // The legend, under the axis, two entries per row.
        let lx = px + (plot_w / 2.0) * (k % 2) as f64;
        let ly = py + plot_h + 46.0 + 14.0 * (k / 2) as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}: p50 {:.2} ms, n = {}</text>"##,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            escape(&m.system),
            m.acquire_ms.p50,
            samples.len()
        );
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
