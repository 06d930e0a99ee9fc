//! Setup shared by every figure: the embedded font, text sizes, the output
//! format chosen from the file extension, and the atomic write.
//!
//! A figure type implements [`Render`] (draw onto any plotters backend) and
//! hands itself to [`write_atomic`], which renders to a temporary file beside
//! the target (same extension, so the bitmap encoder picks the same format),
//! calls `present()` so a failed write is an error, then renames it into place.
//! A reader of the target path therefore sees either the old figure or the
//! complete new one, never a half-written file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis::AxisTicks;
use crate::error::{Error, Result};

/// DejaVu Sans, Bitstream Vera licence (see `assets/DejaVuSans-LICENSE.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Width of one panel in pixels.
pub(crate) const PANEL_WIDTH: u32 = 900;
/// Height of one panel in pixels.
pub(crate) const PANEL_HEIGHT: u32 = 600;
/// Height of the band holding the overall figure title.
pub(crate) const TITLE_HEIGHT: u32 = 64;

/// Font sizes in pixels, chosen to be readable at 900 px per panel.
pub(crate) const FIGURE_TITLE_SIZE: f64 = 34.0;
pub(crate) const PANEL_TITLE_SIZE: f64 = 28.0;
pub(crate) const AXIS_LABEL_SIZE: f64 = 24.0;
pub(crate) const TICK_LABEL_SIZE: f64 = 20.0;
pub(crate) const LEGEND_SIZE: f64 = 20.0;

/// Space around the chart inside its panel, in pixels.
pub(crate) const MARGIN: u32 = 18;
/// Height reserved under the plot for x tick labels and the x-axis label.
const X_LABEL_AREA: u32 = 66;
/// Number of labelled ticks asked for on each axis.
const N_TICKS: usize = 8;
/// Light grey for the grid.
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);

/// Registers the embedded font as plotters' "sans-serif" family, once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok { Ok(()) } else { Err(Error::Font) }
}

/// The sans-serif font (the embedded DejaVu Sans) at `size` pixels.
pub(crate) fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::SansSerif, size, FontStyle::Normal)
}

/// Output format, chosen by the path's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Png,
    Svg,
}

impl Format {
    /// `.png` or `.svg` (any case); anything else is [`Error::UnsupportedExtension`].
    pub(crate) fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("png") {
            Ok(Self::Png)
        } else if ext.eq_ignore_ascii_case("svg") {
            Ok(Self::Svg)
        } else {
            Err(Error::UnsupportedExtension {
                path: path.to_path_buf(),
            })
        }
    }
}

/// A plotters failure, reduced to its message (the backend error types differ
/// between PNG and SVG; the path is attached by [`write_atomic`]).
#[derive(Debug)]
pub(crate) struct DrawError(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for DrawError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        Self(e.to_string())
    }
}

/// Something that can draw itself onto any plotters backend.
pub(crate) trait Render {
    /// Size of the whole figure in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the figure onto `root`, which has [`Render::size`].
    fn render<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawError>;
}

/// Height of the whole figure: one panel plus the title band, if there is a title.
pub(crate) fn figure_height(title: &str) -> u32 {
    if title.is_empty() {
        PANEL_HEIGHT
    } else {
        PANEL_HEIGHT + TITLE_HEIGHT
    }
}

/// Draws `title` centred in a band of [`TITLE_HEIGHT`] at the top of `root`
/// and returns the area below it; an empty title takes no space.
pub(crate) fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawError> {
    if title.is_empty() {
        return Ok(root.clone());
    }
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    let style = TextStyle::from(font(FIGURE_TITLE_SIZE)).pos(Pos::new(HPos::Center, VPos::Center));
    let (w, h) = top.dim_in_pixel();
    top.draw_text(title, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(body)
}

/// The texts around one panel's plot; an empty string draws nothing.
pub(crate) struct PanelText<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
}

/// A chart filling `area`: caption, axis labels, compact tick labels and a
/// light grid, the same in every figure. The y label area is as wide as the
/// widest tick label needs, so the axis label sits close to the ticks
/// whatever their length. `x` is a numeric range (`Range<f64>`) or any
/// [`AxisTicks`] axis, such as the categories of a bar chart; each axis
/// labels its own ticks and says whether grid lines cross them.
pub(crate) fn panel_chart<'a, DB: DrawingBackend, X, Y>(
    area: &'a DrawingArea<DB, Shift>,
    text: &PanelText<'_>,
    x: X,
    y: Y,
) -> std::result::Result<ChartContext<'a, DB, Cartesian2d<X::CoordDescType, Y>>, DrawError>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: AxisTicks + ValueFormatter<f64>,
    Y: AxisTicks + ValueFormatter<f64>,
{
    let x: X::CoordDescType = x.into();
    let (x_ticks, y_ticks) = (x.clone(), y.clone());
    let tick_style = TextStyle::from(font(TICK_LABEL_SIZE));
    let mut tick_width = 0;
    for v in y.key_points(N_TICKS) {
        let label = y_ticks.tick_text(v);
        tick_width = tick_width.max(area.estimate_text_size(&label, &tick_style)?.0);
    }
    let desc_width = if text.y_label.is_empty() {
        0
    } else {
        16 + AXIS_LABEL_SIZE as u32
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(12 + tick_width + desc_width);
    if !text.title.is_empty() {
        builder.caption(text.title, font(PANEL_TITLE_SIZE));
    }
    let mut chart = builder.build_cartesian_2d(x, y)?;

    let x_format = |v: &f64| x_ticks.tick_text(*v);
    let y_format = |v: &f64| y_ticks.tick_text(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(text.x_label)
        .y_desc(text.y_label)
        .axis_desc_style(font(AXIS_LABEL_SIZE))
        .label_style(font(TICK_LABEL_SIZE))
        .x_labels(N_TICKS)
        .y_labels(N_TICKS)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .bold_line_style(GRID.stroke_width(1))
        .x_max_light_lines(0)
        .y_max_light_lines(0)
        .axis_style(BLACK.stroke_width(1));
    if !x_ticks.grid_lines() {
        mesh.disable_x_mesh();
    }
    if !y_ticks.grid_lines() {
        mesh.disable_y_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

/// `dir/.name.tmp-PID-N.ext` beside `path`; N keeps concurrent writes within
/// one process (parallel tests) apart.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{stem}.tmp-{}-{n}.{ext}", std::process::id()))
}

fn draw_on<DB: DrawingBackend, R: Render>(
    backend: DB,
    figure: &R,
) -> std::result::Result<(), DrawError> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    figure.render(&root)?;
    root.present()?;
    Ok(())
}

/// Renders `figure` to `path` (PNG or SVG by extension) via a temporary file
/// in the same directory, then renames it into place.
///
/// # Errors
/// [`Error::UnsupportedExtension`], [`Error::Font`], [`Error::Draw`] when
/// plotters fails (including writing the temporary file, e.g. a missing
/// directory), [`Error::Io`] when the rename fails. No temporary file is left
/// behind on any of these.
pub(crate) fn write_atomic<R: Render>(path: &Path, figure: &R) -> Result<()> {
    let format = Format::from_path(path)?;
    ensure_font()?;
    let tmp = temp_path(path);
    let size = figure.size();
    // The backend is dropped at the end of each arm; on error its Drop may still
    // write the temporary file, which is removed below.
    let drawn = match format {
        Format::Png => draw_on(BitMapBackend::new(&tmp, size), figure),
        Format::Svg => draw_on(SVGBackend::new(&tmp, size), figure),
    };
    if let Err(DrawError(message)) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Draw {
            path: path.to_path_buf(),
            message,
        });
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    tracing::debug!(path = %path.display(), width = size.0, height = size.1, "wrote figure");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.png")).ok(),
            Some(Format::Png)
        );
        assert_eq!(
            Format::from_path(Path::new("b.SVG")).ok(),
            Some(Format::Svg)
        );
        for bad in ["b.pdf", "b", "png", "b.png.bak"] {
            let r = Format::from_path(Path::new(bad));
            assert!(
                matches!(r, Err(Error::UnsupportedExtension { .. })),
                "{bad}: {r:?}"
            );
        }
    }

    #[test]
    fn temp_path_is_hidden_sibling_with_same_extension() {
        let t = temp_path(Path::new("/x/y/history.png"));
        assert_eq!(t.parent(), Some(Path::new("/x/y")));
        let name = t.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(name.starts_with(".history.tmp-"), "{name}");
        assert_eq!(t.extension().and_then(|e| e.to_str()), Some("png"));
        assert_ne!(temp_path(Path::new("h.png")), temp_path(Path::new("h.png")));
    }

    #[test]
    fn embedded_font_registers() {
        assert!(ensure_font().is_ok());
        assert!(ensure_font().is_ok(), "second call is a no-op");
    }
}
