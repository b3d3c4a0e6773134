//! `tollgate batch …`: submit, status, wait, results, cancel.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;

use crate::api::{Api, Batch, CliError, Submission};
use crate::progress::Progress;
use crate::{BatchCommand, EXIT_ITEMS_FAILED};

/// Reconnections of the progress stream in a row before the wait gives up.
const MAX_RECONNECTS: u32 = 5;

pub async fn run(api: &Api, command: BatchCommand, stdout: &mut dyn Write) -> Result<u8, CliError> {
    match command {
        BatchCommand::Submit {
            file,
            model,
            kind,
            template,
            metadata,
            webhook_url,
            idempotency_key,
            wait,
            out,
        } => {
            let batch = api
                .submit(&Submission {
                    file: &file,
                    kind: &kind,
                    model: &model,
                    template: template.as_deref(),
                    metadata: metadata.as_deref(),
                    webhook_url: webhook_url.as_deref(),
                    idempotency_key: idempotency_key.as_deref(),
                })
                .await?;
            writeln!(
                stdout,
                "batch {} accepted: {} items",
                batch.id, batch.counts.total
            )?;
            if !wait && out.is_none() {
                return Ok(0);
            }
            finish(api, batch, out.as_deref(), stdout).await
        }
        BatchCommand::Status { id, json } => {
            let batch = api.batch(&id).await?;
            if json {
                writeln!(stdout, "{:#}", batch.raw)?;
            } else {
                writeln!(stdout, "{}", describe(&batch))?;
            }
            Ok(0)
        }
        BatchCommand::Wait { id, out } => {
            let batch = api.batch(&id).await?;
            finish(api, batch, out.as_deref(), stdout).await
        }
        BatchCommand::Results { id, out } => {
            match out {
                Some(path) => {
                    let lines = save_results(api, &id, &path).await?;
                    writeln!(stdout, "{lines} results written to {}", path.display())?;
                }
                None => {
                    write_results(api, &id, stdout).await?;
                }
            }
            Ok(0)
        }
        BatchCommand::Cancel { id } => {
            let batch = api.cancel(&id).await?;
            writeln!(stdout, "{}", describe(&batch))?;
            Ok(0)
        }
    }
}

/// Follows the batch to its end, writes its results to `out` if given, and reports.
async fn finish(
    api: &Api,
    batch: Batch,
    out: Option<&Path>,
    stdout: &mut dyn Write,
) -> Result<u8, CliError> {
    let batch = follow(api, batch).await?;
    writeln!(stdout, "{}", describe(&batch))?;
    if let Some(path) = out {
        let lines = save_results(api, &batch.id, path).await?;
        writeln!(stdout, "{lines} results written to {}", path.display())?;
    }
    let clean = batch.status == "completed" && batch.counts.failed == 0;
    Ok(if clean { 0 } else { EXIT_ITEMS_FAILED })
}

/// Follows the batch's progress events to its end, drawing progress; a dropped stream is resumed
/// from its last event.
async fn follow(api: &Api, mut batch: Batch) -> Result<Batch, CliError> {
    let mut progress = Progress::new(&batch);
    progress.update(&batch);
    let mut last_event_id: Option<String> = None;
    let mut reconnects = 0;
    while !batch.has_ended() {
        match api.progress(&batch.id, last_event_id.as_deref()).await {
            Ok(events) => {
                let mut events = std::pin::pin!(events);
                while let Some(Ok((next, id))) = events.next().await {
                    progress.update(&next);
                    batch = next;
                    last_event_id = Some(id);
                    reconnects = 0;
                }
            }
            Err(refused @ CliError::Refused { .. }) => return Err(refused),
            Err(error) if reconnects >= MAX_RECONNECTS => return Err(error),
            Err(_) => {}
        }
        if !batch.has_ended() {
            reconnects += 1;
            if reconnects > MAX_RECONNECTS {
                return Err(CliError::Unexpected(
                    "the progress stream keeps closing before the batch ends".to_owned(),
                ));
            }
            // The stream dropped: back off a little, then read where the batch is.
            tokio::time::sleep(Duration::from_millis(250 * u64::from(reconnects))).await;
            batch = api.batch(&batch.id).await?;
            progress.update(&batch);
        }
    }
    progress.finish(&batch);
    Ok(batch)
}

/// Streams the batch's results into a file; the number of lines written.
async fn save_results(api: &Api, id: &str, path: &Path) -> Result<usize, CliError> {
    let file = std::fs::File::create(path)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    let mut file = std::io::BufWriter::new(file);
    let lines = write_results(api, id, &mut file).await?;
    file.flush()?;
    Ok(lines)
}

/// Streams the batch's results (JSONL) into `sink`; the number of lines written.
async fn write_results(api: &Api, id: &str, sink: &mut dyn Write) -> Result<usize, CliError> {
    let mut results = std::pin::pin!(api.results(id).await?);
    let mut lines = 0;
    while let Some(chunk) = results.next().await {
        let chunk = chunk?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        sink.write_all(&chunk)?;
    }
    Ok(lines)
}

/// `batch 0190… completed: 500 items · 498 succeeded · 2 failed · 0 cancelled · 0 waiting`.
fn describe(batch: &Batch) -> String {
    let c = &batch.counts;
    format!(
        "batch {} {}: {} items · {} succeeded · {} failed · {} cancelled · {} waiting · {} running",
        batch.id,
        batch.status,
        c.total,
        c.succeeded,
        c.failed,
        c.cancelled,
        c.pending + c.queued,
        c.running
    )
}
