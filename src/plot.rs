//! Pictures of training runs: one SVG with the loss, learning rate and gradient norm of one or several runs
//! against step, so a run can be judged (and runs compared) at a glance without leaving the terminal's tools.
//!
//! A run is what `train_gpt2 --out DIR` leaves behind: `DIR/metrics.jsonl`, read by `metrics::RunMetrics`. A
//! number logged as `null` (a diverged loss) leaves a gap in its line.
//!
//! The picture (1200 x 900 px): the loss on top (train loss faint, its exponential moving average bold, val loss
//! as dots; log scale when it spans more than a decade), the learning rate and the gradient norm below, one colour
//! per run and a legend with each run's last val loss. Text stays `<text>` in the SVG for the viewer to render
//! (plotters without its `ttf` feature), so drawing needs no installed font.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use crate::metrics::RunMetrics;
use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The picture's size in pixels (width, height).
const SIZE: (u32, u32) = (1200, 900);
/// Height of the loss panel in pixels; the learning-rate and gradient-norm panels share the rest side by side.
const LOSS_PANEL_HEIGHT: u32 = 500;

/// Distinct colours for runs, in order (matplotlib's tab10); the 11th run reuses the first colour.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The moving average of the train loss forgets with a time constant of this fraction of the longest run's
/// steps (25 steps for a 1000-step run); below 2 steps the raw loss is drawn bold instead.
const SMOOTHING_FRACTION: f64 = 1.0 / 40.0;
/// Opacity of the raw train loss under its moving average.
const RAW_LOSS_OPACITY: f64 = 0.25;
/// A series with more points than this many per pixel column is thinned to each column's extremes.
const POINTS_PER_PIXEL: usize = 2;
/// An axis whose values span more than this ratio (max / min) is drawn on a log scale.
const LOG_SCALE_SPAN: f64 = 10.0;
/// Fine grid lines between two labelled ones, at most.
const MESH_LIGHT_LINES: usize = 1;
/// Radius of a val-loss dot in pixels.
const DOT_RADIUS: i32 = 3;

/// Reads the runs (each an `--out` directory or a metrics file) and writes their plot to `out`. See
/// [`plot_metrics`].
pub fn plot_runs<P: AsRef<Path>>(runs: &[P], out: &Path) -> Result<()> {
    let runs = runs.iter().map(|run| RunMetrics::read(run.as_ref())).collect::<Result<Vec<_>>>()?;
    plot_metrics(&runs, out)
}

/// Writes one SVG of `runs` to `out`, atomically (a temporary sibling renamed over it). A run with nothing logged
/// yet is listed in the legend as such; when no run has anything to draw, that is an error naming the first run.
pub fn plot_metrics(runs: &[RunMetrics], out: &Path) -> Result<()> {
    let first = runs.first().ok_or_else(|| Error::config("runs", "no run to plot"))?;
    if runs.iter().all(RunMetrics::is_empty) {
        let what = if runs.len() == 1 { "metrics".to_string() } else { format!("metrics of all {} runs", runs.len()) };
        return Err(Error::format(&first.path, what, "a step or an evaluation", "none yet"));
    }
    check_output(out)?;
    let svg = render_svg(runs).map_err(|e| Error::io("cannot draw plot", out, std::io::Error::other(e)))?;
    crate::checkpoint::write_atomically(out, |file| file.write_all(svg.as_bytes()))
}

/// Refuses an output path that cannot be written before any drawing is done.
fn check_output(out: &Path) -> Result<()> {
    if out.file_name().is_none() {
        return Err(Error::config("output", format!("{} is not a file name", out.display())));
    }
    let refuse = |kind, why: String| Err(Error::io("cannot write plot", out, std::io::Error::new(kind, why)));
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty() && !dir.is_dir()) {
        return refuse(std::io::ErrorKind::NotFound, format!("directory {} does not exist", dir.display()));
    }
    if out.is_dir() {
        return refuse(std::io::ErrorKind::IsADirectory, "it is a directory".to_string());
    }
    Ok(())
}

/// Side of the attention map's square in pixels (plus room for labels).
const ATTENTION_SIZE: u32 = 900;
/// Above this many tokens the axes show positions instead of the tokens' text, which would overlap.
const ATTENTION_LABELS_MAX: usize = 48;

/// Writes an attention map to `out` as an SVG: `map` is (T, T) row-major, row i the probabilities query i gives
/// to each key (`GPT2::attention_map`), drawn as a grid from white (0) to dark blue (1) with queries down and
/// keys across, labelled with the `tokens`' text.
pub fn attention_svg(tokens: &[String], map: &[f32], title: &str, out: &Path) -> Result<()> {
    let t = tokens.len();
    if map.len() != t * t {
        return Err(Error::config("attention map", format!("expected {t}x{t} values, found {}", map.len())));
    }
    check_output(out)?;
    // The grid starts at (MARGIN, MARGIN) with queries down the left and keys along the top; each cell is
    // `cell` pixels square.
    const MARGIN: i32 = 160;
    let cell = (ATTENTION_SIZE as i32 / t.max(1) as i32).max(1);
    let side = MARGIN + cell * t as i32 + 20;
    let label = |i: usize| -> String {
        match tokens.get(i) {
            Some(text) if t <= ATTENTION_LABELS_MAX => format!("{text:?}"),
            _ => i.to_string(),
        }
    };
    let mut svg = String::new();
    let drawn = (|| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (side as u32, side as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(title.to_string(), (10, 10), ("sans-serif", 18)))?;
        root.draw(&Text::new("keys \u{2192}", (MARGIN, 40), ("sans-serif", 14)))?;
        root.draw(&Text::new("queries \u{2193}", (10, 40), ("sans-serif", 14)))?;
        let labels_every = t.div_ceil(ATTENTION_LABELS_MAX);
        let font = ("sans-serif", 11).into_font();
        for i in (0..t).step_by(labels_every) {
            let centre = MARGIN + cell * i as i32 + cell / 2;
            root.draw(&Text::new(label(i), (10, centre - 5), font.clone()))?;
            let rotated = font.clone().transform(FontTransform::Rotate90);
            root.draw(&Text::new(label(i), (centre - 5, 60), rotated))?;
        }
        for i in 0..t {
            for j in 0..t {
                let p = map[i * t + j].clamp(0.0, 1.0) as f64;
                let shade = |full: u8| (255.0 - p * (255.0 - full as f64)) as u8;
                let colour = RGBColor(shade(0x08), shade(0x30), shade(0x6b));
                let (x, y) = (MARGIN + cell * j as i32, MARGIN + cell * i as i32);
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], colour.filled()))?;
            }
        }
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| Error::io("cannot draw attention map", out, std::io::Error::other(e.to_string())))?;
    crate::checkpoint::write_atomically(out, |file| file.write_all(svg.as_bytes()))
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Look {
    /// A thin, faint line under a bolder one (raw train loss under its moving average).
    Faint,
    Line,
    Bold,
    Dots,
}

/// Points of one run in one panel, split at gaps (non-finite values).
struct Series {
    colour: RGBColor,
    look: Look,
    segments: Vec<Vec<(f64, f64)>>,
}

/// One chart: what it shows and its y axis.
struct Panel {
    caption: String,
    y_desc: &'static str,
    scale: Scale,
    y: Range<f64>,
    series: Vec<Series>,
    /// Legend entries (label, colour); empty for no legend.
    legend: Vec<(String, RGBColor)>,
}

impl Panel {
    /// A panel whose y axis fits `series` (see [`y_axis`] for `log_when_wide` and `from_zero`).
    fn new(caption: String, y_desc: &'static str, series: Vec<Series>, log_when_wide: bool, from_zero: bool) -> Self {
        let values = series.iter().flat_map(|s| s.segments.iter().flatten().map(|&(_, y)| y));
        let (scale, y) = y_axis(values, log_when_wide, from_zero);
        Panel { caption, y_desc, scale, y, series, legend: Vec::new() }
    }
}

/// The scale and range for `values` (all finite): log when `log_when_wide` and they are positive and span more
/// than a decade, else linear, from zero when `from_zero` (and no value is negative).
fn y_axis(values: impl Iterator<Item = f64>, log_when_wide: bool, from_zero: bool) -> (Scale, Range<f64>) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (Scale::Linear, 0.0..1.0); // nothing to draw
    }
    if log_when_wide && lo > 0.0 && hi / lo > LOG_SCALE_SPAN {
        let margin = 1.1; // a factor: 5% of a decade's height on each side
        return (Scale::Log, lo / margin..hi * margin);
    }
    let lo = if from_zero && lo >= 0.0 { 0.0 } else { lo };
    let pad = if hi > lo { (hi - lo) * 0.05 } else { hi.abs().max(1.0) * 0.1 };
    (Scale::Linear, if lo == 0.0 { 0.0..hi + pad } else { lo - pad..hi + pad })
}

/// `points` with non-finite values removed, split into runs of finite ones, each thinned to at most
/// `POINTS_PER_PIXEL` points per pixel column of a plot `width` px wide.
fn segments(points: impl Iterator<Item = (f64, f64)>, width: usize) -> Vec<Vec<(f64, f64)>> {
    let mut segments = vec![Vec::new()];
    for (x, y) in points {
        if y.is_finite() {
            segments.last_mut().expect("starts with one").push((x, y));
        } else if !segments.last().expect("starts with one").is_empty() {
            segments.push(Vec::new());
        }
    }
    segments.retain(|s| !s.is_empty());
    segments.into_iter().map(|s| thin(s, width)).collect()
}

/// At most `POINTS_PER_PIXEL * columns` points of `points`: each of `columns` equal slices keeps its lowest and its
/// highest point, in order, so spikes survive.
fn thin(points: Vec<(f64, f64)>, columns: usize) -> Vec<(f64, f64)> {
    if points.len() <= POINTS_PER_PIXEL * columns.max(1) {
        return points;
    }
    let chunk = points.len().div_ceil(columns.max(1));
    let mut kept = Vec::with_capacity(POINTS_PER_PIXEL * columns);
    for slice in points.chunks(chunk) {
        let lowest = (0..slice.len()).min_by(|&a, &b| slice[a].1.total_cmp(&slice[b].1)).expect("non-empty");
        let highest = (0..slice.len()).max_by(|&a, &b| slice[a].1.total_cmp(&slice[b].1)).expect("non-empty");
        kept.push(slice[lowest.min(highest)]);
        if lowest != highest {
            kept.push(slice[lowest.max(highest)]);
        }
    }
    kept
}

/// Exponential moving average of the finite `values` with time constant `window` steps, bias-corrected (as
/// TensorBoard's smoothing) so it starts at the first value rather than at zero; NaN where the input is.
fn moving_average(values: &[f64], window: f64) -> Vec<f64> {
    let keep = 1.0 - 1.0 / window; // weight of the average so far
    let (mut sum, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return f64::NAN;
            }
            sum = keep * sum + (1.0 - keep) * v;
            weight = keep * weight + (1.0 - keep);
            sum / weight
        })
        .collect()
}

/// Labelled ticks for a log axis over `y`: each decade's 1, 2, 3, 5 (1, 2, 5 beyond two decades, 1 beyond four).
fn log_ticks(y: &Range<f64>) -> Vec<f64> {
    let decades = (y.end / y.start).log10();
    let multiples: &[f64] = match decades {
        d if d <= 2.0 => &[1.0, 2.0, 3.0, 5.0],
        d if d <= 4.0 => &[1.0, 2.0, 5.0],
        _ => &[1.0],
    };
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(y.start.log10().floor());
    while decade <= y.end {
        ticks.extend(multiples.iter().map(|m| decade * m).filter(|t| y.contains(t)));
        decade *= 10.0;
    }
    ticks
}

/// A number for an axis: up to 4 significant digits, exponent form outside [0.01, 1e5).
fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if !(1e-2..1e5).contains(&v.abs()) {
        return format!("{v:.1e}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Names for the legend: a run's name, or the path it was read from when two runs share a name.
fn legend_names(runs: &[RunMetrics]) -> Vec<String> {
    let mut count = HashMap::new();
    for run in runs {
        *count.entry(run.name.as_str()).or_insert(0) += 1;
    }
    runs.iter()
        .map(|run| if count[run.name.as_str()] > 1 { run.path.display().to_string() } else { run.name.clone() })
        .collect()
}

/// The three panels for `runs`, plotted `width` px wide.
fn panels(runs: &[RunMetrics], width: usize) -> [Panel; 3] {
    let longest = runs.iter().map(|r| r.steps.len()).max().unwrap_or(0);
    let window = longest as f64 * SMOOTHING_FRACTION;
    let smooth = window >= 2.0;
    let (mut loss, mut lr, mut norm) = (Vec::new(), Vec::new(), Vec::new());
    for (i, run) in runs.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let x = || run.steps.iter().map(|p| p.step as f64);
        let series = |look, ys: Vec<f64>| Series { colour, look, segments: segments(x().zip(ys), width) };
        let train: Vec<f64> = run.steps.iter().map(|p| p.train_loss).collect();
        if smooth {
            loss.push(series(Look::Faint, train.clone()));
            loss.push(series(Look::Bold, moving_average(&train, window)));
        } else {
            loss.push(series(Look::Bold, train));
        }
        let evals = run.evals.iter().map(|p| (p.step as f64, p.val_loss));
        loss.push(Series { colour, look: Look::Dots, segments: segments(evals, width) });
        lr.push(series(Look::Bold, run.steps.iter().map(|p| p.lr).collect()));
        norm.push(series(Look::Line, run.steps.iter().map(|p| p.grad_norm).collect()));
    }
    let caption = if smooth {
        format!("loss: train faint, its moving average ({window:.0} steps) bold, val as dots")
    } else {
        "loss: train as lines, val as dots".to_string()
    };
    let mut loss = Panel::new(caption, "loss (nats per token)", loss, true, false);
    loss.legend = runs
        .iter()
        .zip(legend_names(runs))
        .enumerate()
        .map(|(i, (run, name))| {
            let last = match (run.last_eval(), run.steps.iter().rev().find(|p| p.train_loss.is_finite())) {
                (Some(e), _) => format!("val {:.4} at step {}", e.val_loss, e.step),
                (None, Some(s)) => format!("train {:.4} at step {}", s.train_loss, s.step),
                (None, None) if run.is_empty() => "no steps yet".to_string(),
                (None, None) => "no finite loss".to_string(),
            };
            (format!("{name}: {last}"), PALETTE[i % PALETTE.len()])
        })
        .collect();
    // A schedule reads best linear from zero; gradient norms spike, so a log scale when they do.
    let lr = Panel::new("learning rate".into(), "learning rate", lr, false, true);
    let norm = Panel::new("gradient norm (before clipping)".into(), "gradient norm", norm, true, true);
    [loss, lr, norm]
}

/// The whole picture as SVG text.
fn render_svg(runs: &[RunMetrics]) -> std::result::Result<String, String> {
    let last_step = runs.iter().filter_map(RunMetrics::last_step).max().unwrap_or(0);
    let x = 0.0..(last_step.max(1) as f64);
    let [loss, lr, norm] = panels(runs, SIZE.0 as usize);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(LOSS_PANEL_HEIGHT);
        let (left, right) = bottom.split_horizontally(SIZE.0 / 2);
        for (area, panel) in [(&top, &loss), (&left, &lr), (&right, &norm)] {
            draw_panel(area, panel, x.clone()).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws `panel` into `area` with steps `x` on the x axis.
fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel, x: Range<f64>) -> DrawResult<DB> {
    match panel.scale {
        Scale::Linear => draw_chart(area, panel, x, panel.y.clone()),
        Scale::Log => draw_chart(area, panel, x, panel.y.clone().log_scale().with_key_points(log_ticks(&panel.y))),
    }
}

/// Draws `panel` with y coordinates `y` (linear or log).
fn draw_chart<DB, Y>(area: &DrawingArea<DB, Shift>, panel: &Panel, x: Range<f64>, y: Y) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    let scale = if panel.scale == Scale::Log { " (log scale)" } else { "" };
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(format!("{}{scale}", panel.y_desc))
        .x_max_light_lines(MESH_LIGHT_LINES)
        .y_max_light_lines(MESH_LIGHT_LINES)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format_number(*v))
        .draw()?;
    for series in &panel.series {
        let colour = series.colour;
        match series.look {
            Look::Dots => {
                let points = series.segments.iter().flatten().copied();
                chart.draw_series(points.map(|p| Circle::new(p, DOT_RADIUS, colour.filled())))?;
            }
            look => {
                let style = match look {
                    Look::Faint => colour.mix(RAW_LOSS_OPACITY).stroke_width(1),
                    Look::Bold => colour.stroke_width(2),
                    _ => colour.stroke_width(1),
                };
                chart.draw_series(series.segments.iter().map(|s| PathElement::new(s.clone(), style)))?;
            }
        }
    }
    if !panel.legend.is_empty() {
        for (label, colour) in &panel.legend {
            let colour = *colour;
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    Ok(())
}
