//! Keeps one upstream registration: the async shell of sip-proto's [`Registration`].

use crate::{Error, now};
use sip_proto::msg::Response;
use sip_proto::register::{Action, Registration, RegistrationConfig};
use sip_transport::{Handle, Target};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// No answer yet.
    Pending,
    /// The registrar holds our binding for `expires` seconds (counted from `at`).
    Registered {
        expires: u32,
        at: Instant,
    },
    /// The last attempt failed; another follows by itself.
    Failed {
        status: u16,
        reason: String,
    },
    /// Refreshes failed until the binding expired.
    Lost,
    Unregistered,
}

/// Watch or end a registration. Dropping it unregisters.
#[derive(Debug)]
pub struct RegistrationHandle {
    state: watch::Receiver<RegState>,
    stop: Option<mpsc::Sender<()>>,
}

impl RegistrationHandle {
    pub fn state(&self) -> RegState {
        self.state.borrow().clone()
    }

    /// Waits for the state to change, then returns it; `None` when the task has ended.
    pub async fn changed(&mut self) -> Option<RegState> {
        self.state.changed().await.ok()?;
        Some(self.state.borrow_and_update().clone())
    }

    /// Removes the binding (REGISTER with Expires 0); the state becomes `Unregistered`.
    pub async fn unregister(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(()).await;
        }
    }
}

pub(crate) fn start(
    handle: Handle,
    cfg: RegistrationConfig,
    target: Target,
) -> Result<RegistrationHandle, Error> {
    let aor = cfg.aor.clone();
    let mut reg = Registration::new(cfg, rand::random::<u64>)?;
    reg.register(now());
    let (state_tx, state) = watch::channel(RegState::Pending);
    let (stop_tx, mut stop) = mpsc::channel::<()>(1);
    let (resp_tx, mut responses) = mpsc::channel::<Response>(16);
    let span = info_span!("register", aor = %aor);
    tokio::spawn(
        async move {
            let mut stopping = false;
            loop {
                while let Some(a) = reg.poll_action() {
                    match a {
                        Action::SendRegister(req) => {
                            let h = handle.clone();
                            let tx = resp_tx.clone();
                            let target = target.clone();
                            tokio::spawn(async move {
                                match h.request(req, target).await {
                                    Ok(mut txn) => {
                                        while let Some(r) = txn.next().await {
                                            if tx.send(r).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                    Err(e) => warn!(error = %e, "REGISTER not sent"),
                                }
                            });
                        }
                        Action::Registered { expires, .. } => {
                            info!(expires, "registered");
                            state_tx.send_replace(RegState::Registered { expires, at: now() });
                        }
                        Action::Failed { status, reason, .. } => {
                            warn!(status, %reason, "registration failed");
                            state_tx.send_replace(RegState::Failed { status, reason });
                        }
                        Action::BindingLost => {
                            warn!("binding lost");
                            state_tx.send_replace(RegState::Lost);
                        }
                        Action::Unregistered => {
                            info!("unregistered");
                            state_tx.send_replace(RegState::Unregistered);
                            return;
                        }
                    }
                }
                let deadline = reg.poll_timeout();
                tokio::select! {
                    r = responses.recv() => {
                        if let Some(r) = r
                            && let Err(e) = reg.handle_response(now(), &r)
                        {
                            debug!(error = %e, "response not for us");
                        }
                    }
                    s = stop.recv(), if !stopping => {
                        stopping = true;
                        let _ = s;
                        reg.unregister(now());
                    }
                    _ = sleep_until_opt(deadline) => reg.handle_timeout(now()),
                }
            }
        }
        .instrument(span),
    );
    Ok(RegistrationHandle {
        state,
        stop: Some(stop_tx),
    })
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
