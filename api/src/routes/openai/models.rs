//! `GET /models` and `GET /models/{id}`: the models Tollgate routes, as OpenAI lists them. A
//! model is listed once whatever providers serve it; `owned_by` names the first of them.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::{ApiError, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/models", get(list))
        .route("/models/{*id}", get(show))
}

async fn list(State(state): State<AppState>, Caller(_): Caller) -> Json<Value> {
    let data: Vec<Value> = served(&state)
        .into_iter()
        .map(|(id, owner)| model(&id, owner))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn show(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    served(&state)
        .into_iter()
        .find(|(name, _)| *name == id)
        .map(|(id, owner)| Json(model(&id, owner)))
        .ok_or_else(|| {
            ApiError::not_found(format!("the model {id:?} does not exist"))
                .with_code(ErrorCode::ModelNotFound)
        })
}

/// Every routed model with the provider it goes to first.
fn served(state: &AppState) -> Vec<(String, &'static str)> {
    state
        .runtime
        .current()
        .routes
        .all()
        .into_iter()
        .map(|(model, routes)| {
            let owner = routes.first().map_or("tollgate", |(p, _)| p.as_str());
            (model.to_owned(), owner)
        })
        .collect()
}

fn model(id: &str, owned_by: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": owned_by })
}
