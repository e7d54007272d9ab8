//! Matching what users type against VH-Database's names: suggestions while
//! typing, and "did you mean …" when a report names a system or place the
//! map does not know.
//!
//! Users type "oculi" for "Oculi" and "eisvald" for "Eisvåld", so
//! suggestions ignore letter case and accents. Whether a report will land on
//! the map is the mapping's decision, which ignores letter case only
//! ([`maps_to`] says the same).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most suggestions Discord shows for one autocomplete request.
pub const MAX_SUGGESTIONS: usize = 25;

/// How many names "did you mean …" offers.
pub const MAX_CLOSEST: usize = 3;

/// `name` trimmed, lower case, accents removed: the form suggestions compare.
pub fn fold(name: &str) -> String {
    name.trim()
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether the mapping will take `typed` for `stored` (trimmed, any letter case).
pub fn maps_to(typed: &str, stored: &str) -> bool {
    typed.trim().to_lowercase() == stored.trim().to_lowercase()
}

/// The names containing `typed` (folded), those starting with it first, then
/// in the given order; at most [`MAX_SUGGESTIONS`].
pub fn suggest<'a>(names: &'a [String], typed: &str) -> Vec<&'a str> {
    let typed = fold(typed);
    let mut hits: Vec<(bool, usize, &str)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let folded = fold(name);
            let at = folded.find(&typed)?;
            Some((at > 0, i, name.as_str()))
        })
        .collect();
    hits.sort_unstable();
    hits.into_iter().take(MAX_SUGGESTIONS).map(|(_, _, n)| n).collect()
}

/// The names nearest to `typed` (folded edit distance), nearest first, only
/// those close enough to be a plausible typo; at most [`MAX_CLOSEST`].
pub fn closest<'a>(names: &'a [String], typed: &str) -> Vec<&'a str> {
    let typed = fold(typed);
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .filter_map(|name| {
            let folded = fold(name);
            let distance = if folded.contains(&typed) || typed.contains(&folded) {
                folded.chars().count().abs_diff(typed.chars().count()).min(1)
            } else {
                strsim::levenshtein(&folded, &typed)
            };
            // A third of the longer name, at least 2: "Ocli" finds "Oculi", "Zzz" finds nothing.
            let longest = folded.chars().count().max(typed.chars().count());
            (distance <= (longest / 3).max(2)).then_some((distance, name.as_str()))
        })
        .collect();
    scored.sort_unstable();
    scored.into_iter().take(MAX_CLOSEST).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn suggestions_ignore_case_and_accents_and_prefer_prefixes() {
        let all = names(&["Ixiezh HV", "Oculi", "Eisvåld", "Bœuf Oculi"]);
        assert_eq!(suggest(&all, "oculi"), ["Oculi", "Bœuf Oculi"]);
        assert_eq!(suggest(&all, "EISVALD"), ["Eisvåld"]);
        assert_eq!(suggest(&all, ""), ["Ixiezh HV", "Oculi", "Eisvåld", "Bœuf Oculi"]);
        assert!(suggest(&all, "zzz").is_empty());
    }

    #[test]
    fn closest_names_are_plausible_typos_only() {
        let all = names(&["Ixiezh HV", "Oculi", "Eisvåld"]);
        assert_eq!(closest(&all, "Ocli"), ["Oculi"]);
        assert_eq!(closest(&all, "eisvald"), ["Eisvåld"]);
        assert!(closest(&all, "Zzzzzz").is_empty());
        assert!(maps_to(" oculi ", "Oculi"));
        assert!(!maps_to("eisvald", "Eisvåld"));
    }
}
