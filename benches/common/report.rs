//! Outputs: `name: value` lines, HdrHistogram percentile distributions (`.hgrm`, the format of
//! Java's `outputPercentileDistribution`, values in milliseconds) and an SVG plot of latency
//! by percentile on the usual 1/(1-p) axis, one line per configuration.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

/// Latency histograms record nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Nanoseconds to microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Prints `PREFIX.us_p50`, `us_p99`, `us_p999` (and `us_p9999` with `deep`) and `us_max`.
pub fn print_latency(prefix: &str, h: &Histogram<u64>, deep: bool) {
    println!("{prefix}.us_p50: {:.1}", us(h.value_at_quantile(0.50)));
    println!("{prefix}.us_p99: {:.1}", us(h.value_at_quantile(0.99)));
    println!("{prefix}.us_p999: {:.1}", us(h.value_at_quantile(0.999)));
    if deep {
        println!("{prefix}.us_p9999: {:.1}", us(h.value_at_quantile(0.9999)));
    }
    println!("{prefix}.us_max: {:.1}", us(h.max()));
}

/// Writes `h` (ns) as a percentile distribution in milliseconds.
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) {
    const SCALE: f64 = 1_000_000.0;
    let mut out = String::new();
    out.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    );
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), 2048);
    std::fs::write(path, out).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Writes an SVG of latency (log scale) by percentile (x = log10 of 1/(1-p)), one line per
/// named histogram (ns).
pub fn write_svg(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) {
    const W: f64 = 820.0;
    const H: f64 = 440.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 260.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    // Points: (log10 1/(1-q), log10 latency us), q < 1 and backed by at least one sample.
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            let n = h.len().max(1) as f64;
            let mut pts: Vec<(f64, f64)> = h
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| {
                    let x = (1.0 / (1.0 - v.quantile_iterated_to())).min(n).log10();
                    (x, us(v.value_iterated_to().max(1)).log10())
                })
                .collect();
            pts.push((n.log10(), us(h.max().max(1)).log10()));
            pts
        })
        .collect();
    let x_max = lines.iter().flatten().map(|p| p.0).fold(1.0f64, f64::max).ceil().clamp(1.0, 6.0);
    let y_lo = lines.iter().flatten().map(|p| p.1).fold(f64::MAX, f64::min).floor();
    let y_hi = lines.iter().flatten().map(|p| p.1).fold(f64::MIN, f64::max).ceil();
    let (y_lo, y_hi) = if y_lo >= y_hi { (y_lo, y_lo + 1.0) } else { (y_lo, y_hi) };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x.min(x_max) / x_max * pw;
    let sy = |y: f64| TOP + ph - (y - y_lo) / (y_hi - y_lo) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="13">{}</text>"#,
        LEFT + pw / 2.0,
        xml(title)
    );
    // Grid and axes.
    let pct = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    let frame = Frame { left: LEFT, top: TOP, width: pw, height: ph, image_height: H };
    for (i, label) in pct.iter().enumerate().take(x_max as usize + 1) {
        frame.x_tick(&mut s, sx(i as f64), label);
    }
    for d in y_lo as i64..=y_hi as i64 {
        let y = sy(d as f64);
        let label = match d {
            ..=-1 => format!("{} ns", 10f64.powi(d as i32 + 3)),
            0..=2 => format!("{} µs", 10i64.pow(d as u32)),
            3..=5 => format!("{} ms", 10i64.pow(d as u32 - 3)),
            _ => format!("{} s", 10i64.pow(d as u32 - 6)),
        };
        frame.y_tick(&mut s, y, &label, "#000");
    }
    frame.draw(&mut s, "percentile (1/(1-p) axis)", "latency", "#000");
    for (i, ((name, _), pts)) in series.iter().zip(&lines).enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Past ten series the colours repeat, dashed.
        let dash = if i >= COLORS.len() { r#" stroke-dasharray="6 3""# } else { "" };
        let path: Vec<String> =
            pts.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + i as f64 * 16.0;
        let lx = LEFT + pw + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 18.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 22.0, ly + 4.0, xml(name));
    }
    s.push_str("</svg>\n");
    std::fs::write(path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes `NAME.hgrm` for each series and `plot.svg` with all of them into `dir`.
pub fn write_all(dir: &Path, title: &str, series: &[(String, Histogram<u64>)]) {
    for (name, h) in series {
        write_hgrm(&dir.join(format!("{name}.hgrm")), h);
    }
    let refs: Vec<(String, &Histogram<u64>)> = series.iter().map(|(n, h)| (n.clone(), h)).collect();
    write_svg(&dir.join("latency.svg"), title, &refs);
    println!("bench.results: {}", dir.display());
}

/// A plot's frame in an SVG: the box and the titles of its axes.
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    /// Height of the whole image (the x title sits just above its bottom).
    pub image_height: f64,
}

impl Frame {
    /// A vertical grid line at `x` with its label under the plot.
    pub fn x_tick(&self, s: &mut String, x: f64, label: &str) {
        let (top, bottom) = (self.top, self.top + self.height);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            bottom + 15.0
        );
    }

    /// A horizontal grid line at `y` with its label left of the plot.
    pub fn y_tick(&self, s: &mut String, y: f64, label: &str, colour: &str) {
        let (left, right) = (self.left, self.left + self.width);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{label}</text>"#,
            left - 5.0,
            y + 4.0
        );
    }

    pub fn draw(&self, s: &mut String, x_title: &str, y_title: &str, y_colour: &str) {
        let Frame { left, top, width, height, image_height } = *self;
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x_title}</text>"#,
            left + width / 2.0,
            image_height - 10.0
        );
        let middle = top + height / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="15" y="{middle:.1}" text-anchor="middle" fill="{y_colour}" transform="rotate(-90 15 {middle:.1})">{y_title}</text>"#
        );
    }
}
