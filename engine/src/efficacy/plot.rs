//! PNG plots of an efficacy experiment: loss curves per arm (mean over seeds) and the final
//! target loss per arm with its standard deviation over seeds.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::Run;
use super::report::ArmSummary;
use crate::DeltError;

type Result<T> = std::result::Result<T, DeltError>;

/// Where the label font is looked for (plotters draws text with a TrueType font it is given).
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the label font once per process.
fn load_font() -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::env::var("DELT_FONT")
                .ok()
                .into_iter()
                .chain(FONTS.iter().map(|s| s.to_string()))
                .find(|p| Path::new(p).is_file())
                .ok_or("no TrueType font for the plot labels: install fonts-dejavu-core or set DELT_FONT to a .ttf file")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            // plotters keeps the font for the life of the process.
            register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                .map_err(|_| format!("{path}: not a usable TrueType font"))
        })
        .clone()
        .map_err(DeltError::Config)
}

fn drawing<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> DeltError + '_ {
    move |e| DeltError::Config(format!("{}: cannot draw the plot: {e}", path.display()))
}

/// Two panels (target, held-out): loss against training tokens, one line per arm, the mean
/// of its seeds. The first tenth of training (losses near ln(vocabulary)) is left out so
/// the differences stay visible.
pub fn loss_curves(path: &Path, runs: &[Run], arms: &[String]) -> Result<()> {
    load_font()?;
    let fail = drawing(path);
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&fail)?;
    let (left, right) = root.split_horizontally(700);
    let budget = runs.iter().map(|r| r.tokens).max().unwrap_or(1) as f64;
    for (area, title, target) in [(left, "target loss", true), (right, "held-out loss", false)] {
        let series: Vec<(&String, Vec<(f64, f64)>)> = arms
            .iter()
            .map(|arm| {
                let mine: Vec<&Run> = runs.iter().filter(|r| &r.arm == arm).collect();
                let points = (0..mine[0].curve.len())
                    .map(|i| {
                        let value = |r: &&Run| {
                            let (_, t, h) = r.curve[i.min(r.curve.len() - 1)];
                            if target { t } else { h }
                        };
                        let mean = mine.iter().map(value).sum::<f64>() / mine.len() as f64;
                        (mine[0].curve[i].0 as f64, mean)
                    })
                    .filter(|(tokens, _)| *tokens >= 0.1 * budget)
                    .collect();
                (arm, points)
            })
            .collect();
        let values = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.1 * budget..budget * 1.01, lo - pad..hi + pad)
            .map_err(&fail)?;
        chart
            .configure_mesh()
            .x_desc("training tokens")
            .x_label_formatter(&|x| format!("{:.0}k", x / 1e3))
            .y_desc("mean token loss (nats)")
            .draw()
            .map_err(&fail)?;
        for (i, (name, points)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(&fail)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(&fail)?;
    }
    root.present().map_err(&fail)
}

/// Bars of the final target loss per arm (mean over seeds) with +- one standard deviation.
/// The axis is zoomed to the bars, it does not start at zero.
pub fn target_bars(path: &Path, summaries: &[ArmSummary]) -> Result<()> {
    load_font()?;
    let fail = drawing(path);
    let n = summaries.len();
    let lo = summaries
        .iter()
        .map(|s| s.target.mean - s.target.sd)
        .fold(f64::INFINITY, f64::min);
    let hi = summaries
        .iter()
        .map(|s| s.target.mean + s.target.sd)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.15).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let root = BitMapBackend::new(path, (160 * n as u32 + 200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&fail)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "final target loss per arm (mean ± sd over seeds)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(75)
        // A segmented 0..m has m + 1 segments.
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), lo..hi)
        .map_err(&fail)?;
    let names: Vec<String> = summaries.iter().map(|s| s.arm.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc("target loss (nats)")
        .draw()
        .map_err(&fail)?;
    chart
        .draw_series(summaries.iter().enumerate().map(|(i, s)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), lo),
                    (SegmentValue::Exact(i + 1), s.target.mean),
                ],
                Palette99::pick(i).filled(),
            );
            bar.set_margin(0, 0, 20, 20);
            bar
        }))
        .map_err(&fail)?;
    chart
        .draw_series(summaries.iter().enumerate().map(|(i, s)| {
            let t = s.target;
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                t.mean - t.sd,
                t.mean,
                t.mean + t.sd,
                BLACK.stroke_width(2),
                16,
            )
        }))
        .map_err(&fail)?;
    root.present().map_err(&fail)
}
