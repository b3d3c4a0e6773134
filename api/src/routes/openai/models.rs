//! `GET /models` and `GET /models/{id}`: the models Tollgate routes, as OpenAI lists them. A
//! model is listed once whatever providers serve it; `owned_by` names the first of them.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::{ApiError, ErrorCode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// The models, as OpenAI lists them.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiModelList)]
struct ModelList {
    /// `list`.
    object: &'static str,
    data: Vec<Model>,
}

/// A model, as OpenAI shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiModel)]
struct Model {
    id: String,
    /// `model`.
    object: &'static str,
    /// Always 0: the gateway does not know when a model was made.
    created: i64,
    /// The provider the model goes to first, `ollama` or `openai` (`tollgate` if it has none).
    owned_by: &'static str,
}

/// Models
#[utoipa::path(get,
    path = "/models",
    tag = "OpenAI",
    description = "The models Tollgate routes, in OpenAI's list shape.",
    responses(
        (status = 200, description = "Every routed model", body = ModelList),
    ))]
async fn list(State(state): State<AppState>, Caller(_): Caller) -> Json<ModelList> {
    let data = served(&state)
        .into_iter()
        .map(|(id, owned_by)| model(id, owned_by))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// Model
#[utoipa::path(get,
    path = "/models/{*id}",
    tag = "OpenAI",
    description = "One routed model.",
    params(("id" = String, Path, description = "The model (it may hold `/`)")),
    responses(
        (status = 200, description = "The model", body = Model),
        (status = 404, description = "`model_not_found`"),
    ))]
async fn show(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    served(&state)
        .into_iter()
        .find(|(name, _)| *name == id)
        .map(|(id, owned_by)| Json(model(id, owned_by)))
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

fn model(id: String, owned_by: &'static str) -> Model {
    Model {
        id,
        object: "model",
        created: 0,
        owned_by,
    }
}
