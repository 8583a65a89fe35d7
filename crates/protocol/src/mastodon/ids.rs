//! Mastodon's id order: numeric ids (snowflakes of varying length) by value, others as text.
//!
//! Must never: be anything but a total order (sorting with it must not panic or depend on
//! the input order).

use std::cmp::Ordering;

/// Orders Mastodon ids: numeric strings (snowflakes of varying length) by value — length
/// first, ignoring leading zeros, then digit by digit. This is a total order, safe for
/// sorting: numeric ids sort before non-numeric ones, non-numeric ids (other servers use
/// ULIDs or flake ids, which sort as text) in string order, and equal values written
/// differently (`007`, `7`) by their text.
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => {
            let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            x.len()
                .cmp(&y.len())
                .then_with(|| x.cmp(y))
                .then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// The greatest id by [`compare_ids`].
pub fn max_id<'a, I: IntoIterator<Item = &'a str>>(ids: I) -> Option<&'a str> {
    ids.into_iter().max_by(|a, b| compare_ids(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_numerically() {
        assert_eq!(compare_ids("9", "10"), Ordering::Less);
        assert_eq!(
            compare_ids("113500000000000002", "113500000000000001"),
            Ordering::Greater
        );
        assert_eq!(compare_ids("100", "100"), Ordering::Equal);
        assert_eq!(compare_ids("007", "8"), Ordering::Less);
        assert_eq!(compare_ids("abc", "abd"), Ordering::Less);
        assert_eq!(compare_ids("10", "1a"), Ordering::Less);
        assert_eq!(max_id(["5", "1000", "999", "20"]), Some("1000"));
        assert_eq!(max_id(std::iter::empty()), None);
    }

    #[test]
    fn id_order_is_total_so_sorting_never_panics() {
        let mut ids: Vec<&str> = vec![
            "10", "9", "1a", "", "007", "7", "a", "Z", "100", "0", "9a", "-1",
        ];
        ids.sort_by(|a, b| compare_ids(a, b));
        for w in ids.windows(2) {
            assert_ne!(compare_ids(w[0], w[1]), Ordering::Greater, "{w:?}");
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(compare_ids(a, b), compare_ids(b, a).reverse());
                for c in &ids {
                    if compare_ids(a, b).is_le() && compare_ids(b, c).is_le() {
                        assert!(compare_ids(a, c).is_le(), "{a} {b} {c}");
                    }
                }
            }
        }
    }
}
