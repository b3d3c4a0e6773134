//! What the load generators share: percentiles and medians of what they measured, waiting for a
//! batch to end, and the shapes of request `tollgate-bench` submits (`shapes`).

pub mod shapes;

use std::time::Duration;

/// The `p` quantile (0 < p ≤ 1) of latencies sorted ascending, by the nearest-rank method; zero
/// when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

/// Polls batch `id` at `base` every `every` until it has ended; the ended batch.
pub async fn ended_batch(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    every: Duration,
) -> anyhow::Result<serde_json::Value> {
    loop {
        tokio::time::sleep(every).await;
        let batch: serde_json::Value = http
            .get(format!("{base}/v1/batches/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        if batch["finished_at"].is_string() {
            return Ok(batch);
        }
    }
}

/// The median of per-round figures (the upper one of an even count); zero when there are none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_and_medians() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
