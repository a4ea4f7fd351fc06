//! The SQLite ledger writer: one thread, one rusqlite connection, group commit (and, with a
//! close delay, a committer thread for groups of answered closes).
//!
//! Every ledger transaction on a SQLite file comes here. The thread takes whatever is waiting
//! (up to [`MAX_GROUP`]) into one database transaction and one COMMIT (one fsync) for the
//! group: a refused transaction leaves the others alone (see [`Writer::commit_group`]), and no
//! caller hears "done" before the group's COMMIT. SQLite has
//! one writer anyway; this turns its lock-and-sleep busy handler into a queue and amortises the
//! fsync over concurrent payments.
//!
//! Why a thread of its own, off sqlx: sqlx runs each SQLite connection on a worker thread and
//! hands every statement to it and back, two thread wake-ups per statement, which made a paid
//! request's two ledger transactions cost ~1.5 ms. Here a statement is a call into the library,
//! with the statement prepared once (`prepare_cached`). The statements and the checks are the
//! ones the sqlx path runs (`ledger_commit`); the schema is the one sqlx migrated before the
//! thread opened its connection.
//!
//! Escrows are not written when they open: the writer checks them and holds them in memory
//! (`held`), answering at once, and writes each with its capture or refund, in one commit (see
//! `held` for why that loses nothing in a crash and how reads see them).
//!
//! With a close delay (`[payments] capture_flush_ms`, [`crate::StoreOptions`]), the capture or
//! refund of a held escrow is answered at once too: checked, kept with its escrow, and written
//! with the next group commit, which comes at most that long after the oldest waiting close,
//! or sooner when any other transaction arrives, [`MAX_GROUP`] closes wait, or the store
//! flushes ([`LedgerWriter::flush`]). One commit then carries many payments: fewer fsyncs, and
//! the pages of the balances every payment credits (operator, protocol) written once per group.
//! Such a group of closes alone is written by a second thread on a second connection (the
//! committer), while this thread answers escrows and closes (see [`Writer`] for the rules).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter, types::Value};
use tokio::sync::{RwLock, RwLockReadGuard, mpsc, oneshot};

use crate::{
    LedgerTx, NewPayment, NonceClaim, PaymentChange, PaymentStatus, Result, StoreError, held::Held,
    ledger_commit as lc, sql::address_text,
};

/// The most ledger transactions one group commit carries.
const MAX_GROUP: usize = 64;

type Reply = oneshot::Sender<Result<()>>;

/// What the writer thread is asked.
#[allow(clippy::large_enum_variant, reason = "nearly every job is a transaction; boxing it would allocate for each")]
enum Job {
    /// Commit (or hold) a transaction.
    Tx(LedgerTx, Reply),
    /// Write every answered close now.
    Flush(Reply),
    /// Look at the state again: a caller answered a close on its own thread, and the first
    /// close waiting or a full group changes when the next commit is due.
    Nudge,
}

/// Handle of the writer thread; it stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
    /// The escrows held, for reads.
    shared: Arc<Shared>,
    /// The writer's state: taken by the thread for each job, and by a caller that finds it
    /// free to answer an escrow or a close at once on its own thread (see [`LedgerWriter::commit`]).
    state: Arc<State>,
}

/// The writer's state behind its lock.
struct State(Mutex<Writer>);

impl State {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State(..)")
    }
}

/// The held escrows as reads see them.
#[derive(Debug, Default)]
struct Shared {
    /// The set, as of the last change (a lock held for microseconds).
    set: Mutex<Held>,
    /// Taken for writing while a commit moves held escrows into the database, and for reading
    /// across a database read combined with the set: such a read sees each escrow exactly once.
    /// A new escrow needs no such care: it is not in the database either way.
    moving: RwLock<()>,
}

/// What a read combines with the database: the held escrows, while no commit moves any.
pub(crate) struct HeldView<'a> {
    shared: &'a Shared,
    _moving: RwLockReadGuard<'a, ()>,
}

impl HeldView<'_> {
    /// The held escrows now (lock briefly; not across an await).
    pub(crate) fn get(&self) -> MutexGuard<'_, Held> {
        self.shared.set.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LedgerWriter {
    /// Opens `path` (already migrated) and starts the thread. `options.close_delay`: how long
    /// an answered close of a held escrow may wait to be written (zero: it is written before
    /// it is answered).
    pub(crate) fn spawn(path: &Path, busy_timeout: Duration, options: &crate::StoreOptions) -> Result<Self> {
        let close_delay = options.close_delay;
        #[cfg(feature = "test-utils")]
        let pause = options.commit_report_pause;
        let open = || -> Result<Connection> {
            let db = Connection::open(path)?;
            db.busy_timeout(busy_timeout)?;
            // FULL: a COMMIT is on disk (the WAL synced) before any caller hears "done".
            db.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY")?;
            db.set_prepared_statement_cache_capacity(64);
            Ok(db)
        };
        let (jobs, rx) = mpsc::channel(4 * MAX_GROUP);
        let shared = Arc::new(Shared::default());
        // With a close delay, groups of answered closes are written by a second thread on a
        // second connection, so that escrows and closes are answered while one commits.
        let (committer, done) = if close_delay.is_zero() {
            (None, None)
        } else {
            let (send, work) = std::sync::mpsc::channel::<(Vec<LedgerTx>, Held)>();
            let (finished, done) = mpsc::unbounded_channel();
            let mut group_writer = Committer { db: open()?, shared: shared.clone() };
            std::thread::Builder::new().name("verinet-ledger-commit".into()).spawn(move || {
                for (group, mut held) in work {
                    let outcome = group_writer.commit_group(&group, &mut held);
                    #[cfg(feature = "test-utils")]
                    std::thread::sleep(pause);
                    if finished.send(outcome).is_err() {
                        return;
                    }
                }
            })?;
            (Some(send), Some(done))
        };
        // A clock for the wait on the queue while closes wait to be written.
        let clock = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let writer = Writer {
            own: Committer { db: open()?, shared: shared.clone() },
            held: Held::default(),
            shared: shared.clone(),
            close_delay,
            waiting: Vec::new(),
            since: None,
            committer,
            writing: None,
            parked: Vec::new(),
        };
        let state = Arc::new(State(Mutex::new(writer)));
        let thread_state = state.clone();
        std::thread::Builder::new().name("verinet-ledger".into()).spawn(move || run(&thread_state, rx, done, &clock))?;
        Ok(Self { jobs, shared, state })
    }

    /// The held escrows for a read that combines them with the database: hold the view across
    /// the database read.
    pub(crate) async fn held(&self) -> HeldView<'_> {
        HeldView { shared: &self.shared, _moving: self.shared.moving.read().await }
    }

    /// The held escrows now, without waiting for a commit in progress: for a read on the
    /// request path that can afford to miss, at worst, an escrow being written at that instant.
    pub(crate) fn peek(&self) -> MutexGuard<'_, Held> {
        self.shared.set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits `tx` with whatever else is waiting; returns once the group's COMMIT is durable
    /// (an escrow: once it is checked and held).
    ///
    /// An escrow, or the close of a held escrow that may wait to be written, needs no write
    /// now: when the writer thread is not using the state, it is answered here, on the
    /// caller's thread, with the checks the thread would make. That saves two thread hand-offs
    /// per payment step (BENCHMARKS.md, "Escrows and closes answered on the caller's thread").
    /// Anything else, or a state in use, goes to the thread.
    pub(crate) async fn commit(&self, tx: LedgerTx) -> Result<()> {
        let tx = match self.answer_here(tx) {
            Ok(answer) => return answer,
            Err(tx) => tx,
        };
        self.ask(|reply| Job::Tx(tx, reply)).await
    }

    /// `tx` answered on this thread, or given back for the writer thread.
    #[allow(clippy::result_large_err, reason = "the transaction is given back as it came, moved once, not boxed")]
    fn answer_here(&self, tx: LedgerTx) -> std::result::Result<Result<()>, LedgerTx> {
        // Never wait: the thread may be in a group commit (fsync included).
        let Ok(mut writer) = self.state.0.try_lock() else { return Err(tx) };
        let (answer, nudge) = writer.answer_now(tx)?;
        drop(writer);
        if nudge {
            // A full queue means the thread has jobs to wake for anyway.
            let _ = self.jobs.try_send(Job::Nudge);
        }
        Ok(answer)
    }

    /// Writes every answered close now; returns once they are durable.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.ask(Job::Flush).await
    }

    async fn ask(&self, job: impl FnOnce(Reply) -> Job) -> Result<()> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::CommitFailed("the ledger writer stopped".into());
        self.jobs.send(job(reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// The writer thread's state: its connection, and the escrows it holds.
///
/// With a close delay, a group made only of answered closes (the paid path's steady state) is
/// written by the committer thread on its own connection while this thread goes on answering
/// escrows and closes: before, every escrow that arrived during a group's writes and its
/// COMMIT (fsync included) waited for them, which left the cores idle for about a third of
/// the time at 4 paid requests in flight. While such a group is being written:
/// - the escrows it writes stay in `held` until it is committed, so an escrow checked in the
///   meantime counts them once if its read predates the COMMIT, and twice (on the safe side)
///   if it follows it; a refusal then waits for the commit and is checked again, so that
///   counting twice never refuses what counting once would allow;
/// - anything else (a write, a close of an escrow not held, a flush) waits for the commit, so
///   the committer's group never meets a change it was not given.
struct Writer {
    /// This thread's connection: the escrow checks' reads, and groups that are not only closes.
    own: Committer,
    /// The held escrows as the open transaction sees them (ahead of `shared` until it commits).
    held: Held,
    /// The held escrows as reads see them.
    shared: Arc<Shared>,
    /// How long an answered close may wait to be written (zero: none is answered first).
    close_delay: Duration,
    /// The answered closes not written yet, oldest first.
    waiting: Vec<LedgerTx>,
    /// When the oldest of them was answered.
    since: Option<Instant>,
    /// The committer thread's queue (with a close delay only).
    committer: Option<std::sync::mpsc::Sender<(Vec<LedgerTx>, Held)>>,
    /// The request ids of the closes the committer is writing now (the closes themselves stay
    /// in `held` until it reports).
    writing: Option<Vec<String>>,
    /// Jobs that wait for the committer's group to be committed.
    parked: Vec<Job>,
}

/// What the writer thread waits for.
#[allow(clippy::large_enum_variant, reason = "one per job, moved once, as `Job` itself")]
enum Event {
    Job(Job),
    /// The committer's outcome for the group in `writing`.
    Committed(GroupOutcome),
    /// The oldest waiting close is due.
    Due,
    /// Every handle is gone.
    Closed,
}

/// A group's results, or why it failed as a whole.
type GroupOutcome = std::result::Result<Vec<Result<()>>, String>;

/// The writer thread: waits (the state's lock released), then takes the state for what came.
fn run(state: &State, mut jobs: mpsc::Receiver<Job>, mut done: Option<mpsc::UnboundedReceiver<GroupOutcome>>, clock: &tokio::runtime::Runtime) {
    loop {
        let wait = state.lock().wait();
        let event = next(wait, &mut jobs, done.as_mut(), clock);
        if !state.lock().take(event, &mut jobs, &mut done) {
            return;
        }
    }
}

/// What the writer thread waits for besides jobs: the oldest waiting close falling due, and
/// the committer's outcome.
struct Wait {
    due: Option<Duration>,
    committing: bool,
}

/// Waits for a job, the committer's outcome, or the oldest waiting close to fall due.
fn next(wait: Wait, jobs: &mut mpsc::Receiver<Job>, done: Option<&mut mpsc::UnboundedReceiver<GroupOutcome>>, clock: &tokio::runtime::Runtime) -> Event {
    let Wait { due, committing } = wait;
    let done = done.filter(|_| committing);
    if due.is_none() && done.is_none() {
        return jobs.blocking_recv().map_or(Event::Closed, Event::Job);
    }
    clock.block_on(async {
        let committed = async {
            match done {
                Some(d) => d.recv().await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match due {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            outcome = committed => match outcome {
                Some(outcome) => Event::Committed(outcome),
                // The committer thread is gone (it panicked): its group is not known to be
                // written; its closes stay held and wait.
                None => Event::Committed(Err("the ledger committer thread stopped".into())),
            },
            job = jobs.recv() => job.map_or(Event::Closed, Event::Job),
            () = timer => Event::Due,
        }
    })
}

impl Writer {
    /// What to wait for now.
    fn wait(&self) -> Wait {
        let due = match (&self.writing, self.since) {
            (None, Some(since)) => Some(self.close_delay.saturating_sub(since.elapsed())),
            _ => None,
        };
        Wait { due, committing: self.writing.is_some() }
    }

    /// Answers `tx` now if it is an escrow, or the close of a held escrow that may wait to be
    /// written (as the thread would: see [`Writer::handle`] and [`Writer::meanwhile`]), with
    /// whether the thread must look at the state again; gives it back otherwise. An escrow
    /// refused while the committer writes is given back: the thread checks it again after
    /// the commit.
    #[allow(clippy::result_large_err, reason = "the transaction is given back as it came, moved once, not boxed")]
    fn answer_now(&mut self, tx: LedgerTx) -> std::result::Result<(Result<()>, bool), LedgerTx> {
        if matches!(tx.payment, Some(PaymentChange::Open(_))) {
            if self.writing.is_none() {
                return Ok((self.hold(tx), false));
            }
            return self.hold_meanwhile(tx).map(|()| (Ok(()), false));
        }
        // A full group goes to the thread, which hands it to be written (as it would have).
        if self.waiting.len() >= MAX_GROUP || !self.answers_close(&tx) {
            return Err(tx);
        }
        let first = self.since.is_none();
        let answer = self.answer_close(tx);
        Ok((answer, first || self.waiting.len() >= MAX_GROUP))
    }

    /// What the thread does with `event`; `false` once every handle is gone and what waited
    /// is written (the thread ends).
    fn take(&mut self, event: Event, jobs: &mut mpsc::Receiver<Job>, done: &mut Option<mpsc::UnboundedReceiver<GroupOutcome>>) -> bool {
        let first = match event {
            Event::Committed(outcome) => {
                self.committed(outcome);
                // What waited for the commit is taken now, as one group, in its order.
                let parked = std::mem::take(&mut self.parked);
                if !parked.is_empty() {
                    self.handle(parked);
                }
                return true;
            }
            Event::Due => {
                // (A failure is logged and the closes wait for the next try.)
                let _ = self.write_closes();
                return true;
            }
            Event::Closed => {
                // Every handle is gone: let the committer finish, then write what waits
                // here (with no committer left to hand a group to), and stop.
                if self.writing.is_some() {
                    let outcome = done.as_mut().and_then(|d| d.blocking_recv());
                    self.committed(outcome.unwrap_or_else(|| Err("the ledger committer thread stopped".into())));
                }
                self.committer = None;
                let parked = std::mem::take(&mut self.parked);
                self.handle(parked);
                let _ = self.write_here(Vec::new());
                return false;
            }
            Event::Job(job) => job,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if self.writing.is_some() {
            self.meanwhile(group);
        } else {
            self.handle(group);
        }
        true
    }

    /// Jobs that come while the committer writes: escrows and closes of held escrows answered
    /// (a refused escrow waits and is checked again after the commit), the rest parked.
    fn meanwhile(&mut self, group: Vec<Job>) {
        for job in group {
            match job {
                Job::Tx(tx, reply) if matches!(tx.payment, Some(PaymentChange::Open(_))) => match self.hold_meanwhile(tx) {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(tx) => self.parked.push(Job::Tx(tx, reply)),
                },
                Job::Tx(tx, reply) if self.answers_close(&tx) => {
                    let _ = reply.send(self.answer_close(tx));
                }
                // Nothing to do while the committer writes: its outcome wakes the thread.
                Job::Nudge => {}
                other => self.parked.push(other),
            }
        }
    }

    /// One group of jobs, no commit in progress: escrows and closes answered, then the writes
    /// (and the waiting closes) written when due.
    fn handle(&mut self, group: Vec<Job>) {
        // Escrows first, each answered at once: checked against what is committed and held,
        // they need no transaction and no wait for the others' commit. (The jobs of a group
        // were all waiting at once, so any order of them is one they could have come in.)
        // Then the closes of held escrows, answered at once when a delay is allowed.
        let (mut writes, mut flushes) = (Vec::new(), Vec::new());
        let mut closes = Vec::new();
        for job in group {
            match job {
                Job::Tx(tx, reply) if matches!(tx.payment, Some(PaymentChange::Open(_))) => {
                    let _ = reply.send(self.hold(tx));
                }
                Job::Tx(tx, reply) if self.answers_close(&tx) => closes.push((tx, reply)),
                Job::Tx(tx, reply) => writes.push((tx, reply)),
                Job::Flush(reply) => flushes.push(reply),
                // The closes answered on callers' threads are due as any others (below).
                Job::Nudge => {}
            }
        }
        for (tx, reply) in closes {
            let _ = reply.send(self.answer_close(tx));
        }
        let due = !writes.is_empty()
            || !flushes.is_empty()
            || self.waiting.len() >= MAX_GROUP
            || self.since.is_some_and(|s| s.elapsed() >= self.close_delay);
        if !due {
            return;
        }
        if writes.is_empty() && flushes.is_empty() {
            let _ = self.write_closes();
            return;
        }
        let flushed = self.write_here(writes);
        for reply in flushes {
            let _ = reply.send(flushed.as_ref().copied().map_err(|e| StoreError::CommitFailed(e.to_string())));
        }
    }

    /// Whether `tx` is the close of a held escrow that is answered now and written with a later
    /// group: closes may wait, and no job waits before it for the committer's commit (`parked`
    /// is empty but while the committer writes).
    fn answers_close(&self, tx: &LedgerTx) -> bool {
        !self.close_delay.is_zero()
            && self.parked.is_empty()
            && lc::request_id(tx).is_some_and(|id| self.held.escrow(id).is_some())
    }

    /// Holds the escrow `tx` while the committer writes, if its checks pass; gives it back
    /// otherwise, to be checked again after the commit (counted twice, it may be refused only
    /// for now).
    #[allow(clippy::result_large_err, reason = "the transaction is given back as it came, moved once, not boxed")]
    fn hold_meanwhile(&mut self, tx: LedgerTx) -> std::result::Result<(), LedgerTx> {
        match self.check_hold(&tx) {
            Ok(()) => {
                self.keep(tx);
                Ok(())
            }
            Err(_) => Err(tx),
        }
    }

    /// Checks the close `tx` of a held escrow and keeps it with the escrow, to be written with
    /// the next group.
    fn answer_close(&mut self, tx: LedgerTx) -> Result<()> {
        self.held.close(tx.clone())?;
        self.shared.set.lock().unwrap_or_else(PoisonError::into_inner).close(tx.clone())?;
        self.waiting.push(tx);
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Writes the waiting closes: on the committer thread when there is one and it is free,
    /// else here.
    fn write_closes(&mut self) -> Result<()> {
        if self.waiting.is_empty() || self.writing.is_some() {
            return self.write_here(Vec::new());
        }
        let Some(committer) = &self.committer else { return self.write_here(Vec::new()) };
        // The committer gets the pairs it writes, each escrow with its close.
        let mut pairs = Held::default();
        let mut ids = Vec::with_capacity(self.waiting.len());
        for close in &self.waiting {
            let id = lc::request_id(close).unwrap_or_default();
            if let Some(escrow) = self.held.escrow(id) {
                pairs.add(escrow.clone());
                let _ = pairs.close(close.clone());
            }
            // One per close, in the group's order: the committer's results are in that order.
            ids.push(id.to_owned());
        }
        let group = std::mem::take(&mut self.waiting);
        match committer.send((group, pairs)) {
            Ok(()) => {
                self.writing = Some(ids);
                self.since = None;
                Ok(())
            }
            Err(std::sync::mpsc::SendError((group, _))) => {
                // The committer thread is gone: write here from now on.
                self.committer = None;
                self.waiting = group;
                self.write_here(Vec::new())
            }
        }
    }

    /// The committer's outcome for the group in `writing`: the closes written leave the held
    /// set (the committer took them out of the shared view when it committed); on a failure
    /// they wait again, first.
    fn committed(&mut self, outcome: GroupOutcome) {
        let ids = self.writing.take().unwrap_or_default();
        match outcome {
            Ok(results) => {
                for (id, result) in ids.iter().zip(results) {
                    match result {
                        Ok(()) => {
                            self.held.remove(id);
                        }
                        Err(e) => self.drop_refused(id, &e),
                    }
                }
            }
            Err(e) => {
                let again: Vec<LedgerTx> = ids.iter().filter_map(|id| self.held.answered(id).cloned()).collect();
                let newer = std::mem::replace(&mut self.waiting, again);
                self.waiting.extend(newer);
                tracing::warn!(error = %e, waiting = ids.len(), "the ledger group commit failed; answered closes wait for the next");
            }
        }
        if !self.waiting.is_empty() && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// One group commit on this thread: the answered closes waiting, then `writes` (each
    /// answered). Returns whether the closes are now durable. A database failure keeps them
    /// waiting (they are tried again after another delay); a close refused on its own (never
    /// expected: it was checked against the held escrow) is dropped from memory and logged.
    fn write_here(&mut self, writes: Vec<(LedgerTx, Reply)>) -> Result<()> {
        let waiting = std::mem::take(&mut self.waiting);
        let n = waiting.len();
        if n == 0 && writes.is_empty() {
            self.since = None;
            return Ok(());
        }
        let (txs, replies): (Vec<LedgerTx>, Vec<Reply>) = writes.into_iter().unzip();
        let group: Vec<LedgerTx> = waiting.into_iter().chain(txs).collect();
        let (results, failed) = match self.own.commit_group(&group, &mut self.held) {
            Ok(results) => (results, None),
            Err(e) => (group.iter().map(|_| Err(StoreError::CommitFailed(e.clone()))).collect(), Some(e)),
        };
        let mut results = results.into_iter();
        let mut group = group.into_iter();
        let mut outcome = Ok(());
        for _ in 0..n {
            let (close, result) = (group.next(), results.next());
            let (Some(close), Some(result)) = (close, result) else { break };
            match (result, &failed) {
                (Ok(()), _) => {}
                (Err(e), Some(_)) => {
                    outcome = Err(e);
                    self.waiting.push(close);
                }
                (Err(e), None) => self.drop_refused(lc::request_id(&close).unwrap_or_default(), &e),
            }
        }
        if let Some(e) = &failed {
            tracing::warn!(error = %e, waiting = self.waiting.len(), "the ledger group commit failed; answered closes wait for the next");
        }
        self.since = if self.waiting.is_empty() { None } else { Some(Instant::now()) };
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone; its transaction is committed (or not) all the same.
            let _ = reply.send(result);
        }
        outcome
    }

    /// A close refused when written (never expected: it was checked against the held escrow)
    /// is dropped from memory, with its escrow, and logged.
    fn drop_refused(&mut self, request_id: &str, e: &StoreError) {
        tracing::error!(request_id = %request_id, error = %e, "an answered close was refused when written; dropped");
        self.held.remove(request_id);
        self.shared.set.lock().unwrap_or_else(PoisonError::into_inner).remove(request_id);
    }

    /// Checks the escrow `tx` as its write would and holds it.
    fn hold(&mut self, tx: LedgerTx) -> Result<()> {
        self.check_hold(&tx)?;
        self.keep(tx);
        Ok(())
    }

    /// The checks the escrow `tx`'s own write would make, against the database and the held
    /// escrows. Reads only.
    fn check_hold(&mut self, tx: &LedgerTx) -> Result<()> {
        let Some(PaymentChange::Open(p)) = &tx.payment else {
            return Err(StoreError::Invalid("only an escrow that opens a payment is held".into()));
        };
        // One read transaction (one WAL snapshot) for the checks' reads.
        let read = self.own.db.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        check_escrow(&read, tx, p, &self.held)?;
        read.commit()?;
        Ok(())
    }

    /// Holds the checked escrow `tx`.
    fn keep(&mut self, tx: LedgerTx) {
        self.held.add(tx.clone());
        self.shared.set.lock().unwrap_or_else(PoisonError::into_inner).add(tx);
    }
}

/// A connection that writes groups, with the held set's shared view it updates on commit: the
/// writer thread's own, or the committer thread's (see [`Writer`]).
struct Committer {
    db: Connection,
    shared: Arc<Shared>,
}

impl Committer {
    /// One database transaction for the whole group.
    ///
    /// Refusals are rare (a nonce reused, a balance short), so the group first runs without
    /// savepoints: a savepoint copies every page it is first to touch into a statement journal,
    /// a tenth of the writer's time when every transaction had one. If any transaction is
    /// refused, that attempt is rolled back whole and the group runs again with a savepoint
    /// each, in the same order, so each transaction meets the same balances and gets the same
    /// outcome.
    /// `Err`: the group failed as a whole (the database), nothing of it is written.
    fn commit_group(&mut self, group: &[LedgerTx], held: &mut Held) -> std::result::Result<Vec<Result<()>>, String> {
        let mut written = Vec::new();
        let mut outcome = self.attempt(group, false, &mut written, held);
        if let Ok(Err(refused)) = outcome {
            // Alone, the refused transaction's attempt was all there was to roll back.
            if group.len() == 1 {
                return Ok(vec![Err(refused)]);
            }
            outcome = self.attempt(group, true, &mut written, held);
        }
        match outcome {
            Ok(Ok(results)) => Ok(results),
            // With savepoints a refusal rolls back alone; this is not reached.
            Ok(Err(refused)) => Err(format!("refused with savepoints: {refused}")),
            Err(e) => {
                hold_again(held, &mut written, 0);
                Err(e.to_string())
            }
        }
    }

    /// Runs the group in one transaction and commits it. With `savepoints`, a refused
    /// transaction rolls back alone; without, the first refusal rolls back the attempt (and
    /// holds again the escrows it wrote) and is returned. `written` collects the held escrows
    /// written with their close.
    fn attempt(
        &mut self,
        group: &[LedgerTx],
        savepoints: bool,
        written: &mut Vec<Taken>,
        held: &mut Held,
    ) -> rusqlite::Result<Result<Vec<Result<()>>>> {
        let txn = self.db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(group.len());
        // A group made only of held escrows' closes (the paid path's steady state) moves its
        // balances and writes its legs once for the whole group.
        if !savepoints && group.len() > 1 && group.iter().all(|tx| pairs_with_held(tx, held)) {
            if let Err(refused) = write_pairs(&txn, group, held, written) {
                txn.rollback()?;
                hold_again(held, written, 0);
                return Ok(Err(refused));
            }
            results.extend(group.iter().map(|_| Ok(())));
        }
        for tx in group.iter().skip(results.len()) {
            if savepoints {
                txn.execute_batch("SAVEPOINT ledger_tx")?;
            }
            let mark = written.len();
            let result = match step(&txn, tx, held, written) {
                Ok(()) => Ok(()),
                Err(refused) if savepoints => {
                    txn.execute_batch("ROLLBACK TO SAVEPOINT ledger_tx")?;
                    hold_again(held, written, mark);
                    Err(refused)
                }
                Err(refused) => {
                    txn.rollback()?;
                    hold_again(held, written, 0);
                    return Ok(Err(refused));
                }
            };
            if savepoints {
                txn.execute_batch("RELEASE SAVEPOINT ledger_tx")?;
            }
            results.push(result);
        }
        if written.is_empty() {
            txn.commit()?;
            return Ok(Ok(results));
        }
        // Reads wait while the commit lands and the escrows it wrote leave the held set.
        let _moving = self.shared.moving.blocking_write();
        // A failure here drops `txn`, which rolls the group back.
        txn.commit()?;
        let mut set = self.shared.set.lock().unwrap_or_else(PoisonError::into_inner);
        for (escrow, _) in written.drain(..) {
            if let Some(id) = lc::request_id(&escrow) {
                set.remove(id);
            }
        }
        Ok(Ok(results))
    }
}

/// A held escrow taken out to be written, with its answered close if any.
type Taken = (LedgerTx, Option<LedgerTx>);

/// Holds again the escrows (and answered closes) of `written[mark..]`: their writes were
/// rolled back.
fn hold_again(held: &mut Held, written: &mut Vec<Taken>, mark: usize) {
    for taken in written.drain(mark..) {
        held.restore(taken);
    }
}

/// One write inside the open transaction: the close of a held escrow writes both; anything else
/// is written after the checks the held escrows add (their nonces and reserved balances), and
/// after the held escrows it reaches into are written.
fn step(db: &Connection, tx: &LedgerTx, held: &mut Held, written: &mut Vec<Taken>) -> Result<()> {
    if let Some(PaymentChange::Close { request_id, .. }) = &tx.payment
        && let Some(escrow) = held.escrow(request_id)
    {
        commit_pair_in(db, escrow, tx)?;
        written.extend(held.remove(request_id));
        return Ok(());
    }
    if let Some(n) = &tx.nonce
        && held.claims_nonce(n.payer, &n.nonce)
    {
        return Err(nonce_used(n));
    }
    // A transaction that reaches into held escrows (debits a payer's escrow, releases a
    // session's budget) meets them written, as escrows in the database.
    for id in held.reached_by(tx) {
        if let Some((escrow, close)) = held.remove(&id) {
            // (Answered closes are written first in their group, so `close` is `None` here.)
            let result = commit_in(db, &escrow).and_then(|()| close.as_ref().map_or(Ok(()), |c| commit_in(db, c)));
            written.push((escrow, close));
            result?;
        }
    }
    check_balances(db, tx, held, false)?;
    commit_in(db, tx)
}

/// The checks the escrow's own write would make, against the database net of the escrows
/// already held: its nonce unclaimed, its request new, its session's budget and its payer's
/// balance sufficient. Reads only.
fn check_escrow(db: &Connection, tx: &LedgerTx, p: &NewPayment, held: &Held) -> Result<()> {
    if let Some(n) = &tx.nonce {
        let claimed = held.claims_nonce(n.payer, &n.nonce)
            || db
                .prepare_cached(NONCE_CLAIMED)?
                .query_row(params![address_text(&n.payer), n.nonce.to_lowercase()], |_| Ok(()))
                .optional()?
                .is_some();
        if claimed {
            return Err(nonce_used(n));
        }
    }
    let opened = held.escrow(&p.request_id).is_some()
        || db.prepare_cached(lc::PAYMENT_STATUS)?.query_row(params![p.request_id], |_| Ok(())).optional()?.is_some();
    if opened {
        return Err(lc::opened_twice(&p.request_id));
    }
    if let Some(spend) = &tx.session_spend {
        let row = db
            .prepare_cached(lc::SESSION_BUDGET)?
            .query_row(params![spend.id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let row = match row {
            Some((spent, max, expires)) => {
                let spent: u128 = spent.parse().map_err(|e| StoreError::Corrupt(format!("session spent {spent:?}: {e}")))?;
                let spent = spent
                    .checked_add(held.session_spent(&spend.id))
                    .ok_or_else(|| StoreError::Corrupt("session spent overflows".into()))?;
                Some((spent.to_string(), max, expires))
            }
            None => None,
        };
        lc::session_after(spend, row, tx.at_ms)?;
    }
    check_balances(db, tx, held, true)
}

/// Refuses `tx` if a balance it debits would go below what the held escrows reserve of it.
/// `all`: check every debit (an escrow to hold, which writes nothing now) against the balance
/// with everything held, answered closes' credits included (they will be written); else only
/// the balances held escrows reserve from (the write checks the rest; answered closes are
/// written ahead of it in its group).
fn check_balances(db: &Connection, tx: &LedgerTx, held: &Held, all: bool) -> Result<()> {
    for c in lc::changes(tx)? {
        let delta = held.delta(c.account, c.bucket);
        let reserved = if all { delta } else { delta.min(0) };
        if c.delta >= 0 || c.may_go_negative() || (reserved == 0 && !all) {
            continue;
        }
        let text: Option<String> = db
            .prepare_cached(BALANCE)?
            .query_row(params![c.account_text, c.bucket.as_str()], |r| r.get(0))
            .optional()?;
        let stored: i128 = match text {
            Some(t) => t.parse().map_err(|e| StoreError::Corrupt(format!("amount {t:?}: {e}")))?,
            None => 0,
        };
        let before = stored.saturating_add(reserved);
        if before.saturating_add(c.delta) < 0 {
            return Err(c.insufficient(before));
        }
    }
    Ok(())
}

fn nonce_used(n: &NonceClaim) -> StoreError {
    StoreError::NonceUsed { payer: n.payer, nonce: n.nonce.clone() }
}

const NONCE_CLAIMED: &str = "SELECT 1 FROM payment_nonces WHERE payer = $1 AND nonce = $2";

const BALANCE: &str = "SELECT amount FROM ledger_balances WHERE account = $1 AND bucket = $2";

/// Applies `tx` inside the open transaction: the statements of the sqlx path, in its order.
fn commit_in(db: &Connection, tx: &LedgerTx) -> Result<()> {
    db.prepare_cached(lc::INSERT_TX)?.execute(params![tx.id, tx.kind.as_str(), lc::request_id(tx), tx.memo, tx.at_ms])?;
    claim_nonce(db, tx)?;

    match &tx.payment {
        Some(PaymentChange::Open(p)) => {
            let opened =
                db.prepare_cached(lc::OPEN_PAYMENT)?.execute(params_from_iter(opened_row(p, PaymentStatus::Escrowed, tx)))?;
            if opened == 0 {
                return Err(lc::opened_twice(&p.request_id));
            }
        }
        Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }) => {
            let closed = db.prepare_cached(lc::CLOSE_PAYMENT)?.execute(params![
                to.as_str(),
                output_hash,
                reason,
                tx.id,
                tx.at_ms,
                kept.as_ref().map(|k| k.charged.to_string()),
                request_id,
                PaymentStatus::Escrowed.as_str()
            ])?;
            if closed == 0 {
                let found = db
                    .prepare_cached(lc::PAYMENT_STATUS)?
                    .query_row(params![request_id], |r| r.get::<_, String>(0))
                    .optional()?;
                return Err(lc::not_escrowed(request_id, found));
            }
            insert_kept(db, request_id, kept.as_deref())?;
        }
        None => {}
    }

    spend_session(db, tx)?;
    move_balances(db, &lc::changes(tx)?)?;
    insert_entries(db, &[tx])
}

/// Whether `tx` closes an escrow held in `held` and is written with it as a pair (see
/// [`commit_pair_in`]).
fn pairs_with_held(tx: &LedgerTx, held: &Held) -> bool {
    let Some(PaymentChange::Close { request_id, .. }) = &tx.payment else { return false };
    tx.nonce.is_none() && held.escrow(request_id).is_some_and(|e| matches!(&e.payment, Some(PaymentChange::Open(p)) if p.request_id == *request_id))
}

/// Writes each close of `group` with its held escrow (all of them pair, [`pairs_with_held`]):
/// the rows of each pair, then the balances of the whole group, net, in one read and one write,
/// and every leg in one insert. Net of the group is as exact as net of each pair: each escrow's
/// debit was checked when it was held against the balance net of every held escrow, and
/// nothing else writes between.
fn write_pairs(db: &Connection, group: &[LedgerTx], held: &mut Held, written: &mut Vec<Taken>) -> Result<()> {
    let mark = written.len();
    for close in group {
        let id = lc::request_id(close).unwrap_or_default();
        let escrow = held.escrow(id).ok_or_else(|| lc::not_escrowed(id, None))?;
        pair_rows(db, escrow, close)?;
        written.extend(held.remove(id));
    }
    // One taken per close, in the group's order.
    let txs: Vec<&LedgerTx> = written[mark..].iter().zip(group).flat_map(|((escrow, _), close)| [escrow, close]).collect();
    move_balances(db, &lc::changes_of(txs.iter().flat_map(|t| &t.postings))?)?;
    insert_entries(db, &txs)
}

/// A held escrow and its close, written together: the rows and balances of `commit_in(escrow)`
/// then `commit_in(close)`, in 7 statements rather than 12. Both ledger transactions in one
/// insert, the payment inserted already closed (no insert then update of its row and indexes),
/// the balances both touch locked and written once, net of both, and every leg in one insert.
///
/// The balances are checked net of the pair, not after the escrow alone: the escrow's debit was
/// checked when it was held, against the balance net of every held escrow, and nothing has
/// moved that balance below its reservations since (`check_balances`).
fn commit_pair_in(db: &Connection, escrow: &LedgerTx, close: &LedgerTx) -> Result<()> {
    let pairs = matches!((&escrow.payment, &close.payment), (Some(PaymentChange::Open(p)), Some(PaymentChange::Close { request_id, .. }))
            if close.nonce.is_none() && *request_id == p.request_id);
    if !pairs {
        // Anything but an escrow and a plain close of that payment is written as two.
        return commit_in(db, escrow).and_then(|()| commit_in(db, close));
    }
    pair_rows(db, escrow, close)?;
    move_balances(db, &lc::changes_of(escrow.postings.iter().chain(&close.postings))?)?;
    insert_entries(db, &[escrow, close])
}

/// The rows of a held escrow and its plain close (both ledger transactions, the payment
/// inserted closed, its kept answer and receipt, the session spends), without their balances
/// and legs.
fn pair_rows(db: &Connection, escrow: &LedgerTx, close: &LedgerTx) -> Result<()> {
    let (p, to, output_hash, reason, kept) = match (&escrow.payment, &close.payment) {
        (Some(PaymentChange::Open(p)), Some(PaymentChange::Close { request_id, to, output_hash, reason, kept }))
            if close.nonce.is_none() && *request_id == p.request_id =>
        {
            (p, to, output_hash, reason, kept)
        }
        _ => return Err(StoreError::Invalid(format!("{} and {} are not an escrow and its close", escrow.id, close.id))),
    };
    db.prepare_cached(INSERT_TWO_TXS)?.execute(params![
        escrow.id,
        escrow.kind.as_str(),
        p.request_id,
        escrow.memo,
        escrow.at_ms,
        close.id,
        close.kind.as_str(),
        p.request_id,
        close.memo,
        close.at_ms
    ])?;
    claim_nonce(db, escrow)?;
    let mut row = opened_row(p, *to, escrow);
    row.extend([
        text_or_null(output_hash.clone()),
        text_or_null(reason.clone()),
        Value::Text(close.id.clone()),
        Value::Integer(close.at_ms),
        text_or_null(kept.as_ref().map(|k| k.charged.to_string())),
    ]);
    let inserted = db.prepare_cached(INSERT_CLOSED_PAYMENT)?.execute(params_from_iter(row))?;
    if inserted == 0 {
        return Err(lc::opened_twice(&p.request_id));
    }
    insert_kept(db, &p.request_id, kept.as_deref())?;
    spend_session(db, escrow)?;
    spend_session(db, close)
}

/// Both ledger transactions of a pair.
const INSERT_TWO_TXS: &str =
    "INSERT INTO ledger_txs (id, kind, request_id, memo, created_at) VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)";

/// A payment opened and closed by one insert (`OPEN_PAYMENT`'s columns and `CLOSE_PAYMENT`'s).
const INSERT_CLOSED_PAYMENT: &str = "INSERT INTO payments (request_id, payer, amount, quote, model, app, gateway, method, \
     reference, status, input_hash, escrow_tx, created_at, output_hash, reason, settle_tx, settled_at, charged) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     ON CONFLICT (request_id) DO NOTHING";

/// The columns `OPEN_PAYMENT` binds, for the payment `p` opened by `tx` in `status`.
fn opened_row(p: &NewPayment, status: PaymentStatus, tx: &LedgerTx) -> Vec<Value> {
    vec![
        Value::Text(p.request_id.clone()),
        Value::Text(address_text(&p.payer)),
        Value::Text(p.amount.to_string()),
        Value::Text(p.quote.clone()),
        Value::Text(p.model.clone()),
        text_or_null(p.app.clone()),
        Value::Text(address_text(&p.gateway)),
        Value::Text(p.method.clone()),
        Value::Text(p.reference.clone()),
        Value::Text(status.as_str().to_owned()),
        Value::Text(p.input_hash.clone()),
        Value::Text(tx.id.clone()),
        Value::Integer(tx.at_ms),
    ]
}

/// Text, or NULL.
fn text_or_null(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::Text)
}

/// Claims `tx`'s nonce, if it carries one; refuses one claimed before.
fn claim_nonce(db: &Connection, tx: &LedgerTx) -> Result<()> {
    let Some(n) = &tx.nonce else { return Ok(()) };
    let claimed =
        db.prepare_cached(lc::CLAIM_NONCE)?.execute(params![address_text(&n.payer), n.nonce.to_lowercase(), tx.id, tx.at_ms])?;
    if claimed == 0 {
        return Err(StoreError::NonceUsed { payer: n.payer, nonce: n.nonce.clone() });
    }
    Ok(())
}

/// Stores the answer and the receipt kept with the capture of `request_id`, if any.
fn insert_kept(db: &Connection, request_id: &str, kept: Option<&crate::Kept>) -> Result<()> {
    if let Some(k) = kept {
        db.prepare_cached(lc::INSERT_ANSWER)?.execute(params![request_id, k.answer])?;
        let r = &k.receipt;
        db.prepare_cached(lc::INSERT_RECEIPT)?.execute(params![r.request_id, address_text(&r.node), r.digest, r.body, r.created_at_ms])?;
    }
    Ok(())
}

/// Debits (or releases) `tx`'s spending session, if any, within its cap.
fn spend_session(db: &Connection, tx: &LedgerTx) -> Result<()> {
    let Some(spend) = &tx.session_spend else { return Ok(()) };
    let row =
        db.prepare_cached(lc::SESSION_BUDGET)?.query_row(params![spend.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    let after = lc::session_after(spend, row, tx.at_ms)?;
    db.prepare_cached(lc::SESSION_SPENT)?.execute(params![after.to_string(), spend.id])?;
    Ok(())
}

/// Locks and reads the balances `changes` touch in one statement, checks them, and writes those
/// that move in one more.
fn move_balances(db: &Connection, changes: &[lc::Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let keys = changes.iter().flat_map(|c| [c.account_text.as_str(), c.bucket.as_str()]);
    let mut lock = db.prepare_cached(&lc::lock_balances_sql(changes.len()))?;
    let mut rows = lock.query(params_from_iter(keys))?;
    let mut old = HashMap::with_capacity(changes.len());
    while let Some(r) = rows.next()? {
        old.insert((r.get(0)?, r.get(1)?), r.get::<_, String>(2)?);
    }
    drop(rows);
    let moved = lc::apply(changes, &old)?;
    if !moved.is_empty() {
        let values = moved.iter().flat_map(|(account, bucket, amount)| [*account, bucket.as_str(), amount.as_str()]);
        db.prepare_cached(&lc::write_balances_sql(moved.len()))?.execute(params_from_iter(values))?;
    }
    Ok(())
}

/// Every leg of `txs` in one insert.
fn insert_entries(db: &Connection, txs: &[&LedgerTx]) -> Result<()> {
    let legs: usize = txs.iter().map(|t| t.postings.len()).sum();
    if legs == 0 {
        return Ok(());
    }
    let mut values = Vec::with_capacity(legs * 6);
    for tx in txs {
        for (idx, account, bucket, delta, role) in lc::entry_rows(tx) {
            values.extend([
                Value::Text(tx.id.clone()),
                Value::Integer(idx),
                Value::Text(account),
                Value::Text(bucket.to_owned()),
                Value::Text(delta),
                role.map_or(Value::Null, |r| Value::Text(r.to_owned())),
            ]);
        }
    }
    // Anonymous `?`: SQLite looks each `$n` up in a list of all of them, quadratic in a group's
    // hundreds of legs.
    let rows = vec!["(?, ?, ?, ?, ?, ?)"; legs].join(", ");
    let sql = format!("INSERT INTO ledger_entries (tx_id, idx, account, bucket, delta, role) VALUES {rows}");
    db.prepare_cached(&sql)?.execute(params_from_iter(values))?;
    Ok(())
}
