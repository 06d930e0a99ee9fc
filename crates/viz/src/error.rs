//! The error type of scae-viz: parameter errors (bad input data, caught
//! before any file is touched) and run-time errors (drawing or writing failed),
//! each message carrying the path, panel or series it is about.

use std::path::PathBuf;

/// Result alias used throughout scae-viz.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when making a figure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The output path does not end in `.png` or `.svg`.
    #[error("unsupported figure extension for {}: expected .png or .svg", path.display())]
    UnsupportedExtension {
        /// The requested output path.
        path: PathBuf,
    },
    /// A figure was requested with no panels.
    #[error("figure {} has no panels", path.display())]
    NoPanels {
        /// The requested output path.
        path: PathBuf,
    },
    /// A panel has no series to draw.
    #[error("panel {panel:?} has no series")]
    EmptyPanel {
        /// Title of the panel.
        panel: String,
    },
    /// A series has no points.
    #[error("series {series:?} in panel {panel:?} has no points")]
    EmptySeries {
        /// Title of the panel.
        panel: String,
        /// Label of the series.
        series: String,
    },
    /// A series has a different number of x and y values.
    #[error("series {series:?} in panel {panel:?} has {x_len} x values but {y_len} y values")]
    LengthMismatch {
        /// Title of the panel.
        panel: String,
        /// Label of the series.
        series: String,
        /// Number of x values.
        x_len: usize,
        /// Number of y values.
        y_len: usize,
    },
    /// A point is NaN or infinite.
    #[error("series {series:?} in panel {panel:?} has a non-finite point {index}: ({x}, {y})")]
    NonFinite {
        /// Title of the panel.
        panel: String,
        /// Label of the series.
        series: String,
        /// Index of the point in the series.
        index: usize,
        /// Its x value.
        x: f64,
        /// Its y value.
        y: f64,
    },
    /// A y value is zero or negative on a log-scaled axis.
    #[error(
        "series {series:?} in panel {panel:?} has y = {y} at point {index}, not allowed on a log axis"
    )]
    NonPositiveLogY {
        /// Title of the panel.
        panel: String,
        /// Label of the series.
        series: String,
        /// Index of the point in the series.
        index: usize,
        /// The offending y value.
        y: f64,
    },
    /// A scatter panel has no points.
    #[error("scatter panel {panel:?} has no points")]
    NoPoints {
        /// Title of the panel.
        panel: String,
    },
    /// A scatter panel's `x`, `y` and `labels` differ in length.
    #[error(
        "scatter panel {panel:?} has {x_len} x values, {y_len} y values and {labels_len} labels; \
         all three must be equal"
    )]
    PointCountMismatch {
        /// Title of the panel.
        panel: String,
        /// Number of x values.
        x_len: usize,
        /// Number of y values.
        y_len: usize,
        /// Number of labels.
        labels_len: usize,
    },
    /// A scatter point is NaN or infinite.
    #[error("scatter panel {panel:?} has a non-finite point {index}: ({x}, {y})")]
    NonFinitePoint {
        /// Title of the panel.
        panel: String,
        /// Index of the point.
        index: usize,
        /// Its x value.
        x: f64,
        /// Its y value.
        y: f64,
    },
    /// A scatter point's label has no name.
    #[error(
        "point {index} in scatter panel {panel:?} has label {label}, \
         but only {n_names} label names were given"
    )]
    LabelOutOfRange {
        /// Title of the panel.
        panel: String,
        /// Index of the point.
        index: usize,
        /// Its label index.
        label: usize,
        /// Number of label names.
        n_names: usize,
    },
    /// A bar figure has no categories.
    #[error("bar figure {figure:?} has no categories")]
    NoCategories {
        /// Title of the figure.
        figure: String,
    },
    /// A bar figure has no series.
    #[error("bar figure {figure:?} has no series")]
    NoBarSeries {
        /// Title of the figure.
        figure: String,
    },
    /// A bar series has not one value per category.
    #[error(
        "bar series {series:?} in figure {figure:?} has {n_values} values \
         for {n_categories} categories"
    )]
    BarCountMismatch {
        /// Title of the figure.
        figure: String,
        /// Label of the series.
        series: String,
        /// Number of values in the series.
        n_values: usize,
        /// Number of categories.
        n_categories: usize,
    },
    /// A bar's value is NaN or infinite.
    #[error(
        "bar series {series:?} in figure {figure:?} has a non-finite value {value} \
         for category {category:?} (index {index})"
    )]
    NonFiniteBar {
        /// Title of the figure.
        figure: String,
        /// Label of the series.
        series: String,
        /// Name of the category.
        category: String,
        /// Index of the category.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A heatmap has no cells: no rows, or no values in any row.
    #[error("heatmap {figure:?} has no cells")]
    EmptyHeatmap {
        /// Title of the figure.
        figure: String,
    },
    /// A heatmap does not have one row of values per row name.
    #[error("heatmap {figure:?} has {n_rows} rows of values but {n_row_names} row names")]
    HeatmapRowCountMismatch {
        /// Title of the figure.
        figure: String,
        /// Number of rows of values.
        n_rows: usize,
        /// Number of row names.
        n_row_names: usize,
    },
    /// A heatmap row does not have one value per column name (ragged rows
    /// included).
    #[error(
        "row {row:?} (index {row_index}) of heatmap {figure:?} has {n_values} values \
         but there are {n_col_names} column names"
    )]
    HeatmapRowLengthMismatch {
        /// Title of the figure.
        figure: String,
        /// Name of the row.
        row: String,
        /// Index of the row.
        row_index: usize,
        /// Number of values in the row.
        n_values: usize,
        /// Number of column names.
        n_col_names: usize,
    },
    /// A heatmap value is NaN, infinite or negative.
    #[error(
        "heatmap {figure:?} has value {value} in row {row:?}, column {column:?} \
         (indices {row_index}, {column_index}); values must be finite and non-negative"
    )]
    InvalidHeatmapValue {
        /// Title of the figure.
        figure: String,
        /// Name of the row.
        row: String,
        /// Name of the column.
        column: String,
        /// Index of the row.
        row_index: usize,
        /// Index of the column.
        column_index: usize,
        /// The offending value.
        value: f64,
    },
    /// The embedded font could not be registered with plotters.
    #[error("the embedded DejaVu Sans font could not be loaded")]
    Font,
    /// plotters failed to draw or to write the figure.
    #[error("drawing {} failed: {message}", path.display())]
    Draw {
        /// The requested output path.
        path: PathBuf,
        /// plotters' description of the failure.
        message: String,
    },
    /// Moving the finished figure into place failed.
    #[error("writing {} failed", path.display())]
    Io {
        /// The requested output path.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
