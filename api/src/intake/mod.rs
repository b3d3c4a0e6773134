//! The one intake sequence every surface admits work through.
//!
//! Before it, a surface's extractors have authenticated the caller and held it to its access rules
//! and rate limits ([`crate::access::auth::Caller`]), and the surface has parsed its own dialect into a job
//! request or a batch. From there the steps are the same for every surface:
//!
//! 1. what every submission may carry is validated the same way: [`check_metadata`],
//!    [`served_model`], [`webhook_url`], and its images read ([`images`]: decoded, or fetched);
//! 2. a job is refused while the broker is down (nothing is written; batch items wait in Postgres,
//!    so a batch is not);
//! 3. one transaction reserves the tenant's quota, records the `Idempotency-Key` with the first
//!    answer, and inserts the work; a job with neither is instead written by one multi-row insert
//!    with the jobs submitted beside it ([`coalesced`]);
//! 4. a job is published after the commit (coalesced jobs as one window of confirms).
//!
//! The surface says how the work is answered ([`Accepted`], in its dialect), and a retry with the
//! same key is answered the same way.

pub mod admission;
pub mod cached;
pub mod coalesced;
pub mod idempotency;
pub mod images;
pub mod published;

use std::future::Future;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tollgate_core::db::batches::{Batch, NewBatch};
use tollgate_core::db::jobs::NewJob;
use tollgate_core::db::quotas::Limits;
use tollgate_core::db::tokens::Principal;
use tollgate_core::db::webhooks;
use tollgate_core::domain::cache::{CacheAsk, JobCache};
use tollgate_core::domain::{
    Capabilities, Capability, Job, JobId, JobKind, JobRequest, ModelName, NUL_REFUSED, TenantId,
    Unserved, nul_in_value,
};
use tollgate_core::webhook::{check_target, parse_url};

use crate::AppState;
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};
use crate::watching::follow::Following;
use crate::watching::watch::Watch;
use idempotency::{Begun, Key};
use images::ImagePlaces;

/// Largest `metadata` object accepted, in bytes of JSON.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// How admitted work is answered: what a retry with the same `Idempotency-Key` gets too.
pub struct Accepted {
    pub status: StatusCode,
    pub location: String,
    pub body: Value,
}

impl Accepted {
    pub fn into_response(self) -> Result<Response, ApiError> {
        let location = HeaderValue::from_str(&self.location).map_err(ApiError::internal)?;
        Ok((self.status, [(header::LOCATION, location)], Json(self.body)).into_response())
    }
}

/// The end of an intake: the work admitted now, with its answer, or a retry's first answer.
pub enum Intake<T> {
    Admitted { work: T, answer: Accepted },
    Replayed(Response),
}

impl<T> Intake<T> {
    /// The answer, for a surface with nothing more to do once the work is admitted.
    pub fn into_response(self) -> Result<Response, ApiError> {
        match self {
            Self::Admitted { answer, .. } => answer.into_response(),
            Self::Replayed(first) => Ok(first),
        }
    }
}

/// Admits one job and publishes it (if the publish fails after the commit the job is still
/// accepted: it is durable, and the worker's sweeper publishes it). A job the response cache
/// answers (`ask` is what the request asked of it) is admitted ended, without queueing.
pub async fn job(
    state: &AppState,
    caller: &Principal,
    key: Option<&Key>,
    mut job: NewJob,
    ask: CacheAsk,
    answer: impl FnOnce(&Job) -> Result<Accepted, ApiError>,
) -> Result<Intake<Job>, ApiError> {
    job.cache = cached::decide(state, caller, &job.request, ask);
    if job.cache.reads()
        && let Some(found) = cached::lookup(state, caller.tenant_id, &job.cache).await?
    {
        return cached::admit(state, caller, key, job, found, answer).await;
    }
    if !state.broker.is_connected() {
        return Err(ApiError::unavailable(
            "the message broker is unavailable",
            5,
        ));
    }
    if key.is_none() && !job.needs_transaction(&caller.limits) {
        // Written and published together with whatever else this instance admits meanwhile.
        let job = state
            .inserter
            .insert(job)
            .await
            .map_err(ApiError::internal)??;
        state.metrics.accepted(job.kind.as_str(), false, 1);
        let answer = answer(&job)?;
        return Ok(Intake::Admitted { work: job, answer });
    }
    let trace = job.traceparent;
    let job_trace = trace.as_ref();
    let intake = admit(state, caller, key, job, answer).await?;
    if let Intake::Admitted { work: job, .. } = &intake {
        state.metrics.accepted(job.kind.as_str(), false, 1);
        match state.broker.publish_job(job.id, job_trace).await {
            Ok(()) => state.published.confirmed(job.id),
            Err(error) => {
                tracing::warn!(job_id = %job.id, %error, "publish failed; the sweeper will resend")
            }
        }
    }
    Ok(intake)
}

/// A call admitted by a drop-in surface (OpenAI's, Ollama's): the job, watched from before it
/// existed, and for a streaming call its text followed from before it was published.
pub struct Call {
    pub job: Job,
    pub watch: Watch,
    pub following: Option<Following>,
}

/// What a drop-in surface's call asks: the request, where its images were given (in the
/// surface's terms), the size of the body it came in (0 for a surface that takes long bodies
/// whole, the Anthropic surface's), and the job's metadata.
pub struct Asked {
    pub request: JobRequest,
    pub places: ImagePlaces,
    pub body: usize,
    pub metadata: Option<Value>,
}

impl Asked {
    /// A request that shows no images.
    pub fn plain(request: JobRequest) -> Self {
        Self {
            request,
            places: ImagePlaces::default(),
            body: 0,
            metadata: None,
        }
    }
}

/// Admits a drop-in surface's call as a job, its images read first. These surfaces answer when
/// the job ends (or stream it), so the job is watched, and its text followed, before it is
/// published.
pub async fn call(
    state: &AppState,
    caller: &Principal,
    client: &ClientInfo,
    asked: Asked,
    stream: bool,
) -> Result<Call, ApiError> {
    let Asked {
        mut request,
        places,
        body,
        metadata,
    } = asked;
    let model = request.model();
    match judge(state, caller, model, request.needs()).await {
        Ok(()) => {}
        Err(Unserved::Lacks(capability)) => {
            return Err(lacks(model.as_str(), capability, &places));
        }
        // As OpenAI and Ollama answer a model they do not have.
        Err(unserved) => {
            return Err(ApiError::not_found(unserved.explain(model.as_str()))
                .with_code(ErrorCode::ModelNotFound)
                .with_field("model"));
        }
    }
    images::read(state, &mut request, &places, body).await?;
    let new_job = NewJob {
        id: JobId::new(),
        tenant_id: caller.tenant_id,
        token_id: Some(caller.token_id),
        request,
        metadata: check_metadata(metadata)?,
        origin: client.origin.clone(),
        client_ip: client.ip,
        reservation: None,
        webhook_url: None,
        stream_to: stream.then(|| state.followers.key().to_owned()),
        traceparent: client.trace,
        cache: JobCache::default(),
    };
    let watch = state.watchers.watch(new_job.id);
    let following = match stream {
        true => Some(state.followers.follow(new_job.id).await?),
        false => None,
    };
    let accepted = |job: &Job| {
        Ok(Accepted {
            status: StatusCode::ACCEPTED,
            location: format!("/v1/jobs/{}", job.id),
            body: Value::Null,
        })
    };
    match job(state, caller, None, new_job, client.cache, accepted).await? {
        Intake::Admitted { work, .. } => Ok(Call {
            job: work,
            watch,
            following,
        }),
        Intake::Replayed(_) => Err(ApiError::internal(anyhow::anyhow!(
            "a call without an idempotency key was replayed"
        ))),
    }
}

/// Admits one batch with its items; the dispatcher releases them. Under a response cache, each
/// item carries its key: it is answered when claimed if an answer is stored by then.
pub async fn batch(
    state: &AppState,
    caller: &Principal,
    key: Option<&Key>,
    mut batch: NewBatch,
    answer: impl FnOnce(&Batch) -> Result<Accepted, ApiError>,
) -> Result<Intake<Batch>, ApiError> {
    // Each item looks for a stored answer when it is claimed (or waits for an identical item in
    // flight): accepted as fast as a batch without a cache.
    let requests = batch.items.iter().map(|item| &item.request);
    batch.cache = cached::decide_all(state, caller, requests, CacheAsk::default());
    let intake = admit(state, caller, key, batch, answer).await?;
    if let Intake::Admitted { work: batch, .. } = &intake {
        let kind = JobKind::parse(&batch.kind).map_or("unknown", JobKind::as_str);
        let items = u64::try_from(batch.counts.total).unwrap_or(0);
        state.metrics.accepted(kind, true, items);
    }
    Ok(intake)
}

/// Work that is admitted by inserting it, its quota reserved first.
trait Admissible {
    type Admitted;

    /// Whether admitting it takes more than one statement for a tenant with `limits`.
    fn needs_transaction(&self, limits: &Limits) -> bool;

    fn insert<'a>(
        self,
        tx: &'a mut PgConnection,
        limits: &'a Limits,
    ) -> impl Future<Output = Result<Self::Admitted, ApiError>> + Send + 'a;

    /// Whether `admitted` is stored: asked when the connection broke as its transaction
    /// committed, which it may have done all the same.
    fn stored<'a>(
        admitted: &'a Self::Admitted,
        tenant_id: TenantId,
        pool: &'a PgPool,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;
}

impl Admissible for NewJob {
    type Admitted = Job;

    /// A tenant without limits pays for nothing but the insert, unless the job shows images (they
    /// are written with it).
    fn needs_transaction(&self, limits: &Limits) -> bool {
        !limits.is_unlimited() || !self.request.images().is_empty()
    }

    fn insert<'a>(
        self,
        tx: &'a mut PgConnection,
        limits: &'a Limits,
    ) -> impl Future<Output = Result<Job, ApiError>> + Send + 'a {
        admission::admit_in(tx, limits, self)
    }

    async fn stored(job: &Job, tenant_id: TenantId, pool: &PgPool) -> Result<bool, sqlx::Error> {
        tollgate_core::db::jobs::exists(pool, tenant_id, job.id).await
    }
}

impl Admissible for NewBatch {
    type Admitted = Batch;

    fn needs_transaction(&self, _: &Limits) -> bool {
        true
    }

    fn insert<'a>(
        self,
        tx: &'a mut PgConnection,
        limits: &'a Limits,
    ) -> impl Future<Output = Result<Batch, ApiError>> + Send + 'a {
        admission::admit_batch(tx, limits, self)
    }

    async fn stored(
        batch: &Batch,
        tenant_id: TenantId,
        pool: &PgPool,
    ) -> Result<bool, sqlx::Error> {
        Ok(tollgate_core::db::batches::get(pool, tenant_id, batch.id)
            .await?
            .is_some())
    }
}

/// Step 3: one transaction for the reservation, the key's record and the insert with its images
/// (a single job without a key, limits or images is one statement, no transaction). A refusal
/// rolls back at once (a dropped transaction would hold the key's lock and the tenant's month row
/// until its connection was next used).
async fn admit<W: Admissible>(
    state: &AppState,
    caller: &Principal,
    key: Option<&Key>,
    work: W,
    answer: impl FnOnce(&W::Admitted) -> Result<Accepted, ApiError>,
) -> Result<Intake<W::Admitted>, ApiError> {
    if key.is_none() && !work.needs_transaction(&caller.limits) {
        let mut connection = state.pool.acquire().await?;
        let work = work.insert(&mut connection, &caller.limits).await?;
        let answer = answer(&work)?;
        return Ok(Intake::Admitted { work, answer });
    }
    let mut tx = match key {
        None => state.pool.begin().await?,
        Some(key) => match idempotency::begin(&state.pool, caller.tenant_id, key).await? {
            Begun::Replay(first) => return Ok(Intake::Replayed(first)),
            Begun::Fresh(tx) => tx,
        },
    };
    let admitted = async {
        let work = work.insert(&mut tx, &caller.limits).await?;
        let answer = answer(&work)?;
        if let Some(key) = key {
            let Accepted {
                status,
                location,
                body,
            } = &answer;
            idempotency::record(&mut tx, caller.tenant_id, key, *status, location, body).await?;
        }
        Ok::<_, ApiError>((work, answer))
    }
    .await;
    let (work, answer) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return Err(idempotency::abandon(tx, error).await),
    };
    // A commit whose answer was lost with the connection may have committed: once the database
    // answers again (within `IN_DOUBT_FOR`), if the work is there, it was admitted, and the
    // client is told so rather than sent to submit it again.
    if let Err(error) = tx.commit().await {
        let committed = tollgate_core::db::is_unreachable(&error)
            && tollgate_core::db::when_reachable(coalesced::IN_DOUBT_FOR, || {
                W::stored(&work, caller.tenant_id, &state.pool)
            })
            .await
            .unwrap_or(false);
        if !committed {
            return Err(error.into());
        }
        tracing::warn!(%error, "the commit's answer was lost, but it committed");
    }
    Ok(Intake::Admitted { work, answer })
}

/// A submission's `metadata`: a JSON object of at most 16 KiB, without NUL characters (a body's
/// were refused with the body; a batch's from its query string were not).
pub fn check_metadata(metadata: Option<Value>) -> Result<Option<Value>, ApiError> {
    match metadata {
        None | Some(Value::Null) => Ok(None),
        Some(metadata @ Value::Object(_)) => {
            if let Some(path) = nul_in_value(&metadata) {
                let field = match path.as_str() {
                    "body" => "metadata".to_owned(),
                    path => format!("metadata.{path}"),
                };
                return Err(ApiError::invalid_field(field, NUL_REFUSED));
            }
            let size = serde_json::to_vec(&metadata)
                .map_err(ApiError::internal)?
                .len();
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::invalid_field(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Ok(Some(metadata))
        }
        Some(_) => Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    }
}

/// The model, if a provider can serve it for `caller` as the settings stand
/// ([`Runtime::serves`](tollgate_core::domain::Runtime::serves), the routing decision itself);
/// else 422 `model_not_served` on `model`, naming it and the reason, before anything is written.
pub async fn served_model(
    state: &AppState,
    caller: &Principal,
    model: &str,
) -> Result<ModelName, ApiError> {
    let model = ModelName::parse(model)?;
    judge(state, caller, &model, Capabilities::NONE)
        .await
        .map_err(|unserved| not_served(&model, unserved))?;
    Ok(model)
}

/// [`served_model`] for a whole request, in one routing decision: its model served for
/// `caller`, and by a step able to do what the request needs (see images, call tools); else 422
/// `model_not_served` on `model`, or `model_lacks_capability` naming the field that needs what
/// no step can do (the first image, as `places` names it; `tools`), before anything is written.
pub async fn served_request(
    state: &AppState,
    caller: &Principal,
    request: &JobRequest,
    places: &ImagePlaces,
) -> Result<(), ApiError> {
    let model = request.model();
    match judge(state, caller, model, request.needs()).await {
        Ok(()) => Ok(()),
        Err(Unserved::Lacks(capability)) => Err(lacks(model.as_str(), capability, places)),
        Err(unserved) => Err(not_served(model, unserved)),
    }
}

/// Whether `model` is served for `caller` at all, for what answers without a job
/// (Anthropic's `count_tokens`): a 404 `model_not_found` if not, as OpenAI and Anthropic answer.
pub async fn served(
    state: &AppState,
    caller: &Principal,
    model: &ModelName,
) -> Result<(), ApiError> {
    judge(state, caller, model, Capabilities::NONE)
        .await
        .map_err(|unserved| {
            ApiError::not_found(unserved.explain(model.as_str()))
                .with_code(ErrorCode::ModelNotFound)
                .with_field("model")
        })
}

/// Whether `model` is served for `caller` by a step able to do what `needs` says. A refusal is
/// judged once more after a look at the stored settings' version: a route an admin just added,
/// or a model a worker just listed, may not have reached this instance yet.
async fn judge(
    state: &AppState,
    caller: &Principal,
    model: &ModelName,
    needs: Capabilities,
) -> Result<(), Unserved> {
    let serves = || {
        state
            .runtime
            .current()
            .serves(model.as_str(), caller.data_policy, needs)
    };
    if serves().is_ok() {
        return Ok(());
    }
    if let Err(error) = state.runtime.refresh().await {
        tracing::warn!(%error, "cannot check the settings; judging the model by the ones held");
    }
    serves()
}

/// 422 `model_not_served` on `model`, naming it and the reason.
fn not_served(model: &ModelName, unserved: Unserved) -> ApiError {
    ApiError::unprocessable(ErrorCode::ModelNotServed, unserved.explain(model.as_str()))
        .with_field("model")
}

/// Whether every item of a batch (whose model [`served_model`] judged) can be served by a step
/// able to do what it needs, judged once for each different set of needs (the items share their
/// model); else 422 `model_lacks_capability` naming the item's field.
pub fn capable_items(
    state: &AppState,
    caller: &Principal,
    items: &[tollgate_core::domain::ValidItem],
) -> Result<(), ApiError> {
    let mut judged = std::collections::HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let model = item.request.model().as_str();
        let needs = item.request.needs();
        let lacked = *judged
            .entry((model, needs))
            .or_insert_with(|| lacking(state, caller, model, needs));
        if let Some(capability) = lacked {
            let places = ImagePlaces::of_item(i, &item.request);
            return Err(lacks(model, capability, &places));
        }
    }
    Ok(())
}

/// What no step of `model`'s route can do of `needs`, if anything.
fn lacking(
    state: &AppState,
    caller: &Principal,
    model: &str,
    needs: Capabilities,
) -> Option<Capability> {
    match state
        .runtime
        .current()
        .serves(model, caller.data_policy, needs)
    {
        Err(Unserved::Lacks(capability)) => Some(capability),
        // Served, or not served at all: `served_model` judged the model.
        _ => None,
    }
}

/// The refusal of a request for `model` that needs `capability`, naming what needs it.
fn lacks(model: &str, capability: Capability, places: &ImagePlaces) -> ApiError {
    let field = match capability {
        Capability::Vision => places.of(0),
        Capability::Tools => "tools".to_owned(),
        _ => "model".to_owned(),
    };
    let detail = Unserved::Lacks(capability).explain(model);
    ApiError::invalid_field(field, detail).with_code(ErrorCode::ModelLacksCapability)
}

/// A submission's `webhook_url`: well-formed, reaching only public addresses (unless this server
/// allows private ones), and signable (the tenant has a secret). Returns it normalized.
pub async fn webhook_url(
    state: &AppState,
    tenant_id: TenantId,
    raw: &str,
) -> Result<String, ApiError> {
    let url = checked_url(state, "webhook_url", raw).await?;
    if !webhooks::has_secret(&state.pool, tenant_id).await? {
        return Err(ApiError::invalid_field(
            "webhook_url",
            "cannot be signed: the tenant has no webhook secret yet (an admin creates one with \
             PUT /v1/admin/tenants/{id}/webhook)",
        ));
    }
    Ok(url)
}

/// A webhook URL in `field`, parsed and its target checked by the SSRF guard.
pub async fn checked_url(state: &AppState, field: &str, raw: &str) -> Result<String, ApiError> {
    let url = parse_url(raw).map_err(|error| ApiError::invalid_field(field, error.to_string()))?;
    check_target(&url, state.webhook_allow_private)
        .await
        .map_err(|error| ApiError::invalid_field(field, error.to_string()))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_an_object_of_bounded_size_without_nul() {
        assert_eq!(check_metadata(None).expect("none"), None);
        assert_eq!(check_metadata(Some(Value::Null)).expect("null"), None);
        assert!(check_metadata(Some(json!({ "k": "v" }))).is_ok());
        let not_object = check_metadata(Some(json!([1]))).expect_err("an array");
        assert_eq!(not_object.field_name(), Some("metadata".into()));
        let big = json!({ "k": "x".repeat(MAX_METADATA_BYTES) });
        assert!(check_metadata(Some(big)).is_err());
        let nul = check_metadata(Some(json!({ "k": { "j": "a\u{0}" } }))).expect_err("a NUL");
        assert_eq!(nul.field_name(), Some("metadata.k.j".into()));
    }
}
