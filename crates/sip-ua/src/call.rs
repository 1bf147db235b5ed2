//! One task per INVITE session: feeds it the network and the application's commands, carries
//! out its actions, and answers a digest challenge to our INVITE once.

use crate::{Error, Input, Shared, lock, now, random_token};
use sip_proto::digest::{self, Challenge};
use sip_proto::layer::TxnId;
use sip_proto::msg::{Method, Request, Response};
use sip_proto::session::{Action, InviteSession, Role, SessionEvent, SessionState};
use sip_transport::{Incoming, Target, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span};

/// What [`UserAgent::call`](crate::UserAgent::call) sends.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// The Request-URI.
    pub uri: String,
    /// Our From, a name-addr without tag (`<sip:+14085551000@gw.example>`).
    pub from: String,
    /// The To, a name-addr (`<sip:+14085552000@core.example>`).
    pub to: String,
    /// Where the INVITE and every later request of the dialog go.
    pub target: Target,
    /// An SDP offer; `None` places a late-offer call (the offer comes in the 2xx).
    pub offer: Option<Vec<u8>>,
    /// Username and password for a 401/407 to the INVITE (answered once).
    pub credentials: Option<(String, String)>,
    /// Extra headers (P-Asserted-Identity, Identity…).
    pub headers: Vec<(String, String)>,
}

/// A new INVITE: the session plus what the application decides admission and routing on.
#[derive(Debug)]
pub struct IncomingCall {
    pub call: Call,
    pub request: Request,
    pub source: SocketAddr,
    pub transport: Transport,
}

/// The application's side of one call: commands in, [`SessionEvent`]s out. Dropping it ends
/// the call (CANCEL, 480 or BYE, whatever its state allows).
///
/// Commands go in on the call task's input channel, and events travel boxed: a channel
/// allocates its slots in blocks of 32 when it is created, so few channels with slots the
/// size of a pointer keep an idle call small.
#[derive(Debug)]
pub struct Call {
    call_id: String,
    input: mpsc::Sender<Input>,
    events: mpsc::UnboundedReceiver<Box<SessionEvent>>,
}

#[derive(Debug)]
enum Op {
    Provisional(u16, Option<Vec<u8>>),
    Accept(Option<Vec<u8>>),
    Reject(u16, Vec<(String, String)>),
    Answer(Vec<u8>),
    RejectOffer(u16),
    Reinvite(Option<Vec<u8>>),
    Update(Vec<u8>),
    Cancel,
    Bye,
    Hangup,
    Info(String, Vec<u8>),
}

#[derive(Debug)]
pub(crate) struct Cmd {
    op: Op,
    reply: oneshot::Sender<Result<(), Error>>,
}

impl Call {
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The next event; `None` once the call has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await.map(|ev| *ev)
    }

    async fn op(&self, op: Op) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.input
            .send(Input::Cmd(Box::new(Cmd { op, reply })))
            .await
            .map_err(|_| Error::Gone)?;
        rx.await.map_err(|_| Error::Gone)?
    }

    /// A provisional response (reliable when both sides support 100rel); a body is the
    /// answer to the INVITE's offer (early media) or our offer to an offerless INVITE.
    pub async fn provisional(&self, status: u16, body: Option<Vec<u8>>) -> Result<(), Error> {
        self.op(Op::Provisional(status, body)).await
    }

    pub async fn accept(&self, body: Option<Vec<u8>>) -> Result<(), Error> {
        self.op(Op::Accept(body)).await
    }

    pub async fn reject(&self, status: u16) -> Result<(), Error> {
        self.op(Op::Reject(status, Vec::new())).await
    }

    /// A final non-2xx with extra headers (a digest challenge, Retry-After, Reason…).
    pub async fn reject_with(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> Result<(), Error> {
        self.op(Op::Reject(status, headers)).await
    }

    /// Answers the peer's offer from a re-INVITE, UPDATE or offerless exchange.
    pub async fn answer(&self, body: Vec<u8>) -> Result<(), Error> {
        self.op(Op::Answer(body)).await
    }

    pub async fn reject_offer(&self, status: u16) -> Result<(), Error> {
        self.op(Op::RejectOffer(status)).await
    }

    pub async fn reinvite(&self, offer: Option<Vec<u8>>) -> Result<(), Error> {
        self.op(Op::Reinvite(offer)).await
    }

    pub async fn update(&self, offer: Vec<u8>) -> Result<(), Error> {
        self.op(Op::Update(offer)).await
    }

    pub async fn cancel(&self) -> Result<(), Error> {
        self.op(Op::Cancel).await
    }

    pub async fn bye(&self) -> Result<(), Error> {
        self.op(Op::Bye).await
    }

    /// Ends the call whatever its state: CANCEL before an answer (caller), 480 (callee), BYE.
    pub async fn hangup(&self) -> Result<(), Error> {
        self.op(Op::Hangup).await
    }

    pub async fn info(&self, content_type: &str, body: Vec<u8>) -> Result<(), Error> {
        self.op(Op::Info(content_type.to_owned(), body)).await
    }
}

/// Our INVITE as first sent, and the credentials to answer one challenge to it.
#[derive(Debug)]
struct UacAuth {
    username: String,
    password: String,
    invite: Option<Request>,
    tried: bool,
}

struct Task {
    s: Arc<Shared>,
    call_id: String,
    session: InviteSession,
    peer: Target,
    via: String,
    input: mpsc::Receiver<Input>,
    input_tx: mpsc::Sender<Input>,
    /// The application dropped its [`Call`] (its events receiver closed).
    app_gone: bool,
    events: mpsc::UnboundedSender<Box<SessionEvent>>,
    auth: Option<UacAuth>,
    /// Headers to add to our final non-2xx of that status (the session builds it).
    reject_headers: Option<(u16, Vec<(String, String)>)>,
    /// Our INVITE is cancelled if still unanswered then.
    no_answer_at: Option<Instant>,
}

fn new_task(
    s: Arc<Shared>,
    session: InviteSession,
    peer: Target,
    via: String,
    auth: Option<UacAuth>,
) -> (Call, Box<Task>) {
    let call_id = session.call_id().to_owned();
    let (input_tx, input) = mpsc::channel(256);
    let (ev_tx, events) = mpsc::unbounded_channel();
    lock(&s.calls).insert(call_id.clone(), input_tx.clone());
    let call = Call {
        call_id: call_id.clone(),
        input: input_tx.clone(),
        events,
    };
    let task = Box::new(Task {
        s,
        call_id,
        session,
        peer,
        via,
        input,
        input_tx,
        app_gone: false,
        events: ev_tx,
        no_answer_at: None,
        auth,
        reject_headers: None,
    });
    (call, task)
}

pub(crate) fn start_incoming(s: Arc<Shared>, inc: Incoming) -> Result<Option<IncomingCall>, Error> {
    let tag = random_token();
    let cfg = s.session_config(inc.transport, inc.source)?;
    let via = cfg.via.clone();
    let session = match InviteSession::uas(now(), inc.txn, &inc.request, &tag, cfg) {
        Ok(x) => x,
        Err(rej) => {
            info!(status = rej.status, "INVITE refused by the session checks");
            let r = rej.response(&inc.request, &tag)?;
            let h = s.handle.clone();
            let txn = inc.txn;
            tokio::spawn(async move {
                let _ = h.respond(txn, r).await;
            });
            return Ok(None);
        }
    };
    let peer = Target::new(inc.transport, inc.source);
    let no_answer_at = now() + s.cfg.no_answer_timeout;
    let (call, mut task) = new_task(s, session, peer, via, None);
    task.no_answer_at = Some(no_answer_at);
    tokio::spawn(task.run());
    Ok(Some(IncomingCall {
        call,
        request: inc.request,
        source: inc.source,
        transport: inc.transport,
    }))
}

pub(crate) fn start_outgoing(s: Arc<Shared>, o: CallOptions) -> Result<Call, Error> {
    let t = o.target.transport;
    let cfg = s.session_config(t, o.target.addr)?;
    let via = cfg.via.clone();
    let call_id = format!("{}{}", random_token(), random_token());
    let mut req = Request::new(Method::Invite, &o.uri)?;
    {
        let h = req.headers_mut();
        h.push(
            "Via",
            &format!("{via};branch=z9hG4bK{};rport", random_token()),
        )?;
        h.push("Max-Forwards", "70")?;
        h.push("From", &format!("{};tag={}", o.from, random_token()))?;
        h.push("To", &o.to)?;
        h.push("Call-ID", &call_id)?;
        h.push("CSeq", "1 INVITE")?;
        h.push("Contact", &cfg.local_contact)?;
        for (k, v) in &o.headers {
            h.push(k, v)?;
        }
    }
    if let Some(sdp) = o.offer {
        req.headers_mut().push("Content-Type", "application/sdp")?;
        req.set_body(sdp);
    }
    let session = InviteSession::uac(now(), req, cfg)?;
    let auth = o.credentials.map(|(username, password)| UacAuth {
        username,
        password,
        invite: None,
        tried: false,
    });
    let no_answer_at = now() + s.cfg.no_answer_timeout;
    let (call, mut task) = new_task(s, session, o.target, via, auth);
    task.no_answer_at = Some(no_answer_at);
    tokio::spawn(task.run());
    Ok(call)
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Task {
    /// The task's future, in its call's span. The task is boxed: an `async fn` keeps its
    /// arguments twice (as passed, and moved into its body) for its whole life.
    fn run(self: Box<Self>) -> impl Future<Output = ()> {
        let span = info_span!("call", call_id = %self.call_id);
        self.run_in_span().instrument(span)
    }

    async fn run_in_span(mut self: Box<Self>) {
        loop {
            self.flush().await;
            if self.session.is_terminated() {
                break;
            }
            let no_answer = self
                .no_answer_at
                .filter(|_| self.session.state() == SessionState::Early);
            // One timer for both deadlines (a timer is a sizeable part of this future).
            let wake = match (self.session.poll_timeout(), no_answer) {
                (Some(d), Some(n)) => Some(d.min(n)),
                (d, n) => d.or(n),
            };
            tokio::select! {
                i = self.input.recv() => match i {
                    Some(i) => self.on_input(i),
                    None => break,
                },
                () = self.events.closed(), if !self.app_gone => {
                    self.app_gone = true;
                    let _ = self.on_op(Op::Hangup);
                }
                () = sleep_until_opt(wake) => {
                    let t = now();
                    if no_answer.is_some_and(|n| t >= n) {
                        // Ours: CANCEL; theirs, never decided by the application: 480.
                        self.no_answer_at = None;
                        info!("no answer in time: ending the call");
                        let _ = self.on_op(Op::Hangup);
                    } else {
                        self.session.handle_timeout(t);
                    }
                }
            }
        }
        {
            let mut calls = lock(&self.s.calls);
            if calls
                .get(&self.call_id)
                .is_some_and(|t| t.same_channel(&self.input_tx))
            {
                calls.remove(&self.call_id);
            }
        }
        // Requests that crossed the end (a BYE crossing ours, a late re-INVITE) still
        // get an answer, so their transactions end.
        self.input.close();
        while let Ok(i) = self.input.try_recv() {
            if let Input::Request(inc) = i {
                // Boxed, like the sends in `flush`.
                Box::pin(crate::answer(
                    &self.s,
                    inc.txn,
                    &inc.request,
                    481,
                    "Call/Transaction Does Not Exist",
                ))
                .await;
            }
        }
    }

    fn on_input(&mut self, i: Input) {
        let t = now();
        match i {
            Input::Cmd(c) => {
                let r = self.on_op(c.op);
                let _ = c.reply.send(r);
            }
            Input::Request(inc) => self.session.handle_request(t, inc.txn, &inc.request),
            Input::Ack(ack) => self.session.handle_ack(t, &ack),
            Input::Response(r) => {
                if !self.answer_challenge(&r) {
                    self.session.handle_response(t, &r);
                }
            }
        }
    }

    fn on_op(&mut self, op: Op) -> Result<(), Error> {
        let t = now();
        let s = &mut self.session;
        match op {
            Op::Provisional(status, body) => s.provisional(t, status, body)?,
            Op::Accept(body) => s.accept(t, body)?,
            Op::Reject(status, headers) => {
                if !headers.is_empty() {
                    self.reject_headers = Some((status, headers));
                }
                s.reject(t, status)?;
            }
            Op::Answer(body) => s.answer(t, body)?,
            Op::RejectOffer(status) => s.reject_offer(t, status)?,
            Op::Reinvite(offer) => s.reinvite(t, offer)?,
            Op::Update(offer) => s.update(t, offer)?,
            Op::Cancel => s.cancel(t)?,
            Op::Bye => s.bye(t)?,
            Op::Info(ct, body) => s.info(t, &ct, body)?,
            Op::Hangup => match (s.role(), s.state()) {
                (_, SessionState::Terminated) => {}
                (Role::Uac, SessionState::Early) => s.cancel(t)?,
                (Role::Uas, SessionState::Early) => s.reject(t, 480)?,
                _ => s.bye(t)?,
            },
        }
        Ok(())
    }

    /// Carries out the session's actions. The sends are boxed: awaited in place, they would
    /// be most of the task's future, which lives as long as the call.
    async fn flush(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Respond(txn, mut r) => {
                    if let Some((status, headers)) = &self.reject_headers
                        && *status == r.status()
                    {
                        for (k, v) in headers {
                            let _ = r.headers_mut().push(k, v);
                        }
                    }
                    Box::pin(self.respond(txn, r)).await;
                }
                Action::SendRequest(req) => self.send_request(req),
                Action::SendAck(ack) => {
                    let sent = Box::pin(self.s.handle.send_ack(ack, self.peer.clone())).await;
                    if let Err(e) = sent {
                        debug!(error = %e, "ACK not sent");
                    }
                }
                Action::Event(ev) => {
                    if let SessionEvent::Terminated { reason, status } = &ev {
                        info!(?reason, ?status, "call ended");
                    }
                    let _ = self.events.send(Box::new(ev));
                }
            }
        }
    }

    async fn respond(&self, txn: TxnId, r: Response) {
        if let Err(e) = self.s.handle.respond(txn, r).await {
            debug!(error = %e, "response not sent");
        }
    }

    /// Starts a client transaction whose responses come back as input, in order.
    fn send_request(&mut self, req: Request) {
        // The challenge is answered from the latest initial INVITE (after a 422 retry, say),
        // so its CSeq is never reused.
        if let Some(a) = &mut self.auth
            && req.method() == &Method::Invite
            && self.session.state() == SessionState::Early
        {
            a.invite = Some(req.clone());
        }
        let h = self.s.handle.clone();
        let tx = self.input_tx.clone();
        let target = self.peer.clone();
        tokio::spawn(async move {
            // Boxed: awaited once, it would otherwise stay in this task for the
            // transaction's whole life.
            match Box::pin(h.request(req, target)).await {
                Ok(mut txn) => {
                    while let Some(r) = txn.next().await {
                        if tx.send(Input::Response(Box::new(r))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => debug!(error = %e, "request not sent"),
            }
        });
    }

    /// A 401/407 to our first INVITE: send it again with credentials (RFC 3261 §22.2), once,
    /// as a fresh session on the same Call-ID and From tag with the next CSeq.
    fn answer_challenge(&mut self, r: &Response) -> bool {
        let status = r.status();
        if !matches!(status, 401 | 407)
            || self.session.role() != Role::Uac
            || self.session.state() != SessionState::Early
            || !matches!(r.headers().cseq(), Ok((_, Method::Invite)))
        {
            return false;
        }
        let Some(a) = &mut self.auth else {
            return false;
        };
        if a.tried {
            return false;
        }
        a.tried = true;
        let Some(first) = a.invite.clone() else {
            return false;
        };
        let (challenge_hdr, credentials_hdr) = if status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenges: Vec<Challenge> = r
            .headers()
            .get_all(challenge_hdr)
            .filter_map(|v| Challenge::parse(v).ok())
            .collect();
        let Some(ch) = digest::select_challenge(&challenges) else {
            info!(status, "no challenge we can answer");
            return false;
        };
        let build = || -> Result<Request, Error> {
            let mut req = first.clone();
            let (n, _) = req.headers().cseq()?;
            let cnonce = random_token();
            let creds = digest::respond(
                ch,
                &a.username,
                &a.password,
                "INVITE",
                req.uri(),
                &cnonce,
                1,
            )
            .map_err(|e| Error::Auth(e.to_string()))?;
            let h = req.headers_mut();
            h.remove("Via");
            h.push_front(
                "Via",
                &format!("{};branch=z9hG4bK{};rport", self.via, random_token()),
            )?;
            h.set("CSeq", &format!("{} INVITE", n.saturating_add(1)))?;
            h.remove("Authorization");
            h.remove("Proxy-Authorization");
            // The session adds these again.
            h.remove("Require");
            h.push(
                credentials_hdr,
                &creds
                    .to_header_value()
                    .map_err(|e| Error::Auth(e.to_string()))?,
            )?;
            Ok(req)
        };
        let req = match build() {
            Ok(r) => r,
            Err(e) => {
                info!(error = %e, "cannot answer the challenge");
                return false;
            }
        };
        let cfg = match self.s.session_config(self.peer.transport, self.peer.addr) {
            Ok(c) => c,
            Err(_) => return false,
        };
        match InviteSession::uac(now(), req, cfg) {
            Ok(s) => {
                debug!(status, "INVITE sent again with credentials");
                self.session = s;
                true
            }
            Err(e) => {
                info!(error = %e, "cannot send the INVITE again");
                false
            }
        }
    }
}
