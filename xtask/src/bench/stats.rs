//! Statistics over rounds.

/// The middle value (the upper one of an even count).
pub fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> T {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_value() {
        assert_eq!(median([3, 1, 2]), 2);
        assert_eq!(median([5.0, 1.0, 9.0, 7.0]), 7.0);
    }
}
