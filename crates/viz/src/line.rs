//! Line figures: one or more panels of curves side by side, such as training
//! and test loss per epoch for several models.
//!
//! Input is validated up front (parameter errors never touch the file
//! system), then the figure is rendered through the shared atomic writer in
//! `figure`. Each panel gets a title, axis labels, padded axis ranges, an
//! optional log y-axis with useful ticks, and a legend placed in whichever
//! corner of the plot the curves cover least.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::axis::{AxisTicks, LogAxis, PAD_FRACTION, padded_linear, padded_log};
use crate::error::{Error, Result};
use crate::figure::{
    DrawError, LEGEND_SIZE, PANEL_WIDTH, PanelText, Render, draw_title, figure_height, font,
    panel_chart, write_atomic,
};
use crate::palette::palette_color;

/// One curve of a panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend text; a series with an empty label is drawn but not listed.
    pub label: String,
    /// x coordinates, same length as `y`.
    pub x: Vec<f64>,
    /// y coordinates, same length as `x`.
    pub y: Vec<f64>,
    /// Index into [`crate::PALETTE`] (wrapping): the same index is the same
    /// colour in every figure.
    pub color: usize,
    /// Draw the curve dashed (e.g. test loss beside a solid training loss).
    pub dashed: bool,
}

impl Series {
    /// A series of one value per epoch, with x = 1, 2, ..., `values.len()`.
    pub fn per_epoch(label: impl Into<String>, values: &[f64], color: usize, dashed: bool) -> Self {
        Self {
            label: label.into(),
            x: (1..=values.len()).map(|e| e as f64).collect(),
            y: values.to_vec(),
            color,
            dashed,
        }
    }
}

/// One panel of a line figure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePanel {
    /// Panel title, drawn above the plot; empty for none.
    pub title: String,
    /// Label of the x-axis; empty for none.
    pub x_label: String,
    /// Label of the y-axis; empty for none.
    pub y_label: String,
    /// Use a logarithmic y-axis (all y values must then be positive).
    pub log_y: bool,
    /// The curves, drawn in order and listed in this order in the legend.
    pub series: Vec<Series>,
}

/// Writes one figure of one or more line panels side by side, under an
/// overall `title` (empty for none), to `path`.
///
/// The format is chosen by the extension, `.png` or `.svg` (any case). Each
/// panel is 900 x 600 pixels. The file is written atomically: rendered to a
/// hidden temporary file in the same directory and renamed into place.
///
/// # Errors
/// Parameter errors, checked before any file is touched:
/// [`Error::UnsupportedExtension`], [`Error::NoPanels`], [`Error::EmptyPanel`],
/// [`Error::EmptySeries`], [`Error::LengthMismatch`], [`Error::NonFinite`],
/// [`Error::NonPositiveLogY`]. Run-time errors: [`Error::Font`],
/// [`Error::Draw`] (including a missing output directory), [`Error::Io`].
pub fn line_figure(path: &Path, title: &str, panels: &[LinePanel]) -> Result<()> {
    crate::figure::Format::from_path(path)?;
    if panels.is_empty() {
        return Err(Error::NoPanels {
            path: path.to_path_buf(),
        });
    }
    let panels = panels
        .iter()
        .map(PreparedPanel::new)
        .collect::<Result<Vec<_>>>()?;
    write_atomic(path, &LineFigure { title, panels })
}

/// A validated panel with its padded axis ranges.
struct PreparedPanel<'a> {
    panel: &'a LinePanel,
    x: Range<f64>,
    y: Range<f64>,
}

impl<'a> PreparedPanel<'a> {
    fn new(panel: &'a LinePanel) -> Result<Self> {
        if panel.series.is_empty() {
            return Err(Error::EmptyPanel {
                panel: panel.title.clone(),
            });
        }
        let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in &panel.series {
            validate_series(panel, s)?;
            for (&x, &y) in s.x.iter().zip(&s.y) {
                (x_min, x_max) = (x_min.min(x), x_max.max(x));
                (y_min, y_max) = (y_min.min(y), y_max.max(y));
            }
        }
        let y = if panel.log_y {
            padded_log(y_min, y_max, PAD_FRACTION)
        } else {
            padded_linear(y_min, y_max, PAD_FRACTION)
        };
        Ok(Self {
            panel,
            x: padded_linear(x_min, x_max, PAD_FRACTION),
            y,
        })
    }
}

fn validate_series(panel: &LinePanel, s: &Series) -> Result<()> {
    let names = || (panel.title.clone(), s.label.clone());
    if s.x.len() != s.y.len() {
        let (panel, series) = names();
        return Err(Error::LengthMismatch {
            panel,
            series,
            x_len: s.x.len(),
            y_len: s.y.len(),
        });
    }
    if s.x.is_empty() {
        let (panel, series) = names();
        return Err(Error::EmptySeries { panel, series });
    }
    for (index, (&x, &y)) in s.x.iter().zip(&s.y).enumerate() {
        if !x.is_finite() || !y.is_finite() {
            let (panel, series) = names();
            return Err(Error::NonFinite {
                panel,
                series,
                index,
                x,
                y,
            });
        }
        if panel.log_y && y <= 0.0 {
            let (panel, series) = names();
            return Err(Error::NonPositiveLogY {
                panel,
                series,
                index,
                y,
            });
        }
    }
    Ok(())
}

struct LineFigure<'a> {
    title: &'a str,
    panels: Vec<PreparedPanel<'a>>,
}

impl Render for LineFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (
            PANEL_WIDTH * self.panels.len() as u32,
            figure_height(self.title),
        )
    }

    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawError> {
        let body = draw_title(root, self.title)?;
        let areas = body.split_evenly((1, self.panels.len()));
        for (area, p) in areas.iter().zip(&self.panels) {
            if p.panel.log_y {
                draw_panel(area, p.panel, p.x.clone(), LogAxis::new(p.y.clone()))?;
            } else {
                draw_panel(
                    area,
                    p.panel,
                    p.x.clone(),
                    RangedCoordf64::from(p.y.clone()),
                )?;
            }
        }
        Ok(())
    }
}

/// Width of the line sample in the legend.
const LEGEND_SAMPLE: u32 = 48;
/// Padding inside the legend box.
const LEGEND_MARGIN: u32 = 12;
/// Dash and gap lengths of a dashed curve, in pixels.
const DASH: (u32, u32) = (14, 8);

fn draw_panel<DB: DrawingBackend, Y>(
    area: &DrawingArea<DB, Shift>,
    panel: &LinePanel,
    x: Range<f64>,
    y: Y,
) -> std::result::Result<(), DrawError>
where
    Y: AxisTicks + ValueFormatter<f64>,
{
    let text = PanelText {
        title: &panel.title,
        x_label: &panel.x_label,
        y_label: &panel.y_label,
    };
    let mut chart = panel_chart(area, &text, x, y)?;

    let mut pixel_paths = Vec::with_capacity(panel.series.len());
    for s in &panel.series {
        let style = palette_color(s.color).stroke_width(3);
        let points = s.x.iter().copied().zip(s.y.iter().copied());
        pixel_paths.push(
            points
                .clone()
                .map(|p| chart.backend_coord(&p))
                .collect::<Vec<_>>(),
        );
        // A line through one point draws nothing, so a lone point gets a dot.
        let anno = if s.x.len() == 1 {
            chart.draw_series(points.map(|p| Circle::new(p, 5, style.filled())))?
        } else if s.dashed {
            chart.draw_series(DashedLineSeries::new(points, DASH.0, DASH.1, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        if !s.label.is_empty() {
            let [a, b, c] = legend_segments(s.dashed);
            let seg = move |(x0, x1): (i32, i32)| PathElement::new(vec![(x0, 0), (x1, 0)], style);
            anno.label(s.label.as_str())
                .legend(move |(x, y)| EmptyElement::at((x, y)) + seg(a) + seg(b) + seg(c));
        }
    }

    let labels: Vec<&str> = panel
        .series
        .iter()
        .map(|s| s.label.as_str())
        .filter(|l| !l.is_empty())
        .collect();
    if labels.is_empty() {
        return Ok(());
    }
    let position = legend_position(chart.plotting_area(), &labels, &pixel_paths);
    chart
        .configure_series_labels()
        .position(position)
        .margin(LEGEND_MARGIN)
        .legend_area_size(LEGEND_SAMPLE + 10)
        .label_font(font(LEGEND_SIZE))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// The legend's line sample as three `(start, end)` pixel spans along x:
/// touching for a solid series, with gaps for a dashed one, so both are drawn
/// by the same element type and have the same overall length.
fn legend_segments(dashed: bool) -> [(i32, i32); 3] {
    let w = LEGEND_SAMPLE as i32;
    let gap = if dashed { 3 } else { 0 };
    [
        (0, w / 3 - gap),
        (w / 3 + gap, 2 * w / 3 - gap),
        (2 * w / 3 + gap, w),
    ]
}

/// The corner of the plot whose legend-sized box the curves pass through least,
/// preferring upper right, then upper left, lower left, lower right on ties.
fn legend_position<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(
    plot: &DrawingArea<DB, CT>,
    labels: &[&str],
    paths: &[Vec<(i32, i32)>],
) -> SeriesLabelPosition {
    let style = TextStyle::from(font(LEGEND_SIZE));
    let text_w = labels
        .iter()
        .filter_map(|l| plot.estimate_text_size(l, &style).ok())
        .map(|(w, _)| w as i32)
        .max()
        .unwrap_or(0);
    let w = text_w + (LEGEND_SAMPLE + 10 + 2 * LEGEND_MARGIN) as i32;
    let h = ((labels.len() as f64 - 0.2) * 1.25 * LEGEND_SIZE) as i32 + 2 * LEGEND_MARGIN as i32;
    let (x0, y0) = plot.get_base_pixel();
    let (pw, ph) = plot.dim_in_pixel();
    let (pw, ph) = (pw as i32, ph as i32);
    let corners = [
        (SeriesLabelPosition::UpperRight, (x0 + pw - w - 5, y0 + 5)),
        (SeriesLabelPosition::UpperLeft, (x0 + 5, y0 + 5)),
        (SeriesLabelPosition::LowerLeft, (x0 + 5, y0 + ph - h - 5)),
        (
            SeriesLabelPosition::LowerRight,
            (x0 + pw - w - 5, y0 + ph - h - 5),
        ),
    ];
    let covered = |(bx, by): (i32, i32)| -> usize {
        let inside = |(px, py): (f64, f64)| {
            px >= f64::from(bx)
                && px <= f64::from(bx + w)
                && py >= f64::from(by)
                && py <= f64::from(by + h)
        };
        let mut n = 0;
        for path in paths {
            for seg in path.windows(2) {
                let (p, q) = (
                    (f64::from(seg[0].0), f64::from(seg[0].1)),
                    (f64::from(seg[1].0), f64::from(seg[1].1)),
                );
                // Sample the segment about every 3 px.
                let steps = ((q.0 - p.0).hypot(q.1 - p.1) / 3.0).ceil().max(1.0) as usize;
                n += (0..=steps)
                    .map(|i| i as f64 / steps as f64)
                    .filter(|t| inside((p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1))))
                    .count();
            }
            if path.len() == 1 {
                let p = path[0];
                n += usize::from(inside((f64::from(p.0), f64::from(p.1))));
            }
        }
        n
    };
    corners
        .into_iter()
        .min_by_key(|&(_, corner)| covered(corner))
        .map_or(SeriesLabelPosition::UpperRight, |(pos, _)| pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::listing;
    use std::fs;

    fn losses(n: usize, start: f64, floor: f64) -> Vec<f64> {
        (0..n)
            .map(|e| floor + (start - floor) * (-0.1 * e as f64).exp())
            .collect()
    }

    fn history_panel(log_y: bool) -> LinePanel {
        LinePanel {
            title: "Training loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            log_y,
            series: vec![
                Series::per_epoch("latent 10 train", &losses(30, 1.0, 0.35), 0, false),
                Series::per_epoch("latent 10 test", &losses(30, 1.0, 0.4), 0, true),
                Series::per_epoch("latent 50 train", &losses(30, 1.0, 0.3), 1, false),
                Series::per_epoch("latent 50 test", &losses(30, 1.0, 0.33), 1, true),
            ],
        }
    }

    #[test]
    fn renders_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.png");
        line_figure(
            &path,
            "History",
            &[history_panel(false), history_panel(true)],
        )
        .expect("figure renders");
        let bytes = fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic");
        assert!(
            bytes.len() > 20_000,
            "a two-panel figure with text is not tiny: {} bytes",
            bytes.len()
        );
        assert_eq!(
            listing(dir.path()),
            ["history.png"],
            "no temporary file left behind"
        );
    }

    #[test]
    fn renders_svg_with_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.svg");
        line_figure(&path, "Loss per epoch & model", &[history_panel(true)])
            .expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "Loss per epoch &amp; model",
            "Training loss",
            "epoch",
            "latent 10 train",
            "latent 10 test",
            "latent 50 train",
            "latent 50 test",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        assert_eq!(
            listing(dir.path()),
            ["history.svg"],
            "no temporary file left behind"
        );
    }

    #[test]
    fn overwrites_existing_figure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.png");
        fs::write(&path, b"old").expect("write placeholder");
        line_figure(&path, "", &[history_panel(false)]).expect("figure renders");
        let bytes = fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG"));
        assert_eq!(listing(dir.path()), ["h.png"]);
    }

    #[test]
    fn single_point_and_unlabelled_series_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let panel = LinePanel {
            series: vec![
                Series {
                    label: "one point".into(),
                    x: vec![1.0],
                    y: vec![2.0],
                    ..Series::default()
                },
                Series {
                    label: String::new(),
                    x: vec![0.0, 1.0],
                    y: vec![0.0, 0.0],
                    color: 12,
                    dashed: true,
                },
            ],
            ..LinePanel::default()
        };
        line_figure(&dir.path().join("p.svg"), "", &[panel]).expect("figure renders");
    }

    #[test]
    fn unsupported_extension_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["h.pdf", "h", "h.png.tmp"] {
            let r = line_figure(&dir.path().join(name), "t", &[history_panel(false)]);
            assert!(
                matches!(r, Err(Error::UnsupportedExtension { .. })),
                "{name}: {r:?}"
            );
        }
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn bad_series_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.png");
        let with = |log_y: bool, s: Series| LinePanel {
            title: "p".into(),
            log_y,
            series: vec![s],
            ..LinePanel::default()
        };
        let s = |x: Vec<f64>, y: Vec<f64>| Series {
            label: "s".into(),
            x,
            y,
            ..Series::default()
        };

        let r = line_figure(&path, "", &[with(false, s(vec![], vec![]))]);
        assert!(
            matches!(&r, Err(Error::EmptySeries { panel, series }) if panel == "p" && series == "s"),
            "{r:?}"
        );

        let r = line_figure(&path, "", &[with(false, s(vec![1.0, 2.0], vec![1.0]))]);
        assert!(
            matches!(
                r,
                Err(Error::LengthMismatch {
                    x_len: 2,
                    y_len: 1,
                    ..
                })
            ),
            "{r:?}"
        );

        let r = line_figure(
            &path,
            "",
            &[with(false, s(vec![1.0, 2.0], vec![1.0, f64::NAN]))],
        );
        assert!(matches!(r, Err(Error::NonFinite { index: 1, .. })), "{r:?}");

        let r = line_figure(&path, "", &[with(true, s(vec![1.0, 2.0], vec![1.0, 0.0]))]);
        assert!(
            matches!(r, Err(Error::NonPositiveLogY { index: 1, .. })),
            "{r:?}"
        );

        let r = line_figure(
            &path,
            "",
            &[LinePanel {
                title: "p".into(),
                ..LinePanel::default()
            }],
        );
        assert!(
            matches!(&r, Err(Error::EmptyPanel { panel }) if panel == "p"),
            "{r:?}"
        );

        let r = line_figure(&path, "", &[]);
        assert!(matches!(r, Err(Error::NoPanels { .. })), "{r:?}");

        assert!(
            listing(dir.path()).is_empty(),
            "nothing written for bad input"
        );
    }

    #[test]
    fn missing_directory_is_a_draw_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no/such/dir/h.png");
        let r = line_figure(&path, "t", &[history_panel(false)]);
        assert!(
            matches!(&r, Err(Error::Draw { path: p, .. }) if p == &path),
            "{r:?}"
        );
        let r = line_figure(
            &dir.path().join("no/such/dir/h.svg"),
            "t",
            &[history_panel(false)],
        );
        assert!(matches!(r, Err(Error::Draw { .. })), "{r:?}");
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn error_messages_carry_values() {
        let e = Error::LengthMismatch {
            panel: "loss".into(),
            series: "train".into(),
            x_len: 3,
            y_len: 2,
        };
        assert_eq!(
            e.to_string(),
            "series \"train\" in panel \"loss\" has 3 x values but 2 y values"
        );
    }

    #[test]
    fn legend_samples_are_solid_or_dashed() {
        let solid = legend_segments(false);
        assert!(
            solid.windows(2).all(|w| w[0].1 == w[1].0),
            "touching: {solid:?}"
        );
        let dashed = legend_segments(true);
        assert!(
            dashed.windows(2).all(|w| w[0].1 < w[1].0),
            "gaps: {dashed:?}"
        );
        assert_eq!(
            (solid[0].0, solid[2].1),
            (dashed[0].0, dashed[2].1),
            "same length"
        );
    }

    #[test]
    fn legend_avoids_the_curves() {
        crate::figure::ensure_font().expect("font");
        let mut buf = String::new();
        let area = SVGBackend::with_string(&mut buf, (800, 600)).into_drawing_area();
        let pick = |path: Vec<(i32, i32)>| legend_position(&area, &["train", "test"], &[path]);
        // Nothing drawn: upper right is the default.
        assert!(matches!(pick(vec![]), SeriesLabelPosition::UpperRight));
        // A decaying loss (top left to bottom right) leaves the upper right free.
        assert!(matches!(
            pick(vec![(0, 0), (200, 500), (800, 590)]),
            SeriesLabelPosition::UpperRight
        ));
        // A rising curve along the top and right edges: lower left is free.
        assert!(matches!(
            pick(vec![(0, 5), (795, 5), (795, 600)]),
            SeriesLabelPosition::LowerLeft
        ));
        // A diagonal from bottom left to top right: upper left is free.
        assert!(matches!(
            pick(vec![(0, 600), (800, 0)]),
            SeriesLabelPosition::UpperLeft
        ));
    }
}
