//! This instance's live calls: a snapshot per call in the store (what `GET /api/v1/calls`
//! lists and what another instance would take a call over from), hang-up from the admin API,
//! the call metrics, and the CDR every call leaves — also when it fails.
//!
//! A store outage never ends a call: snapshot and CDR writes that fail are logged and the call
//! goes on (the media path does not depend on the database).

use admin_api::{Direction, HangUp, Metrics};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

/// The registry of this instance's calls; it is the admin API's [`admin_api::CallControl`].
#[derive(Debug)]
pub struct LiveCalls {
    instance_id: String,
    store: store::Store,
    metrics: Metrics,
    hangups: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl LiveCalls {
    pub fn new(instance_id: String, store: store::Store, metrics: Metrics) -> Arc<Self> {
        Arc::new(LiveCalls {
            instance_id,
            store,
            metrics,
            hangups: Mutex::new(HashMap::new()),
        })
    }

    /// Snapshots of an earlier run of this instance are calls nobody drives any more (the
    /// process that held their sockets is gone): they are removed at start-up.
    pub async fn clear_stale(&self) {
        match self.store.calls().list_by_instance(&self.instance_id).await {
            Ok(stale) => {
                for c in stale {
                    if let Err(e) = self.store.calls().delete(&c.id).await {
                        warn!(call = %c.id, error = %e, "cannot remove a stale call snapshot");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list stale call snapshots"),
        }
    }

    /// Registers a new call and writes its first snapshot.
    pub async fn start(self: &Arc<Self>, call: NewCall) -> LiveCall {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.hangups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        self.metrics.call_started(call.direction);
        let snapshot = store::calls::CallSnapshot {
            id: id.clone(),
            instance_id: self.instance_id.clone(),
            state: "proceeding".to_owned(),
            sip_call_id: call.sip_call_id,
            ript_call_id: call.ript_call_id,
            cookies: Vec::new(),
            sip_leg: serde_json::Value::Null,
            ript_leg: serde_json::Value::Null,
            revision: 0,
            started_at: wall_ms(),
            updated_at: 0,
        };
        let live = LiveCall {
            registry: Arc::clone(self),
            snapshot,
            direction: call.direction,
            started: Instant::now(),
            answered_at: None,
            hangup: Some(rx),
            finished: false,
        };
        live.persist().await;
        live
    }
}

impl admin_api::CallControl for LiveCalls {
    fn hang_up<'a>(
        &'a self,
        call_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = HangUp> + Send + 'a>> {
        Box::pin(async move {
            let tx = self
                .hangups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(call_id);
            if let Some(tx) = tx {
                // The call task may have ended in between: then the call is ending anyway.
                let _ = tx.send(());
                return HangUp::Ending;
            }
            match self.store.calls().get(call_id).await {
                Ok(c) if c.instance_id != self.instance_id => HangUp::OtherInstance,
                _ => HangUp::NotFound,
            }
        })
    }
}

/// What a call is known by when it starts.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub direction: Direction,
    pub sip_call_id: Option<String>,
    pub ript_call_id: Option<String>,
}

/// How a call ended, for its CDR and the metrics.
#[derive(Debug, Clone)]
pub struct Ending {
    /// The metrics/CDR bucket: a small fixed set (`answered`, `declined`, `failed`, ...).
    pub bucket: &'static str,
    pub caller: String,
    pub callee: String,
    pub source: store::model::Endpoint,
    pub target: Option<store::model::Endpoint>,
    pub route_id: Option<String>,
    pub sip_codec: Option<String>,
    pub ript_codec: Option<String>,
    pub sip_status: Option<u16>,
    pub ript_reason: Option<String>,
    pub media: store::cdr::MediaCounters,
}

/// One live call's registration; [`LiveCall::finish`] ends it. Dropping it unfinished (a
/// task that panicked) forgets the hang-up handle and counts the call as failed; its snapshot
/// stays until the instance restarts ([`LiveCalls::clear_stale`]).
#[derive(Debug)]
pub struct LiveCall {
    registry: Arc<LiveCalls>,
    snapshot: store::calls::CallSnapshot,
    direction: Direction,
    started: Instant,
    answered_at: Option<i64>,
    hangup: Option<oneshot::Receiver<()>>,
    finished: bool,
}

impl LiveCall {
    pub fn id(&self) -> &str {
        &self.snapshot.id
    }

    /// Resolves when the admin API asks to hang the call up (never, after it once did).
    pub async fn hang_up_requested(&mut self) {
        match self.hangup.as_mut() {
            Some(rx) => {
                let asked = rx.await.is_ok();
                self.hangup = None;
                if !asked {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Names the SIP dialog once an outbound INVITE created one (written with the next state).
    pub fn set_sip_call_id(&mut self, id: &str) {
        self.snapshot.sip_call_id = Some(id.to_owned());
    }

    /// Records a state change (a profile §5 state name) in the snapshot.
    pub async fn set_state(&mut self, state: &str) {
        if self.snapshot.state == state {
            return;
        }
        state.clone_into(&mut self.snapshot.state);
        if state == "answered" && self.answered_at.is_none() {
            self.answered_at = Some(wall_ms());
            self.registry
                .metrics
                .call_setup(self.direction, self.started.elapsed().as_secs_f64());
        }
        self.persist().await;
    }

    async fn persist(&self) {
        if let Err(e) = self.registry.store.calls().upsert(&self.snapshot).await {
            warn!(call = %self.snapshot.id, error = %e, "cannot write the call snapshot");
        }
    }

    /// Ends the call: removes its snapshot, writes its CDR, counts it.
    pub async fn finish(mut self, end: Ending) {
        self.finished = true;
        self.forget();
        let r = &self.registry;
        let m = &end.media;
        r.metrics.call_ended(self.direction, end.bucket);
        use admin_api::{Flow, MediaLeg};
        r.metrics
            .media(MediaLeg::Sip, Flow::In, m.rtp_packets_in, 0);
        r.metrics
            .media(MediaLeg::Sip, Flow::Out, m.rtp_packets_out, 0);
        r.metrics
            .media(MediaLeg::Ript, Flow::In, m.ript_chunks_in, 0);
        // packets_lost: chunks sent toward the RIPT peer that it never acknowledged.
        r.metrics
            .media(MediaLeg::Ript, Flow::Out, m.ript_chunks_out, m.packets_lost);
        if let Err(e) = r.store.calls().delete(&self.snapshot.id).await {
            warn!(call = %self.snapshot.id, error = %e, "cannot remove the call snapshot");
        }
        let cdr = store::cdr::Cdr {
            id: String::new(),
            call_id: self.snapshot.id.clone(),
            started_at: self.snapshot.started_at,
            answered_at: self.answered_at,
            ended_at: wall_ms(),
            caller: end.caller,
            callee: end.callee,
            source: end.source,
            target: end.target,
            route_id: end.route_id,
            sip_call_id: self.snapshot.sip_call_id.clone(),
            ript_call_id: self.snapshot.ript_call_id.clone(),
            sip_codec: end.sip_codec,
            ript_codec: end.ript_codec,
            sip_status: end.sip_status,
            ript_reason: end.ript_reason,
            media: end.media,
        };
        if let Err(e) = r.store.cdrs().insert(cdr).await {
            warn!(call = %self.snapshot.id, error = %e, "cannot write the CDR");
        }
    }

    fn forget(&self) {
        self.registry
            .hangups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.snapshot.id);
    }
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        if !self.finished {
            self.forget();
            self.registry.metrics.call_ended(self.direction, "failed");
        }
    }
}

fn wall_ms() -> i64 {
    i64::try_from(ript_h3::wall_ms()).unwrap_or(i64::MAX)
}
