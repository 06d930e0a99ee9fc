//! Grouped bar charts: one group per category, one bar per series side by
//! side, such as the mean decoded rate of each feature beside its true rate,
//! or a metric per likelihood for several models.
//!
//! Categories sit at x = 0, 1, ... on a category axis (see `axis`), labelled
//! under their group. The y-axis always includes 0, the bars' baseline: bars
//! of positive values grow up from it, bars of negative values (ELBOs) grow
//! down, and a black line marks 0 when it lies inside the plot. The figure
//! widens when the category names or the bars would not fit a standard
//! panel, so labels never overlap. One legend column right of the plot, as
//! in scatter figures, so it never hides a bar.
//!
//! As in `line`, input is validated up front (parameter errors never touch the
//! file system), then rendered through the shared atomic writer in `figure`.

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::{CategoryAxis, PAD_FRACTION};
use crate::error::{Error, Result};
use crate::figure::{
    AXIS_LABEL_SIZE, DrawError, Format, LEGEND_SIZE, MARGIN, PANEL_HEIGHT, PANEL_WIDTH, PanelText,
    Render, TICK_LABEL_SIZE, draw_title, ensure_font, figure_height, font, panel_chart,
    write_atomic,
};
use crate::palette::palette_color;

/// One series of bars: one value per category.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarSeries {
    /// Legend text; a series with an empty label is drawn but not listed.
    pub label: String,
    /// One value per category, in the order of the categories.
    pub values: Vec<f64>,
    /// Index into [`crate::PALETTE`] (wrapping): the same index is the same
    /// colour in every figure.
    pub color: usize,
}

/// Writes a grouped bar chart to `path`: for each of `categories`, one bar
/// per entry of `series` side by side (in the order given), under the figure
/// `title`, with axis labels `x_label` and `y_label` (each empty for none)
/// and a legend naming the series right of the plot.
///
/// The y-axis starts at 0, or below 0 when some value is negative (such bars
/// grow downward from 0). The format is chosen by the extension, `.png` or
/// `.svg` (any case). The plot is 900 x 600 pixels, wider when many
/// categories or series need more room. The file is written atomically:
/// rendered to a hidden temporary file in the same directory and renamed into
/// place.
///
/// # Errors
/// Parameter errors, checked before any file is touched:
/// [`Error::UnsupportedExtension`], [`Error::NoCategories`],
/// [`Error::NoBarSeries`], [`Error::BarCountMismatch`],
/// [`Error::NonFiniteBar`]. Run-time errors: [`Error::Font`], [`Error::Draw`]
/// (including a missing output directory), [`Error::Io`].
pub fn bar_figure(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    series: &[BarSeries],
) -> Result<()> {
    Format::from_path(path)?;
    let y = validate(title, categories, series)?;
    // The figure's width depends on the text widths.
    ensure_font()?;
    let labels: Vec<(&str, usize)> = series
        .iter()
        .filter(|s| !s.label.is_empty())
        .map(|s| (s.label.as_str(), s.color))
        .collect();
    let figure = BarFigure {
        title,
        text: PanelText {
            title: "",
            x_label,
            y_label,
        },
        categories,
        series,
        y,
        plot_width: plot_width(categories, series.len()),
        legend: Legend::new(labels),
    };
    write_atomic(path, &figure)
}

/// Checks the input and returns the y range: every series has one finite
/// value per category.
fn validate(title: &str, categories: &[String], series: &[BarSeries]) -> Result<Range<f64>> {
    let figure = || title.to_owned();
    if categories.is_empty() {
        return Err(Error::NoCategories { figure: figure() });
    }
    if series.is_empty() {
        return Err(Error::NoBarSeries { figure: figure() });
    }
    let (mut min, mut max) = (0.0f64, 0.0f64);
    for s in series {
        if s.values.len() != categories.len() {
            return Err(Error::BarCountMismatch {
                figure: figure(),
                series: s.label.clone(),
                n_values: s.values.len(),
                n_categories: categories.len(),
            });
        }
        for (index, (&value, category)) in s.values.iter().zip(categories).enumerate() {
            if !value.is_finite() {
                return Err(Error::NonFiniteBar {
                    figure: figure(),
                    series: s.label.clone(),
                    category: category.clone(),
                    index,
                    value,
                });
            }
            (min, max) = (min.min(value), max.max(value));
        }
    }
    Ok(bar_range(min, max))
}

/// The y range of bars whose values span `min..=max`, both ends including 0:
/// padded away from 0 only, so the baseline sits on the axis when no value
/// is negative (or on the top edge when none is positive). All zeros give 0..1.
fn bar_range(min: f64, max: f64) -> Range<f64> {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let span = hi - lo;
    if span <= 0.0 {
        return 0.0..1.0;
    }
    let start = if lo < 0.0 {
        lo - PAD_FRACTION * span
    } else {
        0.0
    };
    let end = if hi > 0.0 {
        hi + PAD_FRACTION * span
    } else {
        0.0
    };
    start..end
}

/// Fraction of a category's slot taken by its group of bars.
const GROUP_WIDTH: f64 = 0.8;
/// Narrowest bar the figure widens for, in pixels.
const MIN_BAR: u32 = 14;
/// Least space between the names of neighbouring categories, in pixels.
const NAME_GAP: u32 = 16;
/// Generous width of everything in the panel beside the plot: margins, tick
/// labels such as "-1.235e6", and the y-axis label.
const BESIDE_PLOT: u32 = 2 * MARGIN + 12 + 110 + 16 + AXIS_LABEL_SIZE as u32;

/// Width of `text` at `size` pixels with the embedded font (registered by
/// [`ensure_font`]); a generous 0.7 em per character if it cannot be measured.
fn text_width(text: &str, size: f64) -> u32 {
    font(size).box_size(text).map_or_else(
        |_| (0.7 * size * text.chars().count() as f64).ceil() as u32,
        |(w, _)| w,
    )
}

/// Width of the panel holding the plot: [`PANEL_WIDTH`], or more when each
/// category's slot must be wider to hold its name or `n_series` bars of
/// [`MIN_BAR`] pixels.
fn plot_width(categories: &[String], n_series: usize) -> u32 {
    let widest_name = categories
        .iter()
        .map(|c| text_width(c, TICK_LABEL_SIZE))
        .max()
        .unwrap_or(0);
    let for_bars = (f64::from(MIN_BAR) * n_series as f64 / GROUP_WIDTH).ceil() as u32;
    let slot = (widest_name + NAME_GAP).max(for_bars);
    PANEL_WIDTH.max(BESIDE_PLOT + slot * categories.len() as u32)
}

struct BarFigure<'a> {
    title: &'a str,
    text: PanelText<'a>,
    categories: &'a [String],
    series: &'a [BarSeries],
    y: Range<f64>,
    plot_width: u32,
    legend: Legend<'a>,
}

impl Render for BarFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (
            self.plot_width + self.legend.width(),
            figure_height(self.title),
        )
    }

    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawError> {
        let body = draw_title(root, self.title)?;
        let (plot_area, legend_area) = body.split_horizontally(self.plot_width);
        let mut chart = panel_chart(
            &plot_area,
            &self.text,
            CategoryAxis::new(self.categories),
            RangedCoordf64::from(self.y.clone()),
        )?;
        let bar_width = GROUP_WIDTH / self.series.len() as f64;
        for (j, s) in self.series.iter().enumerate() {
            let style = palette_color(s.color).filled();
            chart.draw_series(s.values.iter().enumerate().map(|(i, &v)| {
                let left = i as f64 - GROUP_WIDTH / 2.0 + j as f64 * bar_width;
                let mut bar = Rectangle::new([(left, 0.0), (left + bar_width, v)], style);
                // A pixel of white between neighbouring bars.
                bar.set_margin(0, 0, 1, 1);
                bar
            }))?;
        }
        if self.y.start < 0.0 {
            let right = self.categories.len() as f64 - 0.5;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(-0.5, 0.0), (right, 0.0)],
                BLACK.stroke_width(1),
            )))?;
        }
        let plot_rows = chart.plotting_area().get_pixel_range().1;
        self.legend.draw(&legend_area, &plot_rows)
    }
}

/// Height of one legend entry in pixels.
const LEGEND_ROW: u32 = 32;
/// Side of the legend's colour swatch.
const SWATCH: u32 = 18;
/// Space between a swatch and its name.
const LEGEND_TEXT_GAP: u32 = 10;
/// Space between legend columns.
const LEGEND_COLUMN_GAP: u32 = 28;

/// The legend: every labelled series with its colour swatch, in as few
/// columns as fit the panel height, filled top to bottom, then left to right.
/// No labelled series: no legend, and no width.
struct Legend<'a> {
    /// Label and palette index of each listed series.
    entries: Vec<(&'a str, usize)>,
    /// Width of the widest label in pixels.
    text_width: u32,
    rows: usize,
    columns: usize,
}

impl<'a> Legend<'a> {
    /// Lays out `entries`; the font must be registered ([`ensure_font`]) for
    /// the text widths to be measured.
    fn new(entries: Vec<(&'a str, usize)>) -> Self {
        let text_width = entries
            .iter()
            .map(|(label, _)| text_width(label, LEGEND_SIZE))
            .max()
            .unwrap_or(0);
        let max_rows = ((PANEL_HEIGHT - 2 * MARGIN) / LEGEND_ROW).max(1) as usize;
        let columns = entries.len().div_ceil(max_rows);
        let rows = entries.len().div_ceil(columns.max(1));
        Self {
            entries,
            text_width,
            rows,
            columns,
        }
    }

    fn column_width(&self) -> u32 {
        SWATCH + LEGEND_TEXT_GAP + self.text_width
    }

    /// Width of the legend column, margins included; 0 without entries.
    fn width(&self) -> u32 {
        if self.columns == 0 {
            return 0;
        }
        let columns = self.columns as u32;
        2 * MARGIN + columns * self.column_width() + (columns - 1) * LEGEND_COLUMN_GAP
    }

    /// Draws the legend into `area`, vertically centred on `plot_rows` (pixel
    /// rows of the whole figure) as far as `area` allows.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        plot_rows: &Range<i32>,
    ) -> std::result::Result<(), DrawError> {
        let area_height = area.dim_in_pixel().1 as i32;
        let height = (self.rows as u32 * LEGEND_ROW) as i32;
        let centre = (plot_rows.start + plot_rows.end) / 2 - area.get_base_pixel().1;
        let top = (centre - height / 2).clamp(0, (area_height - height).max(0));
        let text = TextStyle::from(font(LEGEND_SIZE)).pos(Pos::new(HPos::Left, VPos::Center));
        let step = (self.column_width() + LEGEND_COLUMN_GAP) as i32;
        let half = SWATCH as i32 / 2;
        for (i, &(label, color)) in self.entries.iter().enumerate() {
            let (column, row) = (i / self.rows, i % self.rows);
            let x = MARGIN as i32 + column as i32 * step;
            let y = top + row as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            let swatch = [(x, y - half), (x + SWATCH as i32, y + half)];
            area.draw(&Rectangle::new(swatch, palette_color(color).filled()))?;
            area.draw_text(label, &text, (x + (SWATCH + LEGEND_TEXT_GAP) as i32, y))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{listing, png_size};
    use approx::assert_abs_diff_eq;
    use std::fs;

    fn features(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("feature {i}")).collect()
    }

    /// True and decoded Poisson rates of ten features.
    fn rates() -> (Vec<String>, Vec<BarSeries>) {
        let truth: Vec<f64> = (0..10).map(|i| 0.5 + 0.8 * i as f64).collect();
        let decoded: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(i, l)| l * (1.0 + 0.05 * (i as f64 * 1.3).sin()))
            .collect();
        let series = vec![
            BarSeries {
                label: "true λ".into(),
                values: truth,
                color: 0,
            },
            BarSeries {
                label: "decoded mean rate".into(),
                values: decoded,
                color: 1,
            },
        ];
        (features(10), series)
    }

    #[test]
    fn renders_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rates.png");
        let (categories, series) = rates();
        bar_figure(
            &path,
            "Mean decoded rate per feature",
            "feature",
            "rate",
            &categories,
            &series,
        )
        .expect("figure renders");
        let bytes = fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic");
        assert!(
            bytes.len() > 20_000,
            "a figure with text is not tiny: {} bytes",
            bytes.len()
        );
        let (w, h) = png_size(&bytes);
        assert_eq!(h, PANEL_HEIGHT + crate::figure::TITLE_HEIGHT);
        assert!(w > PANEL_WIDTH + 100, "plot and a legend column: {w} px");
        assert_eq!(listing(dir.path()), ["rates.png"], "no temporary file left");
    }

    #[test]
    fn renders_svg_with_text_and_bars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rates.svg");
        let (mut categories, series) = rates();
        categories[3] = "CD3E & CD3D".into();
        bar_figure(
            &path,
            "Poisson rates",
            "feature index",
            "mean rate",
            &categories,
            &series,
        )
        .expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "Poisson rates",
            "feature index",
            "mean rate",
            "\nfeature 1\n",
            "\nfeature 10\n",
            "CD3E &amp; CD3D",
            "true λ",
            "decoded mean rate",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("font-family=\"sans-serif\""));
        // The white background, 2 x 10 bars and 2 legend swatches.
        assert_eq!(svg.matches("<rect").count(), 1 + 20 + 2);
        for i in 0..2 {
            let c = palette_color(i);
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert_eq!(
                svg.matches(&hex).count(),
                11,
                "10 bars and a swatch in {hex}"
            );
        }
        assert_eq!(listing(dir.path()), ["rates.svg"]);
    }

    #[test]
    fn negative_values_grow_down_from_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("elbo.svg");
        let categories: Vec<String> = ["Poisson", "NB", "ZIP", "ZINB"].map(String::from).into();
        let series = [
            BarSeries {
                label: "VAE".into(),
                values: vec![-1040.0, -985.5, -1012.0, -979.0],
                color: 0,
            },
            BarSeries {
                label: String::new(),
                values: vec![-1100.0, -990.0, 20.0, 0.0],
                color: 3,
            },
        ];
        bar_figure(&path, "ELBO", "likelihood", "ELBO", &categories, &series)
            .expect("figure renders");
        let svg = fs::read_to_string(&path).expect("svg written");
        for text in ["Poisson", "NB", "ZIP", "ZINB", "VAE", "likelihood", "-1000"] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        // Only the labelled series is listed.
        assert_eq!(svg.matches("<rect").count(), 1 + 8 + 1);
    }

    #[test]
    fn many_categories_and_long_names_widen_the_figure() {
        crate::figure::ensure_font().expect("font");
        assert_eq!(plot_width(&features(4), 2), PANEL_WIDTH);
        let long: Vec<String> = (0..30).map(|i| format!("long category {i}")).collect();
        let w = plot_width(&long, 2);
        let name = text_width("long category 29", TICK_LABEL_SIZE);
        assert!(
            w >= 30 * (name + NAME_GAP),
            "{w} px for names {name} px wide"
        );
        assert!(
            plot_width(&features(4), 40) > PANEL_WIDTH,
            "40 bars per group"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let series = [BarSeries {
            label: "x".into(),
            values: (0..30).map(f64::from).collect(),
            color: 2,
        }];
        bar_figure(&dir.path().join("w.png"), "", "", "", &long, &series).expect("renders");
    }

    #[test]
    fn y_range_includes_zero_and_pads_away_from_it() {
        let r = bar_range(1.0, 10.0);
        assert_abs_diff_eq!(r.start, 0.0, epsilon = 0.0);
        assert_abs_diff_eq!(r.end, 10.0 + 10.0 * PAD_FRACTION, epsilon = 1e-12);
        let r = bar_range(-1000.0, -900.0);
        assert_abs_diff_eq!(r.start, -1000.0 - 1000.0 * PAD_FRACTION, epsilon = 1e-9);
        assert_abs_diff_eq!(r.end, 0.0, epsilon = 0.0);
        let r = bar_range(-2.0, 3.0);
        assert_abs_diff_eq!(r.start, -2.0 - 5.0 * PAD_FRACTION, epsilon = 1e-12);
        assert_abs_diff_eq!(r.end, 3.0 + 5.0 * PAD_FRACTION, epsilon = 1e-12);
        assert_eq!(bar_range(0.0, 0.0), 0.0..1.0);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.png");
        let (categories, series) = rates();
        let draw = |c: &[String], s: &[BarSeries]| bar_figure(&path, "rates", "", "", c, s);

        let r = draw(&[], &series);
        assert!(
            matches!(&r, Err(Error::NoCategories { figure }) if figure == "rates"),
            "{r:?}"
        );
        let r = draw(&categories, &[]);
        assert!(matches!(r, Err(Error::NoBarSeries { .. })), "{r:?}");

        let mut short = series.clone();
        short[1].values.pop();
        let r = draw(&categories, &short);
        assert!(
            matches!(
                &r,
                Err(Error::BarCountMismatch {
                    series,
                    n_values: 9,
                    n_categories: 10,
                    ..
                }) if series == "decoded mean rate"
            ),
            "{r:?}"
        );
        let r = draw(&categories[..9], &series);
        assert!(
            matches!(r, Err(Error::BarCountMismatch { n_values: 10, .. })),
            "{r:?}"
        );

        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut s = series.clone();
            s[0].values[4] = bad;
            let r = draw(&categories, &s);
            assert!(
                matches!(
                    &r,
                    Err(Error::NonFiniteBar { category, index: 4, .. }) if category == "feature 5"
                ),
                "{r:?}"
            );
        }

        let r = bar_figure(
            &dir.path().join("bad.pdf"),
            "",
            "",
            "",
            &categories,
            &series,
        );
        assert!(
            matches!(r, Err(Error::UnsupportedExtension { .. })),
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
        let path = dir.path().join("no/such/dir/b.svg");
        let (categories, series) = rates();
        let r = bar_figure(&path, "t", "", "", &categories, &series);
        assert!(
            matches!(&r, Err(Error::Draw { path: p, .. }) if p == &path),
            "{r:?}"
        );
    }

    #[test]
    fn error_messages_carry_values() {
        let e = Error::BarCountMismatch {
            figure: "rates".into(),
            series: "true λ".into(),
            n_values: 9,
            n_categories: 10,
        };
        assert_eq!(
            e.to_string(),
            "bar series \"true λ\" in figure \"rates\" has 9 values for 10 categories"
        );
        let e = Error::NonFiniteBar {
            figure: "ELBO".into(),
            series: "VAE".into(),
            category: "ZINB".into(),
            index: 3,
            value: f64::NAN,
        };
        assert_eq!(
            e.to_string(),
            "bar series \"VAE\" in figure \"ELBO\" has a non-finite value NaN \
             for category \"ZINB\" (index 3)"
        );
    }
}
