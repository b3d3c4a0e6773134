//! Cursor pagination shared by the listings whose cursor is an id: the page size, the cursor from
//! the query string, and the cursor of the next page.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use crate::http::error::ApiError;

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

/// A listing's query whose cursor is read as `C` directly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page<C> {
    pub limit: Option<i64>,
    pub cursor: Option<C>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct Listing<T, C> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    #[schema(schema_with = cursor_schema)]
    pub next_cursor: Option<C>,
}

/// A listing's cursor: its last item's id (a UUID or a number), or `null`. Written out because
/// utoipa describes a generic `Option<C>` as `C` alone, not nullable.
fn cursor_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Integer,
            Type::Null,
        ]))
        .build()
}

/// The page size an operator's listing asks for: 50 unless given, and 1 to 500.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    Ok(limit)
}
