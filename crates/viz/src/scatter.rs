//! Scatter figures of labelled points, the one function behind every
//! embedding plot (PCA, t-SNE, latent space), as scanpy's `pl.pca` and
//! `pl.tsne` are thin wrappers over one `embedding`.
//!
//! Panels sit side by side ("original | reconstructed") under an overall
//! title, each with its own padded axes. Points are coloured by label through
//! the shared palette, so label `i` has the same colour in every figure
//! (labels past the tenth, where the palette wraps, also change shape); they
//! are small, filled and partly transparent so that dense clusters show their
//! density, and drawn in a fixed shuffled order so that no label is
//! systematically painted over another. One legend for the whole figure sits
//! in a column right of the last panel, outside every plot, so it never hides
//! data; it wraps into more columns when the names do not fit one.
//!
//! As in `line`, input is validated up front (parameter errors never touch the
//! file system), then rendered through the shared atomic writer in `figure`.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{PAD_FRACTION, padded_linear};
use crate::error::{Error, Result};
use crate::figure::{
    DrawError, Format, LEGEND_SIZE, MARGIN, PANEL_HEIGHT, PANEL_WIDTH, PanelText, Render,
    draw_title, ensure_font, figure_height, font, panel_chart, write_atomic,
};
use crate::palette::{PALETTE, palette_color};

/// One panel of a scatter figure: a cloud of points, each with a label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScatterPanel {
    /// Panel title, drawn above the plot; empty for none.
    pub title: String,
    /// Label of the x-axis, formatted by the caller (e.g. "PC1 (23.4 % of
    /// variance)"); empty for none.
    pub x_label: String,
    /// Label of the y-axis; empty for none.
    pub y_label: String,
    /// x coordinates, one per point.
    pub x: Vec<f64>,
    /// y coordinates, one per point.
    pub y: Vec<f64>,
    /// Per point, an index into the figure's label names; it also picks the
    /// colour, [`crate::palette_color`]`(label)`.
    pub labels: Vec<usize>,
}

/// Writes one figure of one or more scatter panels side by side, under an
/// overall `title` (empty for none), to `path`.
///
/// Point `j` of a panel is drawn in the colour
/// [`crate::palette_color`]`(labels[j])`, and the legend, right of the last
/// panel, lists every entry of `label_names` with its colour (including names
/// no point uses, so a label reads the same in every figure). The palette has
/// ten colours and wraps after that, so labels 0 and 10 share a colour; they
/// are told apart by shape: circles for labels 0-9, squares for 10-19,
/// diamonds for 20-29, then circles again.
///
/// The format is chosen by the extension, `.png` or `.svg` (any case). Each
/// panel is 900 x 600 pixels, plus the legend column. The file is written
/// atomically: rendered to a hidden temporary file in the same directory and
/// renamed into place.
///
/// # Errors
/// Parameter errors, checked before any file is touched:
/// [`Error::UnsupportedExtension`], [`Error::NoPanels`],
/// [`Error::PointCountMismatch`], [`Error::NoPoints`],
/// [`Error::NonFinitePoint`], [`Error::LabelOutOfRange`]. Run-time errors:
/// [`Error::Font`], [`Error::Draw`] (including a missing output directory),
/// [`Error::Io`].
pub fn scatter_figure(
    path: &Path,
    title: &str,
    label_names: &[String],
    panels: &[ScatterPanel],
) -> Result<()> {
    Format::from_path(path)?;
    if panels.is_empty() {
        return Err(Error::NoPanels {
            path: path.to_path_buf(),
        });
    }
    let panels = panels
        .iter()
        .map(|p| PreparedPanel::new(p, label_names.len()))
        .collect::<Result<Vec<_>>>()?;
    // The legend's width, hence the figure's, depends on the text widths.
    ensure_font()?;
    let most_points = panels.iter().map(|p| p.panel.x.len()).max().unwrap_or(0);
    let figure = ScatterFigure {
        title,
        panels,
        legend: Legend::new(label_names),
        radius: point_radius(most_points),
    };
    write_atomic(path, &figure)
}

/// Opacity of a point: overlapping points add up, so density shows.
const POINT_ALPHA: f64 = 0.6;

/// Radius of a point in pixels: 3 for up to 5000 points per panel, 2 above
/// that, so large clouds do not fill into a solid blob. One radius for the
/// whole figure, so panels compare.
fn point_radius(most_points: usize) -> u32 {
    if most_points <= 5000 { 3 } else { 2 }
}

/// A fixed pseudo-random permutation of `0..n` (Fisher-Yates driven by
/// splitmix64 from a constant seed). Drawing in this order spreads every
/// label evenly through the drawing sequence, so no label is painted over
/// another just because it comes later in the input (which is often sorted
/// by label); the same `n` always gives the same order, so panels of the same
/// cells are drawn alike and figures are reproducible.
fn draw_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state: u64 = 0x5CAE_0000_0000_0001;
    for i in (1..n).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The modulo bias is below 2^-40 for any realistic n.
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order
}

/// Draws the marker of `label` centred on pixel `(x, y)` of `area`, `radius`
/// pixels from centre to edge. The palette repeats after ten colours, so each
/// further cycle of ten labels gets another shape: circles for labels 0-9,
/// squares for 10-19, diamonds for 20-29, then circles again. Labels 0 and 10
/// share a colour but not a shape.
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    label: usize,
    radius: u32,
    style: ShapeStyle,
) -> std::result::Result<(), DrawError> {
    let r = radius as i32;
    match label / PALETTE.len() % 3 {
        0 => area.draw(&Circle::new((x, y), radius, style))?,
        // A little inside the circle's bounding box, for the same visual weight.
        1 => area.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], style))?,
        _ => {
            let d = r + 1;
            let corners = vec![(x, y - d), (x + d, y), (x, y + d), (x - d, y)];
            area.draw(&Polygon::new(corners, style))?;
        }
    }
    Ok(())
}

/// A validated panel with its padded axis ranges.
struct PreparedPanel<'a> {
    panel: &'a ScatterPanel,
    x: Range<f64>,
    y: Range<f64>,
}

impl<'a> PreparedPanel<'a> {
    fn new(panel: &'a ScatterPanel, n_names: usize) -> Result<Self> {
        let (x_len, y_len, labels_len) = (panel.x.len(), panel.y.len(), panel.labels.len());
        if x_len != y_len || x_len != labels_len {
            return Err(Error::PointCountMismatch {
                panel: panel.title.clone(),
                x_len,
                y_len,
                labels_len,
            });
        }
        if x_len == 0 {
            return Err(Error::NoPoints {
                panel: panel.title.clone(),
            });
        }
        let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for (index, ((&x, &y), &label)) in
            panel.x.iter().zip(&panel.y).zip(&panel.labels).enumerate()
        {
            if !x.is_finite() || !y.is_finite() {
                return Err(Error::NonFinitePoint {
                    panel: panel.title.clone(),
                    index,
                    x,
                    y,
                });
            }
            if label >= n_names {
                return Err(Error::LabelOutOfRange {
                    panel: panel.title.clone(),
                    index,
                    label,
                    n_names,
                });
            }
            (x_min, x_max) = (x_min.min(x), x_max.max(x));
            (y_min, y_max) = (y_min.min(y), y_max.max(y));
        }
        Ok(Self {
            panel,
            x: padded_linear(x_min, x_max, PAD_FRACTION),
            y: padded_linear(y_min, y_max, PAD_FRACTION),
        })
    }
}

struct ScatterFigure<'a> {
    title: &'a str,
    panels: Vec<PreparedPanel<'a>>,
    legend: Legend<'a>,
    radius: u32,
}

impl Render for ScatterFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (
            PANEL_WIDTH * self.panels.len() as u32 + self.legend.width(),
            figure_height(self.title),
        )
    }

    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawError> {
        let body = draw_title(root, self.title)?;
        let (plots, legend_area) = body.split_horizontally(PANEL_WIDTH * self.panels.len() as u32);
        let mut plot_rows = 0..0;
        for (area, p) in plots
            .split_evenly((1, self.panels.len()))
            .iter()
            .zip(&self.panels)
        {
            plot_rows = draw_panel(area, p, self.radius)?;
        }
        self.legend.draw(&legend_area, &plot_rows)
    }
}

/// Draws one panel and returns the pixel rows of its plotting area (in the
/// coordinates of the whole figure), which the legend is centred on.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &PreparedPanel<'_>,
    radius: u32,
) -> std::result::Result<Range<i32>, DrawError> {
    let panel = p.panel;
    let text = PanelText {
        title: &panel.title,
        x_label: &panel.x_label,
        y_label: &panel.y_label,
    };
    let chart = panel_chart(area, &text, p.x.clone(), RangedCoordf64::from(p.y.clone()))?;
    // Markers are placed in pixels (their shape does not depend on the data
    // scale) on the plotting area, which clips them to the plot.
    let plot = chart.plotting_area();
    let (x0, y0) = plot.get_base_pixel();
    let pixels = plot.strip_coord_spec();
    for i in draw_order(panel.x.len()) {
        let (x, y) = plot.map_coordinate(&(panel.x[i], panel.y[i]));
        let label = panel.labels[i];
        let style = palette_color(label).mix(POINT_ALPHA).filled();
        draw_marker(&pixels, (x - x0, y - y0), label, radius, style)?;
    }
    Ok(plot.get_pixel_range().1)
}

/// Height of one legend entry in pixels.
const LEGEND_ROW: u32 = 32;
/// Radius of the legend's colour marker: larger than a point and opaque, so
/// the colour is easy to match.
const LEGEND_MARKER: u32 = 7;
/// Space between a marker and its name.
const LEGEND_TEXT_GAP: u32 = 10;
/// Space between legend columns.
const LEGEND_COLUMN_GAP: u32 = 28;

/// The figure's legend: every label name with its colour, in as few columns
/// as fit the panel height, filled top to bottom, then left to right.
struct Legend<'a> {
    names: &'a [String],
    /// Width of the widest name in pixels.
    text_width: u32,
    rows: usize,
    columns: usize,
}

impl<'a> Legend<'a> {
    /// Lays out `names`; the font must be registered ([`ensure_font`]) for the
    /// text widths to be measured.
    fn new(names: &'a [String]) -> Self {
        let style = font(LEGEND_SIZE);
        let text_width = names
            .iter()
            .map(|name| {
                style.box_size(name).map_or_else(
                    // Unmeasurable: a generous 0.7 em per character.
                    |_| (0.7 * LEGEND_SIZE * name.chars().count() as f64).ceil() as u32,
                    |(w, _)| w,
                )
            })
            .max()
            .unwrap_or(0);
        let max_rows = ((PANEL_HEIGHT - 2 * MARGIN) / LEGEND_ROW).max(1) as usize;
        let columns = names.len().div_ceil(max_rows).max(1);
        let rows = names.len().div_ceil(columns);
        Self {
            names,
            text_width,
            rows,
            columns,
        }
    }

    fn column_width(&self) -> u32 {
        2 * LEGEND_MARKER + LEGEND_TEXT_GAP + self.text_width
    }

    /// Width of the legend column, margins included.
    fn width(&self) -> u32 {
        let columns = self.columns as u32;
        2 * MARGIN + columns * self.column_width() + (columns - 1) * LEGEND_COLUMN_GAP
    }

    fn height(&self) -> u32 {
        self.rows as u32 * LEGEND_ROW
    }

    /// Draws the legend into `area`, vertically centred on `plot_rows` (pixel
    /// rows of the whole figure) as far as `area` allows.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        plot_rows: &Range<i32>,
    ) -> std::result::Result<(), DrawError> {
        let area_height = area.dim_in_pixel().1 as i32;
        let height = self.height() as i32;
        let centre = (plot_rows.start + plot_rows.end) / 2 - area.get_base_pixel().1;
        let top = (centre - height / 2).clamp(0, (area_height - height).max(0));
        let text = TextStyle::from(font(LEGEND_SIZE)).pos(Pos::new(HPos::Left, VPos::Center));
        let step = (self.column_width() + LEGEND_COLUMN_GAP) as i32;
        for (i, name) in self.names.iter().enumerate() {
            let (column, row) = (i / self.rows, i % self.rows);
            let x = MARGIN as i32 + column as i32 * step;
            let y = top + row as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            let marker_radius = LEGEND_MARKER as i32;
            let style = palette_color(i).filled();
            draw_marker(area, (x + marker_radius, y), i, LEGEND_MARKER, style)?;
            area.draw_text(
                name,
                &text,
                (x + 2 * marker_radius + LEGEND_TEXT_GAP as i32, y),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{listing, png_size};
    use std::fs;

    /// splitmix64 from `seed`, as uniform floats in [0, 1).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `n` points in `k` blobs on a circle, labels sorted (all of label 0
    /// first), as data often arrives.
    fn blobs(title: &str, n: usize, k: usize, seed: u64) -> ScatterPanel {
        let mut u = uniform(seed);
        let mut panel = ScatterPanel {
            title: title.into(),
            x_label: "PC1 (23.4 % of variance)".into(),
            y_label: "PC2 (11.2 % of variance)".into(),
            ..ScatterPanel::default()
        };
        for j in 0..n {
            let label = j * k / n;
            let angle = std::f64::consts::TAU * label as f64 / k as f64;
            panel.x.push(10.0 * angle.cos() + 3.0 * (u() - 0.5));
            panel.y.push(10.0 * angle.sin() + 3.0 * (u() - 0.5));
            panel.labels.push(label);
        }
        panel
    }

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("group {i}")).collect()
    }

    #[test]
    fn renders_png_with_a_legend_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pca.png");
        let panels = [
            blobs("original", 300, 3, 1),
            blobs("reconstructed", 300, 3, 2),
        ];
        scatter_figure(&path, "PCA of test cells", &names(3), &panels).expect("figure renders");
        let bytes = fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic");
        let (w, h) = png_size(&bytes);
        assert_eq!(h, PANEL_HEIGHT + crate::figure::TITLE_HEIGHT);
        assert!(
            (2 * PANEL_WIDTH + 100..2 * PANEL_WIDTH + 300).contains(&w),
            "two panels and a narrow legend column: {w} px"
        );
        assert_eq!(
            listing(dir.path()),
            ["pca.png"],
            "no temporary file left behind"
        );
    }

    #[test]
    fn renders_svg_with_text_and_colours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latent.svg");
        let mut label_names = names(3);
        label_names[2] = "B cells & NK".into();
        scatter_figure(
            &path,
            "Latent space",
            &label_names,
            &[blobs("VAE", 60, 3, 3)],
        )
        .expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "Latent space",
            "VAE",
            "PC1 (23.4 % of variance)",
            "PC2 (11.2 % of variance)",
            "group 0",
            "group 1",
            "B cells &amp; NK",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        // 60 points and 3 legend markers.
        assert_eq!(svg.matches("<circle").count(), 63);
        for i in 0..3 {
            let c = palette_color(i);
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(svg.contains(&hex), "SVG lacks colour {hex} of label {i}");
        }
        assert_eq!(listing(dir.path()), ["latent.svg"]);
    }

    #[test]
    fn labels_past_the_palette_change_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shapes.svg");
        let panel = ScatterPanel {
            x: vec![0.0, 1.0, 2.0],
            y: vec![0.0, 1.0, 0.0],
            labels: vec![0, 10, 20],
            ..ScatterPanel::default()
        };
        scatter_figure(&path, "", &names(21), &[panel]).expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        // Legend: circles for labels 0-9, squares for 10-19, a diamond for 20;
        // one point of each shape.
        assert_eq!(svg.matches("<circle").count(), 10 + 1);
        assert_eq!(svg.matches("<polygon").count(), 1 + 1);
        // Every rectangle but the white background is a square marker.
        let squares = svg.matches("<rect").count() - 1;
        assert_eq!(squares, 10 + 1);
    }

    #[test]
    fn large_panels_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.png");
        let panels = [
            blobs("original", 5000, 10, 8),
            blobs("reconstructed", 5000, 10, 9),
        ];
        let start = std::time::Instant::now();
        scatter_figure(&path, "10 000 cells", &names(10), &panels).expect("figure renders");
        let elapsed = start.elapsed();
        // Release builds take about 40 ms (see examples/embedding.rs); this
        // bound only catches a pathological slowdown in a debug build.
        assert!(elapsed.as_secs_f64() < 20.0, "{elapsed:?}");
        assert!(
            fs::read(&path)
                .expect("png written")
                .starts_with(b"\x89PNG")
        );
    }

    #[test]
    fn overwrites_existing_figure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.png");
        fs::write(&path, b"old").expect("write placeholder");
        scatter_figure(&path, "", &names(2), &[blobs("", 10, 2, 4)]).expect("figure renders");
        assert!(
            fs::read(&path)
                .expect("png written")
                .starts_with(b"\x89PNG")
        );
        assert_eq!(listing(dir.path()), ["e.png"]);
    }

    #[test]
    fn single_point_and_unused_names_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let panel = ScatterPanel {
            x: vec![1.0],
            y: vec![-2.0],
            labels: vec![4],
            ..ScatterPanel::default()
        };
        scatter_figure(&dir.path().join("p.svg"), "", &names(12), &[panel])
            .expect("figure renders");
    }

    #[test]
    fn unsupported_extension_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["e.pdf", "e", "e.png.tmp"] {
            let r = scatter_figure(
                &dir.path().join(name),
                "t",
                &names(2),
                &[blobs("", 10, 2, 5)],
            );
            assert!(
                matches!(r, Err(Error::UnsupportedExtension { .. })),
                "{name}: {r:?}"
            );
        }
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn bad_panels_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.png");
        let good = blobs("p", 10, 2, 6);
        let draw =
            |panel: ScatterPanel| scatter_figure(&path, "", &names(2), &[good.clone(), panel]);

        let r = scatter_figure(&path, "", &names(2), &[]);
        assert!(matches!(r, Err(Error::NoPanels { .. })), "{r:?}");

        let mut p = good.clone();
        p.y.pop();
        let r = draw(p);
        assert!(
            matches!(
                r,
                Err(Error::PointCountMismatch {
                    x_len: 10,
                    y_len: 9,
                    labels_len: 10,
                    ..
                })
            ),
            "{r:?}"
        );

        let mut p = good.clone();
        p.labels.push(0);
        let r = draw(p);
        assert!(
            matches!(r, Err(Error::PointCountMismatch { labels_len: 11, .. })),
            "{r:?}"
        );

        let r = draw(ScatterPanel {
            title: "empty".into(),
            ..ScatterPanel::default()
        });
        assert!(
            matches!(&r, Err(Error::NoPoints { panel }) if panel == "empty"),
            "{r:?}"
        );

        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut p = good.clone();
            p.x[3] = bad;
            let r = draw(p);
            assert!(
                matches!(r, Err(Error::NonFinitePoint { index: 3, .. })),
                "{r:?}"
            );
            let mut p = good.clone();
            p.y[7] = bad;
            let r = draw(p);
            assert!(
                matches!(r, Err(Error::NonFinitePoint { index: 7, .. })),
                "{r:?}"
            );
        }

        let mut p = good.clone();
        p.labels[5] = 2;
        let r = draw(p);
        assert!(
            matches!(
                &r,
                Err(Error::LabelOutOfRange {
                    panel,
                    index: 5,
                    label: 2,
                    n_names: 2,
                }) if panel == "p"
            ),
            "{r:?}"
        );
        let r = scatter_figure(&path, "", &[], std::slice::from_ref(&good));
        assert!(
            matches!(
                r,
                Err(Error::LabelOutOfRange {
                    index: 0,
                    n_names: 0,
                    ..
                })
            ),
            "{r:?}"
        );

        assert!(
            listing(dir.path()).is_empty(),
            "nothing written for bad input"
        );
    }

    #[test]
    fn missing_directory_is_a_draw_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no/such/dir/e.png");
        let r = scatter_figure(&path, "t", &names(2), &[blobs("", 10, 2, 7)]);
        assert!(
            matches!(&r, Err(Error::Draw { path: p, .. }) if p == &path),
            "{r:?}"
        );
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn error_messages_carry_values() {
        let e = Error::PointCountMismatch {
            panel: "latent".into(),
            x_len: 3,
            y_len: 3,
            labels_len: 2,
        };
        assert_eq!(
            e.to_string(),
            "scatter panel \"latent\" has 3 x values, 3 y values and 2 labels; all three must be equal"
        );
        let e = Error::LabelOutOfRange {
            panel: "latent".into(),
            index: 17,
            label: 5,
            n_names: 3,
        };
        assert_eq!(
            e.to_string(),
            "point 17 in scatter panel \"latent\" has label 5, but only 3 label names were given"
        );
    }

    #[test]
    fn draw_order_is_a_fixed_permutation() {
        let order = draw_order(1000);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert!(sorted.iter().copied().eq(0..1000), "a permutation");
        assert_eq!(order, draw_order(1000), "deterministic");
        assert_ne!(order[..10], sorted[..10], "shuffled");
        assert!(draw_order(0).is_empty());
        assert_eq!(draw_order(1), [0]);
    }

    #[test]
    fn draw_order_interleaves_sorted_labels() {
        // Input sorted by label, 3000 points in three equal groups: every
        // tenth of the drawing order holds each label about equally, so no
        // label ends up on top.
        let n = 3000;
        let order = draw_order(n);
        for chunk in order.chunks(n / 10) {
            let mut counts = [0usize; 3];
            for &i in chunk {
                counts[i * 3 / n] += 1;
            }
            assert!(
                counts.iter().all(|&c| (70..=130).contains(&c)),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn legend_fits_twelve_long_names_in_one_column() {
        ensure_font().expect("font");
        let names: Vec<String> = (0..12).map(|i| format!("CD14+ Monocytes {i:>4}")).collect();
        assert_eq!(names[11].chars().count(), 20);
        let legend = Legend::new(&names);
        assert_eq!((legend.columns, legend.rows), (1, 12));
        assert!(legend.height() <= PANEL_HEIGHT - 2 * MARGIN);
        assert!(
            (150..300).contains(&legend.text_width),
            "measured, not guessed: {}",
            legend.text_width
        );
    }

    #[test]
    fn legend_wraps_many_names_into_columns() {
        ensure_font().expect("font");
        let names = names(40);
        let legend = Legend::new(&names);
        assert!(legend.columns >= 3, "{}", legend.columns);
        assert!(legend.rows * legend.columns >= 40);
        assert!(legend.height() <= PANEL_HEIGHT - 2 * MARGIN);
        let one = Legend::new(&names[..1]);
        assert!(legend.width() > 2 * one.width());
    }

    #[test]
    fn point_radius_shrinks_for_large_clouds() {
        assert_eq!(point_radius(100), 3);
        assert_eq!(point_radius(5000), 3);
        assert_eq!(point_radius(20000), 2);
    }
}
