//! The report's pictures, drawn with plotters into SVG files next to the report
//! (`docs/img/` for `docs/benchmarks.md`):
//!
//! - [`LATENCY_SPECTRUM`]: the latency percentile spectrum (HdrHistogram style: the x axis is
//!   1 / (1 − percentile) on a log scale, so p50, p90, p99, p99.9 and p99.99 are evenly
//!   spaced) of the ingress at half load and of end to end at 50% and 80% load, pooled over
//!   the runs;
//! - [`APPLY_RATES`]: the apply rate of the synthetic consumer, its replay, each real
//!   consumer and the Python peer (medians), beside the raw consume and raw upsert ceilings.
//!
//! Text is drawn with plotters' built-in font metrics (no system fonts needed); the SVG names
//! a sans-serif font and the viewer renders it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Figures;

/// File name of the latency spectrum.
pub const LATENCY_SPECTRUM: &str = "latency-spectrum.svg";
/// File name of the apply-rate bars.
pub const APPLY_RATES: &str = "apply-rates.svg";

/// The latency series of the spectrum: figure key and legend label.
pub const LATENCY_SERIES: [(&str, &str); 3] = [
    ("ingress_50", "ingress alone, 50% of its maximum"),
    ("e2e_50", "end to end (POST → row visible), 50% load"),
    ("e2e_80", "end to end (POST → row visible), 80% load"),
];

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// Draw both pictures into `dir` (created if missing); returns their paths.
pub fn draw(dir: &Path, f: &Figures) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    let spectrum = dir.join(LATENCY_SPECTRUM);
    latency_spectrum(&spectrum, f).with_context(|| format!("Failed to draw {}", spectrum.display()))?;
    let rates = dir.join(APPLY_RATES);
    apply_rates(&rates, f).with_context(|| format!("Failed to draw {}", rates.display()))?;
    Ok(vec![spectrum, rates])
}

/// The value at percentile `p` (0..1) of sorted `samples`, nearest rank.
fn at(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Points (1 / (1 − p), milliseconds) of the spectrum of `samples` (microseconds), from p0 to
/// the highest percentile the sample count supports (at most p99.99).
pub fn spectrum_points(samples: &[u64]) -> Vec<(f64, f64)> {
    if samples.is_empty() {
        return Vec::new();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let top = (sorted.len() as f64).min(10_000.0);
    let steps = 200;
    (0..=steps)
        .map(|i| top.powf(i as f64 / steps as f64))
        .map(|x| (x, at(&sorted, 1.0 - 1.0 / x) as f64 / 1000.0))
        .collect()
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 - 100.0 / x;
    if p <= 0.0 {
        return "0%".into();
    }
    let text = format!("{p:.4}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

fn latency_spectrum(path: &Path, f: &Figures) -> anyhow::Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = LATENCY_SERIES
        .iter()
        .map(|(key, label)| (*label, spectrum_points(f.latencies.get(key).map(Vec::as_slice).unwrap_or(&[]))))
        .collect();
    let values = series.iter().flat_map(|(_, points)| points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 { ((lo.max(0.01) / 1.5), hi * 1.5) } else { (0.1, 10.0) };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile (pooled over the runs)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((1f64..10_000f64).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|v| if *v >= 10.0 { format!("{v:.0}") } else { format!("{v}") })
        .draw()?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The bars of the apply-rate picture: label and figure key.
pub fn apply_bars() -> Vec<(String, String)> {
    let mut bars = vec![("runtime (synthetic)".to_owned(), "apply".to_owned()), ("replay".into(), "replay".into())];
    for spec in orderflow_registry::CONSUMERS {
        bars.push((spec.binary.to_owned(), crate::consumers::figures(spec)[0].to_owned()));
    }
    bars.push(("Python peer".into(), "peer".into()));
    bars
}

fn apply_rates(path: &Path, f: &Figures) -> anyhow::Result<()> {
    let bars: Vec<(String, f64)> =
        apply_bars().into_iter().map(|(label, key)| (label, f.median(&key))).filter(|(_, v)| v.is_finite()).collect();
    let ceilings = [("raw consume", f.median("consume")), ("raw upsert", f.median("upsert"))];
    // A ceiling far above every bar (raw consume usually is) would flatten the bars: the scale
    // stops at three times the highest bar, and such a ceiling is drawn at the top, its value in
    // the legend.
    let highest = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let top = ceilings.iter().map(|c| c.1).filter(|v| v.is_finite() && *v <= highest * 3.0).fold(highest, f64::max);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    draw_bars(&root, &bars, &ceilings, top * 1.15)?;
    root.present()?;
    Ok(())
}

fn draw_bars(
    root: &DrawingArea<SVGBackend, Shift>,
    bars: &[(String, f64)],
    ceilings: &[(&str, f64)],
    top: f64,
) -> anyhow::Result<()> {
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption("Apply rate beside the ceilings (median of the runs)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 { names.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("events/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let color = if i + 1 == bars.len() { COLORS[1] } else { COLORS[0] };
        Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], color.filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(format!("{:.1}k", v / 1000.0), (i as f64 + 0.3, v + top * 0.02), ("sans-serif", 14))
    }))?;
    for (k, (label, value)) in ceilings.iter().enumerate() {
        if !value.is_finite() {
            continue;
        }
        let color = COLORS[2 + k % 2];
        let (y, note) = if *value <= top { (*value, "") } else { (top, ", above the scale") };
        chart
            .draw_series(LineSeries::new(vec![(0.0, y), (n as f64, y)], color.stroke_width(2)))?
            .label(format!("{label} ceiling: {:.1}k/s{note}", value / 1000.0))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectrum_points_climb_to_the_highest_supported_percentile() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let points = spectrum_points(&samples);
        assert_eq!(points.first().unwrap(), &(1.0, 1.0), "p0 is the smallest sample");
        let last = points.last().unwrap();
        assert!((last.0 - 1000.0).abs() < 1e-6, "1000 samples reach p99.9, not further: {last:?}");
        assert_eq!(last.1, 999.0, "whose value is the 999th sample (nearest rank)");
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1), "a spectrum never falls");
        assert!(spectrum_points(&[]).is_empty());
    }

    #[test]
    fn percentile_labels_read_like_hdrhistogram_axes() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&2.0), "50%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&10_000.0), "99.99%");
    }

    #[test]
    fn both_pictures_are_drawn_from_figures() {
        let mut f = Figures::default();
        for (key, value) in [("apply", 20_000.0), ("peer", 9_000.0), ("consume", 90_000.0), ("upsert", 30_000.0)] {
            f.push(key, value);
        }
        f.latencies.insert("ingress_50", (1..=500).map(|i| i * 40).collect());
        f.latencies.insert("e2e_50", (1..=500).map(|i| i * 90).collect());
        let dir = tempfile::tempdir().unwrap();
        let paths = draw(dir.path(), &f).unwrap();
        assert_eq!(paths.len(), 2);
        for path in paths {
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", path.display());
            assert!(svg.contains("<polyline") || svg.contains("<rect"), "{} draws something", path.display());
        }
    }
}
