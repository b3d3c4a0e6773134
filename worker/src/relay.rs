//! A streaming job's text (and the model's reasoning before it) on its way to the client: each
//! piece the provider writes goes to the text exchange under `<instance>.<job id>`, where only the
//! api instance holding the client (and any instance following the job's events) has bound a
//! queue.
//!
//! The first piece goes at once (time to first token is what a chat user feels); pieces that
//! arrive within [`COALESCE`] of a message travel together in the next, so a fast model costs the
//! broker a message per window rather than one per token. After the job's end is committed, the
//! run sends the end of the stream, on the same channel, behind the last piece.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_core::domain::{JobId, JobStatus};
use tollgate_core::provider::Delta;
use tollgate_core::queue::{Broker, StreamMessage, StreamPart};
use tollgate_core::sync::lock;

/// How long pieces that follow a message are gathered before the next is sent.
const COALESCE: Duration = Duration::from_millis(10);

pub struct Relay {
    route: Route,
    /// The text and reasoning so far (what a stop bills), and where pieces go to be published.
    text: Mutex<String>,
    thinking: Mutex<String>,
    pieces: Mutex<Option<mpsc::UnboundedSender<StreamPart>>>,
    publisher: Mutex<Option<JoinHandle<u32>>>,
}

impl Relay {
    pub fn start(broker: Broker, job_id: JobId, stream_to: Option<String>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let route = Route {
            broker,
            job_id,
            stream_to,
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "joined by `finish`, which needs the count of pieces it published"
        )]
        let publisher = tokio::spawn(publish(route.clone(), receiver));
        Self {
            route,
            text: Mutex::new(String::new()),
            thinking: Mutex::new(String::new()),
            pieces: Mutex::new(Some(sender)),
            publisher: Mutex::new(Some(publisher)),
        }
    }

    /// Forwards the next piece of text or reasoning.
    pub fn piece(&self, piece: Delta<'_>) {
        let part = match piece {
            Delta::Text(text) => {
                lock(&self.text).push_str(text);
                StreamPart::Text(text.to_owned())
            }
            Delta::Thinking(thought) => {
                lock(&self.thinking).push_str(thought);
                StreamPart::Thinking(thought.to_owned())
            }
            Delta::Signature(signature) => StreamPart::Signature(signature.to_owned()),
            Delta::Block(block) => StreamPart::Block(block.clone()),
        };
        if let Some(pieces) = lock(&self.pieces).as_ref() {
            let _ = pieces.send(part);
        }
    }

    /// Whether any text or reasoning has gone towards the client: from then on nothing may be
    /// retried, since the client could see it twice.
    pub fn started(&self) -> bool {
        !lock(&self.text).is_empty() || !lock(&self.thinking).is_empty()
    }

    /// The text forwarded so far.
    pub fn text(&self) -> String {
        lock(&self.text).clone()
    }

    /// The reasoning forwarded so far.
    pub fn thinking(&self) -> String {
        lock(&self.thinking).clone()
    }

    /// Sends the end of the stream behind every piece: call once the job's end is committed.
    pub async fn end(&self, status: JobStatus) {
        drop(lock(&self.pieces).take());
        let publisher = lock(&self.publisher).take();
        let seq = match publisher {
            Some(publisher) => publisher.await.unwrap_or(0),
            None => return,
        };
        self.route.send(seq, StreamPart::End(status)).await;
    }
}

/// Where a job's pieces go: the api instance holding the client.
#[derive(Clone)]
struct Route {
    broker: Broker,
    job_id: JobId,
    stream_to: Option<String>,
}

impl Route {
    async fn send(&self, seq: u32, part: StreamPart) {
        let message = StreamMessage::new(self.job_id, seq, part);
        self.broker
            .publish_stream(self.stream_to.as_deref(), &message)
            .await;
    }
}

/// Publishes pieces until the relay closes; returns how many messages it sent (the end's `seq`).
async fn publish(route: Route, mut pieces: mpsc::UnboundedReceiver<StreamPart>) -> u32 {
    let mut seq = 0;
    while let Some(first) = pieces.recv().await {
        route.send(seq, first).await;
        seq += 1;
        let window = Instant::now() + COALESCE;
        let mut held: Vec<StreamPart> = Vec::new();
        let mut open = true;
        while open {
            tokio::select! {
                piece = pieces.recv() => match piece {
                    Some(piece) => hold(&mut held, piece),
                    None => open = false,
                },
                () = tokio::time::sleep_until(window) => break,
            }
        }
        for part in held {
            route.send(seq, part).await;
            seq += 1;
        }
        if !open {
            break;
        }
    }
    seq
}

/// Adds a piece to those held, joined to the last when it is of the same kind (reasoning, its
/// signature, then the text: a window holds at most three messages).
fn hold(held: &mut Vec<StreamPart>, piece: StreamPart) {
    match (held.last_mut(), piece) {
        (Some(StreamPart::Text(last)), StreamPart::Text(more))
        | (Some(StreamPart::Thinking(last)), StreamPart::Thinking(more))
        | (Some(StreamPart::Signature(last)), StreamPart::Signature(more)) => last.push_str(&more),
        (_, piece) => held.push(piece),
    }
}
