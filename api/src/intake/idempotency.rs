//! `Idempotency-Key` on the submit endpoints, with Stripe's semantics (and the IETF draft's): the
//! first answer to a key is recorded in the same transaction as the work it accepted and replayed
//! to every retry (`Idempotent-Replayed: true`); the same key with another request is 422
//! `idempotency_key_reused`; a retry while the first request is still in flight is 409
//! `idempotency_key_in_use`. Keys belong to a tenant and are kept a day. [`IdempotentJson`] reads
//! a submission's body with its key.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use tollgate_core::db::idempotency;
use tollgate_core::domain::TenantId;

use crate::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{body_bytes, is_json, parse, refuse_large_without_images};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted.
const MAX_KEY_CHARS: usize = 255;

/// A JSON body, with the request's `Idempotency-Key` (and its fingerprint) when it sent one.
///
/// With `IMAGES`, the route takes images inline: bodies up to the image body limit, the intake
/// holding one past the ordinary limit to the images it carries (by its `size`).
pub struct IdempotentJson<T, const IMAGES: bool = false> {
    pub body: T,
    pub key: Option<Key>,
    pub size: usize,
}

impl<T: DeserializeOwned, const IMAGES: bool> FromRequest<AppState> for IdempotentJson<T, IMAGES> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let key_header = req.headers().get(HEADER).cloned();
        let limit = match IMAGES {
            true => state.image_body_limit,
            false => state.body_limit,
        };
        let bytes = body_bytes(req, state, limit).await?;
        if IMAGES {
            refuse_large_without_images(&bytes, state)?;
        }
        let key = Key::from_header(key_header.as_ref(), || fingerprint(&method, &uri, &bytes))?;
        let body = parse(&bytes)?;
        Ok(Self {
            body,
            key,
            size: bytes.len(),
        })
    }
}

/// A request's key and the fingerprint of the request it came with.
pub struct Key {
    value: String,
    fingerprint: [u8; 32],
}

impl Key {
    /// The key the request sent, if any: 1 to 255 visible ASCII characters, else 400 naming it.
    /// `fingerprint` is computed only when there is a key.
    pub fn from_header(
        value: Option<&HeaderValue>,
        fingerprint: impl FnOnce() -> [u8; 32],
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| (1..=MAX_KEY_CHARS).contains(&v.len()))
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::malformed(format!(
                    "the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
                ))
            })?;
        Ok(Some(Self {
            value: value.to_owned(),
            fingerprint: fingerprint(),
        }))
    }
}

/// What identifies a request for its key: method, path and query, and body.
pub fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b" ");
    hash.update(uri.path_and_query().map_or("", |p| p.as_str()));
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().into()
}

/// How a request with a key goes on.
pub enum Begun {
    /// The key is new: do the work in this transaction, [`record`] the answer, commit.
    Fresh(Transaction<'static, Postgres>),
    /// The key was used before for this very request: its first answer.
    Replay(Response),
}

/// Takes the key's lock and looks up its first answer. Unless the key is new, the transaction
/// (and with it the lock) ends here.
pub async fn begin(pool: &PgPool, tenant_id: TenantId, key: &Key) -> Result<Begun, ApiError> {
    let mut tx = pool.begin().await?;
    if !idempotency::try_lock(&mut tx, tenant_id, &key.value).await? {
        return Err(abandon(
            tx,
            ApiError::conflict(
                ErrorCode::IdempotencyKeyInUse,
                "a request with this Idempotency-Key is still in progress; retry when it has finished",
            ),
        )
        .await);
    }
    let first = match idempotency::find(&mut tx, tenant_id, &key.value).await {
        Ok(None) => return Ok(Begun::Fresh(tx)),
        Ok(Some(first)) => first,
        Err(error) => return Err(abandon(tx, error.into()).await),
    };
    let answer = if first.request_hash == key.fingerprint {
        replay(first).map(Begun::Replay)
    } else {
        Err(ApiError::unprocessable(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        ))
    };
    if let Err(error) = tx.rollback().await {
        tracing::warn!(%error, "cannot end an idempotency key's transaction");
    }
    answer
}

/// Rolls a submission's transaction back now and passes `error` on. A transaction merely dropped
/// is rolled back only when its connection is next used, and until then it would keep the key's
/// lock (and any row it locked): a client's prompt retry would get 409.
pub async fn abandon(tx: Transaction<'static, Postgres>, error: ApiError) -> ApiError {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!(error = %rollback, "cannot roll back a submission");
    }
    error
}

/// Records the answer to the key's first request, in the transaction of its work.
pub async fn record(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: TenantId,
    key: &Key,
    status: StatusCode,
    location: &str,
    body: &Value,
) -> Result<(), ApiError> {
    idempotency::record(
        tx,
        tenant_id,
        &key.value,
        &key.fingerprint,
        status.as_u16() as i16,
        Some(location),
        body,
    )
    .await?;
    Ok(())
}

fn replay(first: idempotency::Recorded) -> Result<Response, ApiError> {
    let status = u16::try_from(first.status_code)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::ACCEPTED);
    let mut response = (status, Json(first.response)).into_response();
    let headers = response.headers_mut();
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    if let Some(location) = first.location {
        let location = HeaderValue::from_str(&location).map_err(ApiError::internal)?;
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}
