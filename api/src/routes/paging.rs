//! Cursor pagination shared by the listings whose cursor is an id: the page size, the cursor from
//! the query string, and the cursor of the next page.

use std::str::FromStr;

use crate::error::ApiError;

/// The page size asked for: 20 unless given, and 1 to 100.
pub fn limit(asked: Option<i64>) -> Result<i64, ApiError> {
    let limit = asked.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 100",
        ));
    }
    Ok(limit)
}

/// The cursor given, as the id it stands for; 422 on `cursor` when it is not one.
pub fn cursor<C: FromStr>(given: Option<String>) -> Result<Option<C>, ApiError> {
    given
        .map(|c| {
            c.parse::<C>().map_err(|_| {
                ApiError::invalid_field("cursor", "is not a cursor from a previous page")
            })
        })
        .transpose()
}

/// The cursor of the page after `data`: its last item's, if the page is full.
pub fn next_cursor<T, C>(data: &[T], limit: i64, cursor_of: impl Fn(&T) -> C) -> Option<C> {
    (data.len() as i64 == limit)
        .then(|| data.last().map(cursor_of))
        .flatten()
}
