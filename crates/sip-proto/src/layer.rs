//! The transaction layer (RFC 3261 §17.1.3, §17.2.3): matches messages to transactions,
//! creates server transactions for new requests, absorbs retransmissions, routes the ACK of
//! a non-2xx to its INVITE transaction and hands everything else to the transaction user.

use crate::txn::{
    ClientInvite, ClientNonInvite, Output, Reliability, ServerInvite, ServerNonInvite, Timer,
    TimerConfig, TxnError,
};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// What the layer needs to know about a message; the facade implements it.
pub trait TxnMessage: Clone {
    /// `Some(method)` for a request (upper-case token), `None` for a response.
    fn method(&self) -> Option<&str>;
    /// The status code of a response.
    fn status(&self) -> Option<u16>;
    /// Branch of the top Via.
    fn branch(&self) -> Option<String>;
    /// `host:port` of the top Via's sent-by (RFC 3261 §17.2.3 matching).
    fn sent_by(&self) -> Option<String>;
    /// Method of the CSeq header.
    fn cseq_method(&self) -> Option<String>;
    /// The ACK for a non-2xx final response to `self` (an INVITE), RFC 3261 §17.1.1.3.
    fn ack_for(&self, response: &Self) -> Option<Self>;
    /// The 100 (Trying) answering `self` (an INVITE).
    fn trying(&self) -> Option<Self>;
    /// RFC 3261 §17.2.3 matching for RFC 2543 requests without a (cookie) branch: a key from
    /// Call-ID, CSeq number, From tag and the top Via's sent-by.
    fn legacy_key(&self) -> Option<String> {
        None
    }
}

/// Index handle of a transaction inside the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// RFC 3261 §17.2.3: branch (with the magic cookie), sent-by and method (ACK → INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

/// RFC 3261 §17.1.3: branch and CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: String,
}

const MAGIC_COOKIE: &str = "z9hG4bK";

#[derive(Debug)]
enum Txn<M> {
    Ict(ClientInvite<M>),
    Nict(ClientNonInvite<M>),
    Ist(ServerInvite<M>),
    Nist(ServerNonInvite<M>),
}

impl<M: Clone> Txn<M> {
    fn poll_output(&mut self) -> Option<Output<M>> {
        match self {
            Txn::Ict(t) => t.poll_output(),
            Txn::Nict(t) => t.poll_output(),
            Txn::Ist(t) => t.poll_output(),
            Txn::Nist(t) => t.poll_output(),
        }
    }
    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        match self {
            Txn::Ict(t) => t.poll_timeout(),
            Txn::Nict(t) => t.poll_timeout(),
            Txn::Ist(t) => t.poll_timeout(),
            Txn::Nist(t) => t.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Txn::Ict(t) => t.handle_timeout(now),
            Txn::Nict(t) => t.handle_timeout(now),
            Txn::Ist(t) => t.handle_timeout(now),
            Txn::Nist(t) => t.handle_timeout(now),
        }
    }
    fn handle_transport_error(&mut self, now: Instant) {
        match self {
            Txn::Ict(t) => t.handle_transport_error(now),
            Txn::Nict(t) => t.handle_transport_error(now),
            Txn::Ist(t) => t.handle_transport_error(now),
            Txn::Nist(t) => t.handle_transport_error(now),
        }
    }
    fn is_server(&self) -> bool {
        matches!(self, Txn::Ist(_) | Txn::Nist(_))
    }
}

/// What the layer hands to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOutput<M> {
    /// Send on the transaction's transport toward its peer.
    Transmit(TxnId, M),
    /// A new request for the TU; `cancels` names the INVITE server transaction a CANCEL
    /// targets (same branch), if it still exists (RFC 3261 §9.2).
    Request {
        txn: TxnId,
        request: M,
        cancels: Option<TxnId>,
    },
    /// A response for a client transaction of the TU.
    Response(TxnId, M),
    /// An ACK that matched an INVITE server transaction in RFC 6026 Accepted: the ACK of a
    /// 2xx, for the TU's dialog.
    AckForTu(TxnId, M),
    /// An ACK that matched no transaction (the ACK of a 2xx after Timer L, or from a proxy
    /// with a new branch): the TU matches it to a dialog.
    StrayAck(M),
    /// A response that matched no client transaction (RFC 3261 §17.1.3: a UA drops it; a
    /// 2xx retransmission for an INVITE may still matter to the dialog).
    StrayResponse(M),
    /// Timer B/F (client: act as if a 408 arrived), H (server: no ACK came) or Guard
    /// (INVITE server: the TU never sent a final response).
    Timeout(TxnId, Timer),
    Terminated(TxnId),
}

/// Why the layer refused to take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    #[error("message lacks {0}")]
    Missing(&'static str),
    #[error("no such transaction")]
    NoTransaction,
    #[error("transaction: {0}")]
    Txn(#[from] TxnError),
}

#[derive(Debug)]
pub struct TxnLayer<M> {
    cfg: TimerConfig,
    next_id: u64,
    txns: HashMap<TxnId, Txn<M>>,
    server_keys: HashMap<ServerKey, TxnId>,
    client_keys: HashMap<ClientKey, TxnId>,
    keys_of: HashMap<TxnId, KeyOf>,
    out: VecDeque<LayerOutput<M>>,
}

#[derive(Debug, Clone)]
enum KeyOf {
    Server(ServerKey),
    Client(ClientKey),
}

impl<M: TxnMessage> TxnLayer<M> {
    pub fn new(cfg: TimerConfig) -> Self {
        TxnLayer {
            cfg,
            next_id: 1,
            txns: HashMap::new(),
            server_keys: HashMap::new(),
            client_keys: HashMap::new(),
            keys_of: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// Live transactions (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    fn alloc(&mut self) -> TxnId {
        let id = TxnId(self.next_id);
        self.next_id += 1;
        id
    }

    fn server_key(msg: &M, method: &str) -> Result<ServerKey, LayerError> {
        let branch = match msg.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b,
            // RFC 2543 peers: no usable branch, match on the old fields (§17.2.3).
            _ => format!(
                "rfc2543:{}",
                msg.legacy_key().ok_or(LayerError::Missing("Via branch"))?
            ),
        };
        let sent_by = msg.sent_by().ok_or(LayerError::Missing("Via sent-by"))?;
        // RFC 3261 §17.2.3: ACK matches the INVITE it acknowledges.
        let method = if method == "ACK" { "INVITE" } else { method };
        Ok(ServerKey {
            branch,
            sent_by,
            method: method.to_owned(),
        })
    }

    /// The TU starts a client transaction for `request`.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: M,
        rel: Reliability,
    ) -> Result<TxnId, LayerError> {
        let method = request
            .method()
            .ok_or(LayerError::Missing("method"))?
            .to_owned();
        let branch = request.branch().ok_or(LayerError::Missing("Via branch"))?;
        let id = self.alloc();
        if method == "ACK" {
            // An ACK (of a 2xx) has no transaction: it is just sent (RFC 3261 §17.1.1.3).
            self.out.push_back(LayerOutput::Transmit(id, request));
            return Ok(id);
        }
        if method == "CANCEL" {
            // RFC 3261 §9.1: the CANCEL bounds the life of the INVITE it cancels (same branch).
            let target = ClientKey {
                branch: branch.clone(),
                method: "INVITE".into(),
            };
            if let Some(inv) = self.client_keys.get(&target)
                && let Some(Txn::Ict(t)) = self.txns.get_mut(inv)
            {
                t.handle_cancel_sent(now);
            }
        }
        let key = ClientKey {
            branch,
            method: method.clone(),
        };
        let txn = if method == "INVITE" {
            Txn::Ict(ClientInvite::new(now, request, rel, self.cfg))
        } else {
            Txn::Nict(ClientNonInvite::new(now, request, rel, self.cfg))
        };
        self.client_keys.insert(key.clone(), id);
        self.keys_of.insert(id, KeyOf::Client(key));
        self.txns.insert(id, txn);
        self.drain(id);
        Ok(id)
    }

    /// The TU answers a server transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        id: TxnId,
        response: M,
    ) -> Result<(), LayerError> {
        let code = response.status().ok_or(LayerError::Missing("status"))?;
        match self.txns.get_mut(&id) {
            Some(Txn::Ist(t)) => t.send_response(now, code, response)?,
            Some(Txn::Nist(t)) => t.send_response(now, code, response)?,
            _ => return Err(LayerError::NoTransaction),
        }
        self.drain(id);
        Ok(())
    }

    /// A message from the transport (already parsed and framed).
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: M,
        rel: Reliability,
    ) -> Result<(), LayerError> {
        match msg.method().map(str::to_owned) {
            Some(method) => self.handle_request(now, msg, &method, rel),
            None => self.handle_response(now, msg),
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        msg: M,
        method: &str,
        rel: Reliability,
    ) -> Result<(), LayerError> {
        let has_cookie = msg.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE));
        if !has_cookie {
            // RFC 2543 peers: no transaction matching without the cookie; every request is new
            // and retransmissions reach the TU (which dedups by CSeq in the dialog).
            if method == "ACK" {
                self.out.push_back(LayerOutput::StrayAck(msg));
                return Ok(());
            }
        }
        let key = Self::server_key(&msg, method)?;
        if let Some(&id) = self.server_keys.get(&key) {
            match self.txns.get_mut(&id) {
                Some(Txn::Ist(t)) if method == "ACK" => t.handle_ack(now, msg),
                Some(Txn::Ist(t)) => t.handle_retransmission(now),
                Some(Txn::Nist(t)) => t.handle_retransmission(now),
                _ => {}
            }
            self.drain(id);
            return Ok(());
        }
        if method == "ACK" {
            self.out.push_back(LayerOutput::StrayAck(msg));
            return Ok(());
        }
        let cancels = if method == "CANCEL" {
            let target = ServerKey {
                method: "INVITE".into(),
                ..key.clone()
            };
            self.server_keys.get(&target).copied()
        } else {
            None
        };
        let id = self.alloc();
        let txn = if method == "INVITE" {
            let trying = msg.trying();
            Txn::Ist(ServerInvite::new(now, msg, trying, rel, self.cfg))
        } else {
            Txn::Nist(ServerNonInvite::new(now, msg, rel, self.cfg))
        };
        self.server_keys.insert(key.clone(), id);
        self.keys_of.insert(id, KeyOf::Server(key));
        self.txns.insert(id, txn);
        self.drain_with_cancel(id, cancels);
        Ok(())
    }

    fn handle_response(&mut self, now: Instant, msg: M) -> Result<(), LayerError> {
        let code = msg.status().ok_or(LayerError::Missing("status"))?;
        let key = match (msg.branch(), msg.cseq_method()) {
            (Some(b), Some(m)) => ClientKey {
                branch: b,
                method: m,
            },
            _ => {
                self.out.push_back(LayerOutput::StrayResponse(msg));
                return Ok(());
            }
        };
        let Some(&id) = self.client_keys.get(&key) else {
            self.out.push_back(LayerOutput::StrayResponse(msg));
            return Ok(());
        };
        match self.txns.get_mut(&id) {
            Some(Txn::Ict(t)) => t.handle_response(now, code, msg, |req, resp| req.ack_for(resp)),
            Some(Txn::Nict(t)) => t.handle_response(now, code, msg),
            _ => {}
        }
        self.drain(id);
        Ok(())
    }

    /// The transport could not deliver for this transaction (RFC 3261 §18.4).
    pub fn handle_transport_error(&mut self, now: Instant, id: TxnId) {
        if let Some(t) = self.txns.get_mut(&id) {
            t.handle_transport_error(now);
        }
        self.drain(id);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TxnId> = self
            .txns
            .iter()
            .filter(|(_, t)| t.poll_timeout().is_some_and(|(at, _)| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(t) = self.txns.get_mut(&id) {
                t.handle_timeout(now);
            }
            self.drain(id);
        }
    }

    fn drain(&mut self, id: TxnId) {
        self.drain_with_cancel(id, None);
    }

    fn drain_with_cancel(&mut self, id: TxnId, cancels: Option<TxnId>) {
        let mut done = false;
        let is_server = self.txns.get(&id).is_some_and(Txn::is_server);
        if let Some(t) = self.txns.get_mut(&id) {
            while let Some(o) = t.poll_output() {
                let lo = match o {
                    Output::Transmit(m) => LayerOutput::Transmit(id, m),
                    Output::Deliver(m) if is_server && m.method() == Some("ACK") => {
                        LayerOutput::AckForTu(id, m)
                    }
                    Output::Deliver(m) if is_server => LayerOutput::Request {
                        txn: id,
                        request: m,
                        cancels,
                    },
                    Output::Deliver(m) => LayerOutput::Response(id, m),
                    Output::Timeout(tm) => LayerOutput::Timeout(id, tm),
                    Output::Terminated => {
                        done = true;
                        LayerOutput::Terminated(id)
                    }
                };
                self.out.push_back(lo);
            }
        }
        if done {
            self.txns.remove(&id);
            match self.keys_of.remove(&id) {
                Some(KeyOf::Server(k)) => {
                    self.server_keys.remove(&k);
                }
                Some(KeyOf::Client(k)) => {
                    self.client_keys.remove(&k);
                }
                None => {}
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<LayerOutput<M>> {
        self.out.pop_front()
    }

    /// The earliest deadline of any transaction.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.txns
            .values()
            .filter_map(|t| t.poll_timeout().map(|(at, _)| at))
            .min()
    }
}

/// The facade's messages in the transaction layer.
impl TxnMessage for crate::msg::Message {
    fn method(&self) -> Option<&str> {
        self.as_request().map(|r| r.method().as_str())
    }

    fn status(&self) -> Option<u16> {
        self.as_response().map(crate::msg::Response::status)
    }

    fn branch(&self) -> Option<String> {
        self.headers().top_via().ok().and_then(|v| v.branch)
    }

    fn sent_by(&self) -> Option<String> {
        self.headers().top_via().ok().map(|v| v.sent_by())
    }

    fn cseq_method(&self) -> Option<String> {
        self.headers()
            .cseq()
            .ok()
            .map(|(_, m)| m.as_str().to_owned())
    }

    fn ack_for(&self, response: &Self) -> Option<Self> {
        match (self, response) {
            (crate::msg::Message::Request(req), crate::msg::Message::Response(resp)) => {
                req.ack_for(resp).ok().map(crate::msg::Message::Request)
            }
            _ => None,
        }
    }

    fn legacy_key(&self) -> Option<String> {
        let h = self.headers();
        let (num, _) = h.cseq().ok()?;
        let from_tag = h.from().ok()?.tag.unwrap_or_default();
        let sent_by = h.top_via().ok()?.sent_by();
        Some(format!("{}|{num}|{from_tag}|{sent_by}", h.call_id().ok()?))
    }

    fn trying(&self) -> Option<Self> {
        let req = self.as_request()?;
        crate::msg::Response::for_request(req, 100, "Trying", "")
            .ok()
            .map(crate::msg::Message::Response)
    }
}
