//! What the server knows of each open connection — whether it waits on its client (and since
//! when) or runs a request — the deadline that follows from it, and which one to shed first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Limits;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in hand: waiting since `since`; `started` when the next one's first byte came.
    Waiting {
        since: Instant,
        started: Option<Instant>,
    },
    /// Headers in, the handler runs. `body_since`: when it began reading a body that is not
    /// whole yet; `read_ahead`: bytes came after the body, so the next request has begun.
    Serving {
        body_since: Option<Instant>,
        body_done: bool,
        read_ahead: bool,
    },
}

/// One connection. Its I/O, body and service report to it; its task and the accept loop read it.
pub(super) struct Conn {
    phase: Mutex<Phase>,
    /// Wakes the connection's task to recompute its deadline.
    pub(super) changed: Notify,
    /// Cancelled when the accept loop sheds this connection.
    pub(super) shed: CancellationToken,
    /// Its socket has been read once: a request already sent has been seen. Until then it is
    /// not shed — under a flood of reconnections the accept loop could otherwise close a
    /// client's connection before its task ever ran.
    read_once: AtomicBool,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                started: None,
            }),
            changed: Notify::new(),
            shed: CancellationToken::new(),
            read_once: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // Only plain values live behind it: a panic elsewhere leaves them usable.
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_one();
    }

    /// Its socket was read (whatever came of it).
    pub(super) fn polled(&self) {
        self.read_once.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived from the client.
    pub(super) fn read(&self) {
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Waiting { started, .. } if started.is_none() => {
                *started = Some(Instant::now());
                drop(phase);
                self.changed.notify_one();
            }
            Phase::Serving {
                body_done: true,
                read_ahead,
                ..
            } => *read_ahead = true,
            _ => {}
        }
    }

    /// A request's headers are in; `body_done` when it has no body to read.
    pub(super) fn begin(&self, body_done: bool) {
        self.set(Phase::Serving {
            body_since: None,
            body_done,
            read_ahead: false,
        });
    }

    /// The handler reads the body.
    pub(super) fn body_polled(&self) {
        let mut phase = self.phase();
        if let Phase::Serving {
            body_since: since @ None,
            body_done: false,
            ..
        } = &mut *phase
        {
            *since = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// The body is whole (or failed): what is left is the handler's own work.
    pub(super) fn body_done(&self) {
        let mut phase = self.phase();
        if let Phase::Serving {
            body_since,
            body_done,
            ..
        } = &mut *phase
        {
            *body_since = None;
            *body_done = true;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// The response is ready: the connection waits for its next request.
    pub(super) fn end(&self) {
        let now = Instant::now();
        let read_ahead = matches!(
            *self.phase(),
            Phase::Serving {
                read_ahead: true,
                ..
            }
        );
        self.set(Phase::Waiting {
            since: now,
            started: read_ahead.then_some(now),
        });
    }

    /// Whether a handler runs (its response is still to come).
    pub(super) fn in_service(&self) -> bool {
        matches!(*self.phase(), Phase::Serving { .. })
    }

    /// When the connection is to be closed if nothing changes: a request (or a body) that
    /// does not arrive whole in time, or keep-alive idleness.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.phase() {
            Phase::Waiting {
                started: Some(t), ..
            } => Some(t + limits.header_read_timeout),
            Phase::Waiting { since, .. } => limits.idle_timeout.map(|idle| since + idle),
            Phase::Serving {
                body_since: Some(t),
                body_done: false,
                ..
            } => Some(t + limits.header_read_timeout),
            Phase::Serving { .. } => None,
        }
    }

    /// Where it stands in the order of shedding, if it waits on its client (only such
    /// connections are shed): first those with a request begun and unfinished — what a slow
    /// client holds — then those that have sent nothing (idle keep-alive, or just opened),
    /// each the longest-waiting first.
    fn shed_rank(&self) -> Option<(u8, Instant)> {
        if !self.read_once.load(Ordering::Relaxed) {
            return None;
        }
        match *self.phase() {
            Phase::Waiting {
                started: Some(t), ..
            } => Some((0, t)),
            Phase::Serving {
                body_since: Some(t),
                body_done: false,
                ..
            } => Some((0, t)),
            Phase::Waiting { since, .. } => Some((1, since)),
            Phase::Serving { .. } => None,
        }
    }
}

/// The open connections.
#[derive(Default)]
pub(super) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// Notified (all waiters) each time a connection closes.
    pub(super) closed: Notify,
}

impl Registry {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.conns().len()
    }

    /// Open and not being shed: what counts against the cap.
    pub(super) fn live(&self) -> usize {
        self.conns()
            .values()
            .filter(|c| !c.shed.is_cancelled())
            .count()
    }

    /// Registers a new connection; it is forgotten when the guard drops.
    pub(super) fn add(self: &Arc<Self>) -> (Arc<Conn>, Registered) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new());
        self.conns().insert(id, conn.clone());
        (
            conn,
            Registered {
                registry: self.clone(),
                id,
            },
        )
    }

    /// The first connection in the order of shedding ([`Conn::shed_rank`]), not yet shed.
    fn victim(&self) -> Option<Arc<Conn>> {
        self.conns()
            .values()
            .filter(|c| !c.shed.is_cancelled())
            .filter_map(|c| c.shed_rank().map(|rank| (rank, c)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c.clone())
    }

    /// Whether some connection could be shed.
    pub(super) fn has_victim(&self) -> bool {
        self.victim().is_some()
    }

    /// Closes the first connection in the order of shedding; false if every one is running a
    /// request (or is yet to be read).
    pub(super) fn shed_one(&self) -> bool {
        match self.victim() {
            Some(conn) => {
                conn.shed.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes its connection from the registry when the connection's task ends.
pub(super) struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
        self.registry.closed.notify_waiters();
    }
}
