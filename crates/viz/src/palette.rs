//! The categorical colour palette shared by every figure.
//!
//! Tableau 10 (the 2016 revision by Maureen Stone), chosen because its
//! colours stay distinguishable under the common forms of colour blindness and
//! in greyscale print better than the older matplotlib "tab10". Series and
//! labels pick colours by index, so "index 0" is the same blue everywhere and a
//! model keeps its colour across figures.

use plotters::style::RGBColor;

/// Tableau 10: blue, orange, red, teal, green, yellow, purple, pink, brown, grey.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4E, 0x79, 0xA7),
    RGBColor(0xF2, 0x8E, 0x2B),
    RGBColor(0xE1, 0x57, 0x59),
    RGBColor(0x76, 0xB7, 0xB2),
    RGBColor(0x59, 0xA1, 0x4F),
    RGBColor(0xED, 0xC9, 0x48),
    RGBColor(0xB0, 0x7A, 0xA1),
    RGBColor(0xFF, 0x9D, 0xA7),
    RGBColor(0x9C, 0x75, 0x5F),
    RGBColor(0xBA, 0xB0, 0xAC),
];

/// The palette colour for `index`, wrapping around after the tenth colour.
pub fn palette_color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_wraps_and_colours_are_distinct() {
        assert_eq!(palette_color(0), PALETTE[0]);
        assert_eq!(palette_color(13), PALETTE[3]);
        for (i, a) in PALETTE.iter().enumerate() {
            for b in &PALETTE[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
