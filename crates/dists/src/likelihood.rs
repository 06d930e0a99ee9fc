//! The choice of count law, as it appears in configs and on the command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which law models the counts (serde: "poisson", "nb", "zip", "zinb").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    Poisson,
    Nb,
    Zip,
    Zinb,
}

impl Likelihood {
    /// Every law, in the order poisson, nb, zip, zinb.
    pub const ALL: [Likelihood; 4] = [
        Likelihood::Poisson,
        Likelihood::Nb,
        Likelihood::Zip,
        Likelihood::Zinb,
    ];

    /// The short name used in configs and by serde: "poisson", "nb", "zip", "zinb".
    pub fn name(self) -> &'static str {
        match self {
            Likelihood::Poisson => "poisson",
            Likelihood::Nb => "nb",
            Likelihood::Zip => "zip",
            Likelihood::Zinb => "zinb",
        }
    }

    /// A human label for reports and figure legends.
    pub fn label(self) -> &'static str {
        match self {
            Likelihood::Poisson => "Poisson",
            Likelihood::Nb => "negative binomial",
            Likelihood::Zip => "zero-inflated Poisson",
            Likelihood::Zinb => "zero-inflated NB",
        }
    }

    /// Whether the law has an inverse dispersion θ (nb, zinb).
    pub fn has_dispersion(self) -> bool {
        matches!(self, Likelihood::Nb | Likelihood::Zinb)
    }

    /// Whether the law has a zero-inflation logit (zip, zinb).
    pub fn has_zero_inflation(self) -> bool {
        matches!(self, Likelihood::Zip | Likelihood::Zinb)
    }
}

impl fmt::Display for Likelihood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Likelihood::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown likelihood {given:?}: expected one of poisson, nb, zip, zinb")]
pub struct ParseLikelihoodError {
    /// The string that was given.
    pub given: String,
}

impl FromStr for Likelihood {
    type Err = ParseLikelihoodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Likelihood::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| ParseLikelihoodError {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_fromstr_and_serde() {
        for l in Likelihood::ALL {
            assert_eq!(l.to_string().parse::<Likelihood>(), Ok(l));
            let json = serde_json::to_string(&l).expect("serialises");
            assert_eq!(json, format!("\"{}\"", l.name()));
            assert_eq!(
                serde_json::from_str::<Likelihood>(&json).expect("parses"),
                l
            );
            assert_eq!(l.has_dispersion(), matches!(l.name(), "nb" | "zinb"));
            assert_eq!(l.has_zero_inflation(), matches!(l.name(), "zip" | "zinb"));
        }
        assert_eq!(Likelihood::Zinb.label(), "zero-inflated NB");
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "NB".parse::<Likelihood>().expect_err("names are lowercase");
        assert_eq!(err.given, "NB");
        assert_eq!(
            err.to_string(),
            "unknown likelihood \"NB\": expected one of poisson, nb, zip, zinb"
        );
    }
}
