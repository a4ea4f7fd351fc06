use std::future::Future;
use std::sync::Mutex;

/// Records waiting to be written in bulk, off the request path (receipts, usage events).
///
/// [`PendingWrites::flush`] hands everything waiting to one write; if that write fails the
/// records go back in line for the next flush rather than being lost. Flushes run one at a
/// time, so when a flush returns `Ok`, every record pushed before it was called is written,
/// including those another flush (the background writer) had taken and was still writing.
#[derive(Debug)]
pub struct PendingWrites<T> {
    items: Mutex<Vec<T>>,
    writing: tokio::sync::Mutex<()>,
}

impl<T> Default for PendingWrites<T> {
    fn default() -> Self {
        Self { items: Mutex::new(Vec::new()), writing: tokio::sync::Mutex::new(()) }
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
        // Wait for a write in progress: a reader that flushes first must find its records stored.
        let _writing = self.writing.lock().await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_returns_only_once_a_write_in_progress_is_done() {
        use std::sync::Arc;
        let p = Arc::new(PendingWrites::default());
        let stored = Arc::new(Mutex::new(Vec::new()));
        p.push(1);
        // The background writer takes the record and is slow to store it.
        let slow = {
            let (p, stored) = (p.clone(), stored.clone());
            tokio::spawn(async move {
                p.flush(|batch| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    stored.lock().unwrap().extend(batch);
                    Ok::<(), (Vec<i32>, ())>(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // A reader flushes before reading: when that returns, the record must be stored.
        p.flush(|batch| {
            let stored = stored.clone();
            async move {
                stored.lock().unwrap().extend(batch);
                Ok::<(), (Vec<i32>, ())>(())
            }
        })
        .await
        .unwrap();
        assert_eq!(*stored.lock().unwrap(), vec![1]);
        slow.await.unwrap().unwrap();
    }
}
