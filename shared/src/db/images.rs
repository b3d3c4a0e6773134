//! `images`: the bytes of the images jobs show, stored once per tenant and day (see
//! `migrations/0019_images.sql`), written with the jobs that show them and read by the worker
//! before a provider call.

use std::collections::HashSet;

use bytes::Bytes;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::conversation::KeptImage;
use crate::domain::{JobId, JobRequest, TenantId};

/// The `day` a job's images are kept under: the lowest UUIDv7 of the UTC midnight that begins
/// the day in its id, the bound of the day's partition.
pub fn day_of(job: JobId) -> Uuid {
    let at = super::partitions::time_of(job.0);
    let midnight = at.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    super::partitions::floor(midnight.and_utc())
}

/// Stores `image`'s bytes for `tenant_id` on `day`, unless that day holds them already; an image
/// whose bytes are not loaded has nothing to store.
pub async fn store(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    day: Uuid,
    image: &KeptImage,
) -> Result<(), sqlx::Error> {
    let Some(data) = &image.data else {
        return Ok(());
    };
    sqlx::query!(
        "insert into images (day, tenant_id, sha256, media_type, data)
         values ($1, $2, $3, $4, $5)
         on conflict do nothing",
        day,
        tenant_id as TenantId,
        image.digest(),
        image.media_type.as_str(),
        data.as_ref(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The bytes `tenant_id` stored on `day` under each of `digests` (one missing is left out).
pub async fn load(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    day: Uuid,
    digests: &[Vec<u8>],
) -> Result<Vec<(Vec<u8>, Bytes)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select sha256, data from images
          where day = $1 and tenant_id = $2 and sha256 = any($3)",
        day,
        tenant_id as TenantId,
        digests,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.sha256, Bytes::from(row.data)))
        .collect())
}

/// Stores the images `request` shows whose bytes were read (at intake), under the day of `job`;
/// `stored` holds what this transaction stored already (a batch's items share images), each kept
/// once.
pub async fn store_shown(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    job: JobId,
    request: &JobRequest,
    stored: &mut HashSet<(Uuid, String)>,
) -> Result<(), sqlx::Error> {
    let day = day_of(job);
    for image in request.images() {
        if let Some(kept) = image.kept()
            && kept.data.is_some()
            && stored.insert((day, kept.sha256.clone()))
        {
            store(&mut *conn, tenant_id, day, kept).await?;
        }
    }
    Ok(())
}
