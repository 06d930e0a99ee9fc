//! Axis helpers shared by every figure: padded data ranges, compact tick
//! labels, and a logarithmic axis with useful ticks.
//!
//! plotters' own `log_scale()` places bold ticks only at powers of ten, so a
//! loss curve spanning 0.3 to 1.0 gets a single labelled tick. [`LogAxis`]
//! instead picks the densest of {10^k}, {1, 2, 5} x 10^k, {1..9} x 10^k that
//! fits the requested number of labels, falling back to evenly spaced "nice"
//! values when the range is narrower than one of those steps.
//!
//! [`CategoryAxis`] puts named categories (the groups of a bar chart) at
//! x = 0, 1, 2, ..., one labelled tick each. Every axis says how its ticks
//! read through [`AxisTicks`], so the shared panel chart labels numeric, log
//! and category axes alike.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;

/// Fraction of the data span added on each side of an axis.
pub(crate) const PAD_FRACTION: f64 = 0.04;

/// `[min, max]` widened by `frac` of the span on each side; a zero span is
/// widened by half the value each way (by 0.5 around zero) so it shows.
pub(crate) fn padded_linear(min: f64, max: f64, frac: f64) -> Range<f64> {
    let span = max - min;
    if span > 0.0 {
        (min - frac * span)..(max + frac * span)
    } else {
        let half = if min == 0.0 { 0.5 } else { 0.5 * min.abs() };
        (min - half)..(max + half)
    }
}

/// Like [`padded_linear`] in log space; `min` and `max` must be positive. A
/// zero span is widened by a factor of 2 each way.
pub(crate) fn padded_log(min: f64, max: f64, frac: f64) -> Range<f64> {
    let (lo, hi) = (min.ln(), max.ln());
    let span = hi - lo;
    if span > 0.0 {
        (lo - frac * span).exp()..(hi + frac * span).exp()
    } else {
        (min / 2.0)..(max * 2.0)
    }
}

/// A tick label with at most four significant digits and no trailing zeros:
/// `0.30000000000000004` -> `"0.3"`, `100000.0` -> `"100000"`, `2e-5` -> `"2e-5"`;
/// values of a million and more, or under 0.001, in scientific notation.
pub(crate) fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let mag = v.abs().log10().floor();
    if !(-3.0..6.0).contains(&mag) {
        let s = format!("{v:.3e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (3.0 - mag).clamp(0.0, 7.0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

/// [`tick_label`] for a tick on an axis spanning `span`: values within
/// rounding noise of zero (`1e-9` of the span) are labelled `"0"`, not `"-5.551e-17"`.
pub(crate) fn tick_label_on_axis(v: f64, span: f64) -> String {
    if v.abs() <= 1e-9 * span.abs() {
        "0".to_owned()
    } else {
        tick_label(v)
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Evenly spaced ticks at multiples of a 1-2-5 step, at most `max` of them
/// (at least one step wide).
pub(crate) fn nice_linear_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || max == 0 {
        return vec![];
    }
    let raw = span / max as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A base-10 logarithmic axis over a positive range.
#[derive(Debug, Clone)]
pub(crate) struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// A log axis over `range`; both ends must be positive and `start < end`.
    pub(crate) fn new(range: Range<f64>) -> Self {
        Self {
            lo: range.start,
            hi: range.end,
        }
    }

    /// Values `m·10^k` inside the range for the given mantissas, every
    /// `decade_step`-th decade.
    fn ticks(&self, mantissas: &[f64], decade_step: i32) -> Vec<f64> {
        let k0 = self.lo.log10().floor() as i32;
        let k1 = self.hi.log10().ceil() as i32;
        let mut out = Vec::new();
        let mut k = k0 - k0.rem_euclid(decade_step);
        while k <= k1 {
            for &m in mantissas {
                let v = m * 10f64.powi(k);
                if v >= self.lo && v <= self.hi {
                    out.push(v);
                }
            }
            k += decade_step;
        }
        out
    }

    fn pick_ticks(&self, max: usize) -> Vec<f64> {
        const SETS: [&[f64]; 3] = [
            &[1.0],
            &[1.0, 2.0, 5.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        let max = max.max(2);
        // Too many decades even for powers of ten alone: thin them out.
        let decades = self.ticks(SETS[0], 1);
        if decades.len() > max {
            let step = decades.len().div_ceil(max) as i32;
            return self.ticks(SETS[0], step);
        }
        let mut best = decades;
        for set in &SETS[1..] {
            if best.len() >= 3 {
                break;
            }
            let denser = self.ticks(set, 1);
            if denser.len() > max {
                break;
            }
            best = denser;
        }
        if best.len() < 3 {
            let linear = nice_linear_ticks(self.lo, self.hi, max.min(6));
            if linear.len() > best.len() {
                return linear;
            }
        }
        best
    }
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.lo.ln(), self.hi.ln());
        let t = (value.ln() - lo) / (hi - lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        self.pick_ticks(hint.max_num_points())
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// An axis as the shared panel chart draws it: the text of each tick, and
/// whether grid lines cross the plot at the ticks.
pub(crate) trait AxisTicks: Ranged<ValueType = f64> + Clone {
    /// The label of the tick at `v`.
    fn tick_text(&self, v: f64) -> String {
        let range = self.range();
        tick_label_on_axis(v, range.end - range.start)
    }

    /// Whether grid lines are drawn at the ticks.
    fn grid_lines(&self) -> bool {
        true
    }
}

impl AxisTicks for RangedCoordf64 {}

impl AxisTicks for LogAxis {}

/// Named categories at x = 0, 1, ..., n - 1, over -0.5..n - 0.5 so that each
/// has a slot one unit wide centred on its tick. Every category is labelled
/// (whatever number of ticks is asked for) and no grid lines are drawn: they
/// would cut through the bars.
#[derive(Debug, Clone)]
pub(crate) struct CategoryAxis<'a> {
    names: &'a [String],
}

impl<'a> CategoryAxis<'a> {
    /// An axis for `names`, which must not be empty.
    pub(crate) fn new(names: &'a [String]) -> Self {
        Self { names }
    }
}

impl Ranged for CategoryAxis<'_> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let t = (value - range.start) / (range.end - range.start);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // plotters asks for zero light lines; every bold request gets all names.
        if hint.max_num_points() == 0 {
            return vec![];
        }
        (0..self.names.len()).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.names.len() as f64 - 0.5
    }
}

impl AxisTicks for CategoryAxis<'_> {
    fn tick_text(&self, v: f64) -> String {
        let i = v.round();
        if (v - i).abs() < 1e-9 && i >= 0.0 {
            self.names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }

    fn grid_lines(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn linear_padding() {
        let r = padded_linear(0.0, 10.0, 0.1);
        assert_abs_diff_eq!(r.start, -1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(r.end, 11.0, epsilon = 1e-12);
        let r = padded_linear(2e-5, 2e-5, 0.1);
        assert_abs_diff_eq!(r.start, 1e-5, epsilon = 1e-18);
        assert_abs_diff_eq!(r.end, 3e-5, epsilon = 1e-18);
        let r = padded_linear(0.0, 0.0, 0.1);
        assert_abs_diff_eq!(r.start, -0.5, epsilon = 0.0);
    }

    #[test]
    fn log_padding() {
        // ln-span of 1..100 is ln 100; 10 % each way multiplies by 100^0.1.
        let r = padded_log(1.0, 100.0, 0.1);
        assert_abs_diff_eq!(r.start, 100f64.powf(-0.1), epsilon = 1e-12);
        assert_abs_diff_eq!(r.end, 100f64.powf(1.1), epsilon = 1e-9);
        let r = padded_log(0.5, 0.5, 0.1);
        assert_abs_diff_eq!(r.start, 0.25, epsilon = 1e-12);
        assert_abs_diff_eq!(r.end, 1.0, epsilon = 1e-12);
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(-0.0), "0");
        assert_eq!(tick_label(1000.0), "1000");
        assert_eq!(tick_label(12.5), "12.5");
        assert_eq!(tick_label(0.0012346), "0.001235");
        assert_eq!(tick_label(2e-5), "2e-5");
        assert_eq!(tick_label(100000.0), "100000");
        assert_eq!(tick_label(1234567.0), "1.235e6");
        assert_eq!(tick_label_on_axis(-5.551e-17, 1.0), "0");
        assert_eq!(tick_label_on_axis(2e-5, 1e-4), "2e-5");
        assert_eq!(tick_label(-0.25), "-0.25");
    }

    #[test]
    fn nice_ticks() {
        let t = nice_linear_ticks(0.28, 1.04, 6);
        assert_eq!(
            t.iter().map(|&v| tick_label(v)).collect::<Vec<_>>(),
            ["0.4", "0.6", "0.8", "1"]
        );
        assert!(nice_linear_ticks(1.0, 1.0, 5).is_empty());
    }

    #[test]
    fn log_ticks_sub_decade_use_1_2_5_or_all_digits() {
        // 0.28..1.04: powers of ten give only 1; {1,2,5} gives 0.5, 1; digits give 0.3..1.
        let t: Vec<String> = LogAxis::new(0.28..1.04)
            .pick_ticks(10)
            .iter()
            .map(|&v| tick_label(v))
            .collect();
        assert_eq!(t, ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"]);
    }

    #[test]
    fn log_ticks_many_decades_are_thinned() {
        let t = LogAxis::new(1e-6..1e6).pick_ticks(5);
        assert!(t.len() <= 5 && t.len() >= 3, "{t:?}");
        let t = LogAxis::new(0.01..100.0).pick_ticks(10);
        assert_eq!(t.len(), 5, "{t:?}");
    }

    #[test]
    fn log_ticks_very_narrow_range_fall_back_to_linear() {
        let t = LogAxis::new(0.301..0.309).pick_ticks(10);
        assert!(t.len() >= 2, "{t:?}");
        assert!(t.iter().all(|v| (0.301..=0.309).contains(v)));
    }

    #[test]
    fn log_map_is_monotone_and_hits_ends() {
        let a = LogAxis::new(0.1..10.0);
        assert_eq!(a.map(&0.1, (600, 0)), 600);
        assert_eq!(a.map(&10.0, (600, 0)), 0);
        assert_eq!(a.map(&1.0, (600, 0)), 300);
    }

    #[test]
    fn category_axis_labels_every_name_at_its_index() {
        let names: Vec<String> = (1..=10).map(|i| format!("gene {i}")).collect();
        let a = CategoryAxis::new(&names);
        assert_eq!(a.key_points(4).len(), 10, "all names, whatever the hint");
        assert!(a.key_points(0).is_empty());
        assert_eq!(a.tick_text(0.0), "gene 1");
        assert_eq!(a.tick_text(9.0), "gene 10");
        assert_eq!(a.tick_text(0.5), "");
        assert_eq!(a.tick_text(10.0), "");
        assert_eq!(a.tick_text(-1.0), "");
        assert!(!a.grid_lines());
        // Slots one unit wide: the first starts at the left edge.
        assert_eq!(a.map(&-0.5, (0, 1000)), 0);
        assert_eq!(a.map(&9.5, (0, 1000)), 1000);
        assert_eq!(a.map(&4.5, (0, 1000)), 500);
    }
}
