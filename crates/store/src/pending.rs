use std::future::Future;
use std::sync::Mutex;

/// Records waiting to be written in bulk, off the request path (receipts, usage events).
///
/// [`PendingWrites::flush`] hands everything waiting to one write; if that write fails the
/// records go back in line for the next flush rather than being lost.
#[derive(Debug)]
pub struct PendingWrites<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Default for PendingWrites<T> {
    fn default() -> Self {
        Self { items: Mutex::new(Vec::new()) }
    }
}

impl<T> PendingWrites<T> {
    /// Queues a record; returns how many wait now.
    pub fn push(&self, item: T) -> usize {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items.push(item);
        items.len()
    }

    /// Writes everything waiting with `write` (nothing is called when nothing waits).
    pub async fn flush<E, F, Fut>(&self, write: F) -> Result<(), E>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<(), (Vec<T>, E)>>,
    {
        let batch = std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        write(batch).await.map_err(|(batch, e)| {
            self.items.lock().unwrap_or_else(|e| e.into_inner()).extend(batch);
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_keeps_the_records_for_the_next_flush() {
        let p = PendingWrites::default();
        assert_eq!(p.push(1), 1);
        assert_eq!(p.push(2), 2);
        let failed: Result<(), &str> = p.flush(|batch| async move { Err((batch, "down")) }).await;
        assert_eq!(failed, Err("down"));
        let mut written = Vec::new();
        p.flush(|batch| {
            written = batch;
            async { Ok::<(), (Vec<i32>, ())>(()) }
        })
        .await
        .unwrap();
        assert_eq!(written, vec![1, 2]);
        let mut calls = 0;
        p.flush(|_| {
            calls += 1;
            async { Ok::<(), (Vec<i32>, ())>(()) }
        })
        .await
        .unwrap();
        assert_eq!(calls, 0, "nothing waits, nothing is written");
    }
}
