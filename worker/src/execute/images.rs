//! A job's images made ready for its calls: a batch item's image URLs fetched, once (the bytes
//! stored with the day's images and the job's request rewritten to name them, in one transaction,
//! so a retry, a fallback or a redelivery never fetches again), then every image's bytes loaded
//! from Postgres into the request the providers are sent.
//!
//! An image URL that gives no image fails only its own item: `invalid_image` when the URL is at
//! fault, `image_unreachable` when its server did not answer.

use tollgate_core::db::runs::{ClaimedJob, Outcome};
use tollgate_core::db::{images, jobs};
use tollgate_core::domain::conversation::{ImageSource, KeptImage};
use tollgate_core::domain::{JobErrorCode, JobRequest};
use uuid::Uuid;

use super::halt::{Halt, persistently};
use crate::Context;

/// A job's request as its calls send it.
pub(super) enum Ready {
    /// It shows no images: the claimed request as it is.
    Plain,
    /// Its images' bytes loaded.
    Loaded(JobRequest),
    /// An image could not be had: the job ends so.
    Failed(Outcome),
}

/// Makes `job`'s images ready (see the module's docs) for the claim `claim_id`.
pub(super) async fn ready(
    context: &Context,
    job: &ClaimedJob,
    claim_id: Uuid,
) -> Result<Ready, Halt> {
    if job.request.images().is_empty() {
        return Ok(Ready::Plain);
    }
    let mut request = job.request.clone();
    if let Err(failed) = fetch(context, &mut request).await {
        return Ok(Ready::Failed(failed));
    }
    let fetched = job
        .request
        .images()
        .iter()
        .any(|image| image.kept().is_none());
    if fetched {
        persistently(context, "keep images", || {
            keep(context, job, claim_id, &request)
        })
        .await?;
    }
    let day = images::day_of(job.id);
    let digests: Vec<Vec<u8>> = request
        .images()
        .iter()
        .filter_map(|image| image.kept())
        .filter(|kept| kept.data.is_none())
        .map(KeptImage::digest)
        .collect();
    let loaded = persistently(context, "load images", || {
        images::load(&context.pool, job.tenant_id, day, &digests)
    })
    .await?;
    for image in request.images_mut() {
        let ImageSource::Kept(kept) = &mut image.source else {
            continue;
        };
        if kept.data.is_none() {
            let digest = kept.digest();
            kept.data = loaded
                .iter()
                .find(|(stored, _)| *stored == digest)
                .map(|(_, data)| data.clone());
        }
        if kept.data.is_none() {
            let message = format!("the image {} is no longer stored", kept.sha256);
            let outcome = Outcome::failed_without_call(JobErrorCode::InternalError, message);
            return Ok(Ready::Failed(outcome));
        }
    }
    Ok(Ready::Loaded(request))
}

/// Fetches the images `request` names by URL, all at once; the first that fails ends the job.
async fn fetch(context: &Context, request: &mut JobRequest) -> Result<(), Outcome> {
    context
        .image_fetcher
        .fetch_all(request)
        .await
        .map_err(|(k, failed)| {
            let code = match failed.retryable {
                true => JobErrorCode::ImageUnreachable,
                false => JobErrorCode::InvalidImage,
            };
            Outcome::failed_without_call(code, format!("image {k}: {}", failed.message))
        })
}

/// Stores the fetched images and rewrites the job's request to name them, in one transaction.
async fn keep(
    context: &Context,
    job: &ClaimedJob,
    claim_id: Uuid,
    request: &JobRequest,
) -> Result<(), sqlx::Error> {
    let mut tx = context.pool.begin().await?;
    let mut stored = std::collections::HashSet::new();
    images::store_shown(&mut tx, job.tenant_id, job.id, request, &mut stored).await?;
    if !jobs::keep_fetched(&mut *tx, job.id, claim_id, request).await? {
        tracing::warn!("the job was reclaimed while its images were fetched");
    }
    tx.commit().await
}
