//! The `?state=` parameter of the status page, understood: every row, the rows in one state,
//! or a value that names no state (every row is shown, and the page says so).

use crate::domain::State;

/// Which rows the page lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    Only(State),
    /// A value that names no state: every row is shown, and the page says so.
    Invalid(String),
}

impl Filter {
    /// Reads the parameter's value; absent, empty and `all` (in any case) mean every row.
    pub fn parse(value: Option<&str>) -> Filter {
        match value.map(str::trim) {
            None | Some("") => Filter::All,
            Some(v) if v.eq_ignore_ascii_case("all") => Filter::All,
            Some(v) => State::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(v))
                .map_or_else(|| Filter::Invalid(v.to_string()), Filter::Only),
        }
    }

    /// Whether a row in `state` is listed.
    pub fn admits(&self, state: State) -> bool {
        match self {
            Filter::Only(only) => *only == state,
            Filter::All | Filter::Invalid(_) => true,
        }
    }

    /// The one state listed, if the filter names one.
    pub fn only(&self) -> Option<State> {
        match self {
            Filter::Only(state) => Some(*state),
            Filter::All | Filter::Invalid(_) => None,
        }
    }

    /// The value that named no state, to show back to the reader.
    pub fn invalid(&self) -> Option<&str> {
        match self {
            Filter::Invalid(value) => Some(value),
            Filter::All | Filter::Only(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_case_insensitively_and_unknown_ones_kept() {
        for all in [None, Some(""), Some(" "), Some("all"), Some("ALL")] {
            assert_eq!(Filter::parse(all), Filter::All, "{all:?}");
        }
        assert_eq!(Filter::parse(Some(" Closed ")), Filter::Only(State::Closed));
        let bogus = Filter::parse(Some("bogus"));
        assert_eq!(bogus.invalid(), Some("bogus"));
        assert_eq!(bogus.only(), None);
        assert!(
            bogus.admits(State::Error),
            "an invalid value lists every row"
        );
        let open = Filter::parse(Some("open"));
        assert_eq!(open.only(), Some(State::Open));
        assert!(open.admits(State::Open) && !open.admits(State::Closed));
    }
}
