//! The file sink: JSON lines appended to a file and synced to disk before they count.

use std::path::PathBuf;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::{Outcome, Sink};
use crate::event::Event;

pub struct FileSink {
    path: PathBuf,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink { path }
    }

    async fn append(&self, events: &[Event]) -> std::io::Result<()> {
        let mut text = String::with_capacity(events.iter().map(|e| e.body().len() + 1).sum());
        for event in events {
            text.push_str(event.body());
            text.push('\n');
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(text.as_bytes()).await?;
        file.flush().await?;
        file.sync_data().await
    }
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            match self.append(events).await {
                Ok(()) => vec![Outcome::Delivered; events.len()],
                Err(e) => {
                    let reason = format!("file {}: {e}", self.path.display());
                    vec![Outcome::Retry(reason); events.len()]
                }
            }
        })
    }
}
