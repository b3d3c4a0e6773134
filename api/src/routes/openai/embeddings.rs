//! `POST /embeddings`: vectors for one text or several, run as a job and answered when it ends,
//! as JSON numbers or (what the official Python package asks for by default) base64 of the
//! little-endian `f32`s.

use super::requests::{EmbeddingsBody, EncodingFormat};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_core::domain::JobRequest;
use tollgate_core::domain::openai_batch::Endpoint;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::objects;
use crate::AppState;
use crate::access::auth::Caller;
use crate::calls::feed;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(embeddings))
}

/// Embeddings
#[utoipa::path(post,
    path = "/embeddings",
    tag = "OpenAI",
    description = "Vectors as JSON numbers or base64 of little-endian f32s.",
    request_body = EmbeddingsBody,
    responses(
        (status = 200, description = "A `list` of `embedding`s in OpenAI's shape", body = Object, headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "invalid request (OpenAI's error shape), naming the parameter"),
        (status = 404, description = "`model_not_found`"),
        (status = 504, description = "`job_still_running`: the job outlived TOLLGATE_SYNC_TIMEOUT_SECS; it goes on"),
    ))]
async fn embeddings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonBody(body): JsonBody<EmbeddingsBody>,
) -> Result<Response, ApiError> {
    let (request, format) = body.parse()?;
    let request = JobRequest::Embedding(request);
    let job = feed::call_to_end(&state, &caller, &client, request).await?;
    let mut body = objects::job_answer(Endpoint::Embeddings, &job, None);
    if format == EncodingFormat::Base64
        && let Some(data) = body["data"].as_array_mut()
    {
        for item in data {
            item["embedding"] = json!(base64_vector(&item["embedding"]));
        }
    }
    let response = crate::calls::answer::with_request_id(Json(body).into_response(), job.id);
    Ok(crate::calls::answer::with_cache(response, job.cache))
}

/// A vector as base64 of its little-endian `f32`s.
fn base64_vector(vector: &Value) -> String {
    let bytes: Vec<u8> = vector
        .as_array()
        .map(|numbers| {
            numbers
                .iter()
                .flat_map(|n| (n.as_f64().unwrap_or_default() as f32).to_le_bytes())
                .collect()
        })
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_is_its_little_endian_floats_in_base64() {
        let encoded = base64_vector(&json!([1.0, -0.5]));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(floats, [1.0, -0.5]);
    }
}
