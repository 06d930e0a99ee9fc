//! Heatmaps of a matrix of counts, such as a confusion matrix of true labels
//! (rows) against assigned clusters (columns).
//!
//! Each entry is one cell, coloured on a sequential scale from near-white
//! (0) to dark blue (the largest value), with its value printed in the
//! middle: dark text on light cells, white text on dark ones. Row 0 is the top row, as the
//! matrix is written. Both axes are category axes (see `axis`) with every
//! row and column name labelled, and a colour bar right of the plot shows
//! the scale from 0 to the largest value under its caption. The figure grows
//! beyond a standard panel when the names, the printed values or the number
//! of rows need more room, so labels never overlap and values always fit
//! their cells.
//!
//! As in `line`, input is validated up front (parameter errors never touch the
//! file system), then rendered through the shared atomic writer in `figure`.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{CategoryAxis, tick_label};
use crate::error::{Error, Result};
use crate::figure::{
    AXIS_LABEL_SIZE, DrawError, Format, LEGEND_SIZE, MARGIN, PANEL_HEIGHT, PANEL_WIDTH, PanelText,
    Render, TICK_LABEL_SIZE, TITLE_HEIGHT, draw_title, ensure_font, font, panel_chart,
    write_atomic,
};

/// A matrix of non-negative values with named rows and columns, drawn by
/// [`heatmap_figure`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Heatmap {
    /// Figure title, drawn above the plot; empty for none.
    pub title: String,
    /// Label of the x-axis, which names the columns (e.g. "assigned
    /// cluster"); empty for none.
    pub x_label: String,
    /// Label of the y-axis, which names the rows (e.g. "true label"); empty
    /// for none.
    pub y_label: String,
    /// One name per row, listed top to bottom on the y-axis.
    pub row_names: Vec<String>,
    /// One name per column, listed left to right on the x-axis.
    pub col_names: Vec<String>,
    /// The values, row-major: one row per row name, each with one value per
    /// column name; finite and non-negative (typically counts).
    pub values: Vec<Vec<f64>>,
    /// Caption of the colour bar, naming what the values count (e.g.
    /// "cells"); empty for none.
    pub value_label: String,
}

/// Writes `heatmap` to `path`: one cell per value, coloured from near-white
/// (0) to dark blue (the largest value) and labelled with the value (as an
/// integer when it is one, otherwise to four significant digits), row names
/// on the y-axis top to bottom, column names on the x-axis left to right,
/// the axis labels and the title, and a colour bar from 0 to the largest
/// value, captioned with `value_label`, right of the plot.
///
/// The format is chosen by the extension, `.png` or `.svg` (any case). The
/// plot is 900 x 600 pixels, larger when many rows or columns, long names or
/// long values need more room. The file is written atomically: rendered to a
/// hidden temporary file in the same directory and renamed into place.
///
/// # Errors
/// Parameter errors, checked before any file is touched:
/// [`Error::UnsupportedExtension`], [`Error::EmptyHeatmap`],
/// [`Error::HeatmapRowCountMismatch`], [`Error::HeatmapRowLengthMismatch`]
/// (ragged rows included), [`Error::InvalidHeatmapValue`] (NaN, infinite or
/// negative). Run-time errors: [`Error::Font`], [`Error::Draw`] (including a
/// missing output directory), [`Error::Io`].
pub fn heatmap_figure(path: &Path, heatmap: &Heatmap) -> Result<()> {
    Format::from_path(path)?;
    let max = validate(heatmap)?;
    // The figure's size depends on the text widths.
    ensure_font()?;
    let scale_max = if max > 0.0 { max } else { 1.0 };
    let layout = Layout::new(heatmap, scale_max);
    let colour_bar = ColourBar::new(&heatmap.value_label, scale_max);
    let figure = HeatmapFigure {
        heatmap,
        rows_bottom_up: heatmap.row_names.iter().rev().cloned().collect(),
        scale_max,
        layout,
        colour_bar,
    };
    write_atomic(path, &figure)
}

/// Checks the input and returns the largest value: at least one cell, one
/// row per row name, one value per column name in every row, every value
/// finite and non-negative.
fn validate(heatmap: &Heatmap) -> Result<f64> {
    let figure = || heatmap.title.clone();
    let values = &heatmap.values;
    if values.iter().all(Vec::is_empty) {
        return Err(Error::EmptyHeatmap { figure: figure() });
    }
    if values.len() != heatmap.row_names.len() {
        return Err(Error::HeatmapRowCountMismatch {
            figure: figure(),
            n_rows: values.len(),
            n_row_names: heatmap.row_names.len(),
        });
    }
    let n_cols = heatmap.col_names.len();
    let mut max = 0.0f64;
    for (row_index, (row, name)) in values.iter().zip(&heatmap.row_names).enumerate() {
        if row.len() != n_cols {
            return Err(Error::HeatmapRowLengthMismatch {
                figure: figure(),
                row: name.clone(),
                row_index,
                n_values: row.len(),
                n_col_names: n_cols,
            });
        }
        for (column_index, (&value, column)) in row.iter().zip(&heatmap.col_names).enumerate() {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::InvalidHeatmapValue {
                    figure: figure(),
                    row: name.clone(),
                    column: column.clone(),
                    row_index,
                    column_index,
                    value,
                });
            }
            max = max.max(value);
        }
    }
    Ok(max)
}

/// The text printed for `value` (finite, non-negative): the integer when it
/// is integral (`12.0` -> `"12"`), otherwise at most four significant digits
/// (`0.25` -> `"0.25"`, `2.0 / 3.0` -> `"0.6667"`).
fn value_text(value: f64) -> String {
    if value == 0.0 {
        // Also -0.0, which would print as "-0".
        "0".to_owned()
    } else if value.fract() == 0.0 && value < 1e15 {
        format!("{value:.0}")
    } else {
        tick_label(value)
    }
}

/// ColorBrewer's sequential "Blues" (as in matplotlib), from near-white to
/// dark blue, interpolated linearly between the stops.
const BLUES: [RGBColor; 9] = [
    RGBColor(0xF7, 0xFB, 0xFF),
    RGBColor(0xDE, 0xEB, 0xF7),
    RGBColor(0xC6, 0xDB, 0xEF),
    RGBColor(0x9E, 0xCA, 0xE1),
    RGBColor(0x6B, 0xAE, 0xD6),
    RGBColor(0x42, 0x92, 0xC6),
    RGBColor(0x21, 0x71, 0xB5),
    RGBColor(0x08, 0x51, 0x9C),
    RGBColor(0x08, 0x30, 0x6B),
];

/// The colour of `t` in 0..=1 (clamped) on the [`BLUES`] scale.
fn scale_colour(t: f64) -> RGBColor {
    let pos = t.clamp(0.0, 1.0) * (BLUES.len() - 1) as f64;
    let i = (pos.floor() as usize).min(BLUES.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (BLUES[i], BLUES[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Near-black text for light cells.
const DARK_TEXT: RGBColor = RGBColor(0x20, 0x20, 0x20);

/// Text colour that reads on `background`: white on dark colours, near-black
/// on light ones (by luma, Rec. 601 weights).
fn text_colour(background: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = background;
    let luma = (0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b)) / 255.0;
    if luma < 0.55 { WHITE } else { DARK_TEXT }
}

/// Size of the values printed in the cells.
const VALUE_SIZE: f64 = TICK_LABEL_SIZE;
/// Least space between the names of neighbouring columns, in pixels.
const NAME_GAP: u32 = 16;
/// Least space left and right of a printed value inside its cell.
const VALUE_PAD: u32 = 8;
/// Narrowest cell the figure widens for.
const MIN_CELL_WIDTH: u32 = 40;
/// Lowest cell the figure grows for: a value and some room above and below.
const MIN_CELL_HEIGHT: u32 = VALUE_SIZE as u32 + 14;
/// Generous height of everything in the panel above and below the plot:
/// margins, the column names and the x-axis label.
const AROUND_PLOT: u32 = 2 * MARGIN + 80;

/// Width of `text` at `size` pixels with the embedded font (registered by
/// [`ensure_font`]); a generous 0.7 em per character if it cannot be measured.
fn text_width(text: &str, size: f64) -> u32 {
    font(size).box_size(text).map_or_else(
        |_| (0.7 * size * text.chars().count() as f64).ceil() as u32,
        |(w, _)| w,
    )
}

/// Size of the panel holding the plot: [`PANEL_WIDTH`] x [`PANEL_HEIGHT`], or
/// more when the cells need more room for the column names, the values, or
/// the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    width: u32,
    height: u32,
}

impl Layout {
    /// The font must be registered ([`ensure_font`]) for the text widths to
    /// be measured.
    fn new(heatmap: &Heatmap, scale_max: f64) -> Self {
        let widest = |names: &[String]| {
            names
                .iter()
                .map(|name| text_width(name, TICK_LABEL_SIZE))
                .max()
                .unwrap_or(0)
        };
        let col_name = widest(&heatmap.col_names);
        let row_name = widest(&heatmap.row_names);
        let value = heatmap
            .values
            .iter()
            .flatten()
            .map(|&v| text_width(&value_text(v), VALUE_SIZE))
            .max()
            .unwrap_or(0)
            .max(text_width(&value_text(scale_max), VALUE_SIZE));
        let cell_width = (col_name + NAME_GAP)
            .max(value + 2 * VALUE_PAD)
            .max(MIN_CELL_WIDTH);
        // As `panel_chart` sizes the y label area, plus a little slack.
        let y_label_area = 12
            + row_name
            + if heatmap.y_label.is_empty() {
                0
            } else {
                16 + AXIS_LABEL_SIZE as u32
            };
        let beside_plot = 2 * MARGIN + y_label_area + 8;
        let n_cols = heatmap.col_names.len() as u32;
        let n_rows = heatmap.row_names.len() as u32;
        Self {
            width: PANEL_WIDTH.max(beside_plot + n_cols * cell_width),
            height: PANEL_HEIGHT.max(AROUND_PLOT + n_rows * MIN_CELL_HEIGHT),
        }
    }
}

struct HeatmapFigure<'a> {
    heatmap: &'a Heatmap,
    /// The row names bottom to top, as the y-axis counts: row 0 is on top.
    rows_bottom_up: Vec<String>,
    /// The value drawn in the darkest colour: the largest value, or 1 when
    /// all are 0.
    scale_max: f64,
    layout: Layout,
    colour_bar: ColourBar,
}

impl Render for HeatmapFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let title = if self.heatmap.title.is_empty() {
            0
        } else {
            TITLE_HEIGHT
        };
        (
            self.layout.width + self.colour_bar.width(),
            self.layout.height + title,
        )
    }

    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawError> {
        let h = self.heatmap;
        let body = draw_title(root, &h.title)?;
        let (plot_area, bar_area) = body.split_horizontally(self.layout.width);
        let text = PanelText {
            title: "",
            x_label: &h.x_label,
            y_label: &h.y_label,
        };
        let mut chart = panel_chart(
            &plot_area,
            &text,
            CategoryAxis::new(&h.col_names),
            CategoryAxis::new(&self.rows_bottom_up),
        )?;
        let top = h.values.len() as f64 - 1.0;
        let cells = h.values.iter().enumerate().flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(move |(j, &v)| (j as f64, top - i as f64, v))
        });
        chart.draw_series(cells.clone().map(|(x, y, v)| {
            let colour = scale_colour(v / self.scale_max);
            let mut cell =
                Rectangle::new([(x - 0.5, y + 0.5), (x + 0.5, y - 0.5)], colour.filled());
            // A pixel of white between neighbouring cells.
            cell.set_margin(1, 0, 1, 0);
            cell
        }))?;
        let centred = TextStyle::from(font(VALUE_SIZE)).pos(Pos::new(HPos::Center, VPos::Center));
        let (white, dark) = (centred.color(&WHITE), centred.color(&DARK_TEXT));
        chart.draw_series(cells.map(|(x, y, v)| {
            let on_dark = text_colour(scale_colour(v / self.scale_max)) == WHITE;
            let style = if on_dark { &white } else { &dark };
            Text::new(value_text(v), (x, y), style.clone())
        }))?;
        let plot_rows = chart.plotting_area().get_pixel_range().1;
        self.colour_bar.draw(&bar_area, &plot_rows)
    }
}

/// Width of the colour bar's strip of colour.
const BAR_WIDTH: u32 = 24;
/// Length of the tick marks right of the strip.
const BAR_TICK: u32 = 6;
/// Space between a tick mark and its label.
const BAR_TEXT_GAP: u32 = 6;
/// Height of the band above the strip holding the caption, which keeps the
/// caption clear of the label at the top of the strip.
const CAPTION_BAND: u32 = 48;
/// Distance of the caption's middle below the top of the plot.
const CAPTION_MIDDLE: i32 = 14;
/// Grey of the strip's outline and tick marks.
const BAR_OUTLINE: RGBColor = RGBColor(0x60, 0x60, 0x60);

/// The colour bar right of the plot: a vertical strip running from white
/// (0, bottom) to dark blue (the largest value, top), both ends labelled,
/// under its caption.
struct ColourBar {
    caption: String,
    /// The labels of the bottom (0) and top (the largest value) ends.
    labels: [String; 2],
    /// Width of the widest end label in pixels.
    label_width: u32,
    /// Width of the caption in pixels.
    caption_width: u32,
}

impl ColourBar {
    /// Lays out the bar for the scale 0..=`scale_max`; the font must be
    /// registered ([`ensure_font`]) for the text widths to be measured.
    fn new(caption: &str, scale_max: f64) -> Self {
        let labels = [value_text(0.0), value_text(scale_max)];
        let label_width = labels
            .iter()
            .map(|l| text_width(l, TICK_LABEL_SIZE))
            .max()
            .unwrap_or(0);
        Self {
            caption: caption.to_owned(),
            labels,
            label_width,
            caption_width: text_width(caption, LEGEND_SIZE),
        }
    }

    /// Width of the colour bar's column, margins included.
    fn width(&self) -> u32 {
        let strip = BAR_WIDTH + BAR_TICK + BAR_TEXT_GAP + self.label_width;
        2 * MARGIN + strip.max(self.caption_width)
    }

    /// Draws the bar into `area`, alongside `plot_rows` (pixel rows of the
    /// whole figure), below the caption.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        plot_rows: &Range<i32>,
    ) -> std::result::Result<(), DrawError> {
        let base = area.get_base_pixel().1;
        let mut top = plot_rows.start - base;
        let bottom = plot_rows.end - base;
        let left = MARGIN as i32;
        if !self.caption.is_empty() {
            let style = TextStyle::from(font(LEGEND_SIZE)).pos(Pos::new(HPos::Left, VPos::Center));
            area.draw_text(&self.caption, &style, (left, top + CAPTION_MIDDLE))?;
            top += CAPTION_BAND as i32;
        }
        let right = left + BAR_WIDTH as i32;
        let span = (bottom - top).max(1);
        for y in top..bottom {
            let t = f64::from(bottom - 1 - y) / f64::from((span - 1).max(1));
            area.draw(&Rectangle::new(
                [(left, y), (right, y + 1)],
                scale_colour(t).filled(),
            ))?;
        }
        area.draw(&Rectangle::new(
            [(left, top), (right, bottom)],
            BAR_OUTLINE.stroke_width(1),
        ))?;
        let style = TextStyle::from(font(TICK_LABEL_SIZE)).pos(Pos::new(HPos::Left, VPos::Center));
        let tick_end = right + BAR_TICK as i32;
        for (label, y) in self.labels.iter().zip([bottom, top]) {
            area.draw(&PathElement::new(
                vec![(right, y), (tick_end, y)],
                BAR_OUTLINE.stroke_width(1),
            ))?;
            area.draw_text(label, &style, (tick_end + BAR_TEXT_GAP as i32, y))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{listing, png_size};
    use std::fs;

    /// True labels against assigned clusters: 3 labels, 4 clusters.
    fn confusion() -> Heatmap {
        Heatmap {
            title: "Clusters against true labels".into(),
            x_label: "assigned cluster".into(),
            y_label: "true label".into(),
            row_names: vec!["B cells".into(), "T cells & NK".into(), "monocytes".into()],
            col_names: vec![
                "cluster 0".into(),
                "cluster 1".into(),
                "cluster 2".into(),
                "cluster 3".into(),
            ],
            values: vec![
                vec![412.0, 3.0, 0.0, 17.0],
                vec![5.0, 1287.0, 31.0, 0.0],
                vec![0.0, 12.0, 8.0, 655.0],
            ],
            value_label: "cells".into(),
        }
    }

    #[test]
    fn renders_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confusion.png");
        heatmap_figure(&path, &confusion()).expect("figure renders");
        let bytes = fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic");
        assert!(
            bytes.len() > 20_000,
            "a figure with text is not tiny: {} bytes",
            bytes.len()
        );
        let (w, h) = png_size(&bytes);
        assert_eq!(h, PANEL_HEIGHT + TITLE_HEIGHT);
        assert!(
            (PANEL_WIDTH + 50..PANEL_WIDTH + 200).contains(&w),
            "plot and a colour bar column: {w} px"
        );
        assert_eq!(
            listing(dir.path()),
            ["confusion.png"],
            "no temporary file left"
        );
    }

    #[test]
    fn renders_svg_with_names_values_and_colours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confusion.svg");
        let mut heatmap = confusion();
        heatmap.values[2][2] = 2.5;
        heatmap_figure(&path, &heatmap).expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "Clusters against true labels",
            "assigned cluster",
            "true label",
            "\nB cells\n",
            "\nT cells &amp; NK\n",
            "\nmonocytes\n",
            "\ncluster 0\n",
            "\ncluster 3\n",
            "\ncells\n",
            "\n412\n",
            "\n1287\n",
            "\n2.5\n",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        // Zeros are printed in their cells; the colour bar's 0 is one more.
        assert_eq!(svg.matches("\n0\n").count(), 3 + 1);
        // The largest value is printed in its cell and at the top of the bar.
        assert_eq!(svg.matches("\n1287\n").count(), 2);
        // The largest cell is the darkest blue; its text is white.
        let hex = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        assert!(svg.contains(&hex(BLUES[8])), "SVG lacks the darkest blue");
        assert!(svg.contains("fill=\"#FFFFFF\""), "white text");
        assert!(svg.contains(&hex(DARK_TEXT)), "dark text");
        assert_eq!(listing(dir.path()), ["confusion.svg"]);
    }

    #[test]
    fn values_are_printed_as_integers_when_integral() {
        assert_eq!(value_text(0.0), "0");
        assert_eq!(value_text(-0.0), "0");
        assert_eq!(value_text(12.0), "12");
        assert_eq!(value_text(1_234_567.0), "1234567");
        assert_eq!(value_text(0.25), "0.25");
        assert_eq!(value_text(2.0 / 3.0), "0.6667");
        assert_eq!(value_text(12.5), "12.5");
    }

    #[test]
    fn colour_scale_runs_from_white_to_dark_blue() {
        assert_eq!(scale_colour(0.0), BLUES[0]);
        assert_eq!(scale_colour(1.0), BLUES[8]);
        assert_eq!(scale_colour(-1.0), BLUES[0], "clamped");
        assert_eq!(scale_colour(2.0), BLUES[8], "clamped");
        assert_eq!(scale_colour(0.5), BLUES[4], "a stop");
        // Darker (smaller sum of channels) as the value grows.
        let sum = |c: RGBColor| u32::from(c.0) + u32::from(c.1) + u32::from(c.2);
        let sums: Vec<u32> = (0..=100)
            .map(|i| sum(scale_colour(f64::from(i) / 100.0)))
            .collect();
        assert!(sums.windows(2).all(|w| w[1] <= w[0]), "{sums:?}");
        assert_eq!(text_colour(scale_colour(0.0)), DARK_TEXT);
        assert_eq!(text_colour(scale_colour(0.3)), DARK_TEXT);
        assert_eq!(text_colour(scale_colour(0.8)), WHITE);
        assert_eq!(text_colour(scale_colour(1.0)), WHITE);
    }

    #[test]
    fn large_matrices_and_long_names_enlarge_the_figure() {
        ensure_font().expect("font");
        let small = Layout::new(&confusion(), 1287.0);
        assert_eq!(
            small,
            Layout {
                width: PANEL_WIDTH,
                height: PANEL_HEIGHT
            }
        );
        let n = 30;
        let names: Vec<String> = (0..n).map(|i| format!("long cell type {i}")).collect();
        let big = Heatmap {
            row_names: names.clone(),
            col_names: names.clone(),
            values: vec![vec![123_456.0; n]; n],
            ..Heatmap::default()
        };
        let layout = Layout::new(&big, 123_456.0);
        let name = text_width("long cell type 29", TICK_LABEL_SIZE);
        assert!(
            layout.width >= n as u32 * (name + NAME_GAP),
            "{} px for names {name} px wide",
            layout.width
        );
        assert!(layout.height >= n as u32 * MIN_CELL_HEIGHT);
        let dir = tempfile::tempdir().expect("tempdir");
        heatmap_figure(&dir.path().join("big.png"), &big).expect("renders");
    }

    #[test]
    fn all_zero_and_single_cell_matrices_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut heatmap = confusion();
        heatmap.values = vec![vec![0.0; 4]; 3];
        heatmap.title = String::new();
        heatmap.value_label = String::new();
        heatmap_figure(&dir.path().join("zero.svg"), &heatmap).expect("renders");
        let one = Heatmap {
            row_names: vec!["a".into()],
            col_names: vec!["b".into()],
            values: vec![vec![7.0]],
            ..Heatmap::default()
        };
        heatmap_figure(&dir.path().join("one.png"), &one).expect("renders");
        assert_eq!(listing(dir.path()), ["one.png", "zero.svg"]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.png");
        let good = confusion();
        let title = good.title.clone();

        let r = heatmap_figure(&dir.path().join("bad.pdf"), &good);
        assert!(
            matches!(r, Err(Error::UnsupportedExtension { .. })),
            "{r:?}"
        );

        let r = heatmap_figure(&path, &Heatmap::default());
        assert!(matches!(r, Err(Error::EmptyHeatmap { .. })), "{r:?}");
        let mut h = good.clone();
        h.values = vec![vec![]; 3];
        h.col_names.clear();
        let r = heatmap_figure(&path, &h);
        assert!(
            matches!(&r, Err(Error::EmptyHeatmap { figure }) if figure == &title),
            "{r:?}"
        );

        let mut h = good.clone();
        h.row_names.pop();
        let r = heatmap_figure(&path, &h);
        assert!(
            matches!(
                r,
                Err(Error::HeatmapRowCountMismatch {
                    n_rows: 3,
                    n_row_names: 2,
                    ..
                })
            ),
            "{r:?}"
        );

        // Ragged rows.
        let mut h = good.clone();
        h.values[1].pop();
        let r = heatmap_figure(&path, &h);
        assert!(
            matches!(
                &r,
                Err(Error::HeatmapRowLengthMismatch {
                    row,
                    row_index: 1,
                    n_values: 3,
                    n_col_names: 4,
                    ..
                }) if row == "T cells & NK"
            ),
            "{r:?}"
        );
        // Every row one longer than there are column names.
        let mut h = good.clone();
        h.col_names.pop();
        let r = heatmap_figure(&path, &h);
        assert!(
            matches!(
                r,
                Err(Error::HeatmapRowLengthMismatch {
                    row_index: 0,
                    n_values: 4,
                    n_col_names: 3,
                    ..
                })
            ),
            "{r:?}"
        );

        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -1e-300] {
            let mut h = good.clone();
            h.values[2][1] = bad;
            let r = heatmap_figure(&path, &h);
            assert!(
                matches!(
                    &r,
                    Err(Error::InvalidHeatmapValue {
                        row,
                        column,
                        row_index: 2,
                        column_index: 1,
                        ..
                    }) if row == "monocytes" && column == "cluster 1"
                ),
                "{bad}: {r:?}"
            );
        }

        assert!(
            listing(dir.path()).is_empty(),
            "nothing written for bad input"
        );
    }

    #[test]
    fn missing_directory_is_a_draw_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no/such/dir/h.svg");
        let r = heatmap_figure(&path, &confusion());
        assert!(
            matches!(&r, Err(Error::Draw { path: p, .. }) if p == &path),
            "{r:?}"
        );
    }

    #[test]
    fn error_messages_carry_values() {
        let e = Error::HeatmapRowCountMismatch {
            figure: "confusion".into(),
            n_rows: 3,
            n_row_names: 2,
        };
        assert_eq!(
            e.to_string(),
            "heatmap \"confusion\" has 3 rows of values but 2 row names"
        );
        let e = Error::HeatmapRowLengthMismatch {
            figure: "confusion".into(),
            row: "B cells".into(),
            row_index: 0,
            n_values: 3,
            n_col_names: 4,
        };
        assert_eq!(
            e.to_string(),
            "row \"B cells\" (index 0) of heatmap \"confusion\" has 3 values \
             but there are 4 column names"
        );
        let e = Error::InvalidHeatmapValue {
            figure: "confusion".into(),
            row: "B cells".into(),
            column: "cluster 2".into(),
            row_index: 0,
            column_index: 2,
            value: -1.0,
        };
        assert_eq!(
            e.to_string(),
            "heatmap \"confusion\" has value -1 in row \"B cells\", column \"cluster 2\" \
             (indices 0, 2); values must be finite and non-negative"
        );
        assert_eq!(
            Error::EmptyHeatmap {
                figure: "confusion".into()
            }
            .to_string(),
            "heatmap \"confusion\" has no cells"
        );
    }
}
