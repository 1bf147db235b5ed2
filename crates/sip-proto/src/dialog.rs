//! Dialogs (RFC 3261 §12): creation on both sides, in-dialog request matching and ordering,
//! remote target refresh, route sets, new in-dialog requests, and re-INVITE glare (§14.1).
//! Dialog state is only Early/Confirmed/Terminated; everything in a dialog is an event.

use crate::msg::{Contacts, Method, MsgError, NameAddr, Request, Response};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// RFC 3261 §12: Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error("message: {0}")]
    Msg(#[from] MsgError),
    #[error("no dialog matches (481)")]
    NoDialog,
    #[error("CSeq {got} is not above {last} (500)")]
    OutOfOrder { got: u32, last: u32 },
    #[error("a re-INVITE is already in progress (491)")]
    Glare,
    #[error("the dialog has ended (481)")]
    Terminated,
    #[error("{0} is required to create a dialog")]
    Missing(&'static str),
}

impl DialogError {
    /// The status a UAS answers with.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::Msg(e) => e.status(),
            DialogError::NoDialog | DialogError::Terminated => 481,
            DialogError::OutOfOrder { .. } => 500,
            DialogError::Glare => 491,
            DialogError::Missing(_) => 400,
        }
    }
}

/// What an accepted in-dialog request means for the dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InDialog {
    /// BYE: the dialog is over (answer 200).
    Ended,
    /// re-INVITE or UPDATE: a new offer may follow; the remote target was refreshed.
    Refresh,
    /// Anything else (INFO, ACK, PRACK, NOTIFY ...).
    Other,
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    local_seq: u32,
    remote_seq: Option<u32>,
    /// Our URI (From of our requests) and the peer's (their To).
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    route_set: Vec<String>,
    /// A re-INVITE we sent or received is in progress (RFC 3261 §14.1 / §14.2).
    invite_in_progress: bool,
}

fn contact_uri(c: Result<Contacts, MsgError>) -> Result<String, DialogError> {
    match c? {
        Contacts::Addrs(v) => v
            .into_iter()
            .next()
            .map(|a| a.uri)
            .ok_or(DialogError::Missing("Contact")),
        Contacts::Wildcard => Err(DialogError::Missing("Contact")),
    }
}

fn uris(v: Vec<NameAddr>) -> Vec<String> {
    v.into_iter().map(|a| format!("<{}>", a.uri)).collect()
}

impl Dialog {
    /// UAS side (§12.1.1): from the request that creates the dialog and our local tag (the
    /// To tag of our 1xx/2xx). Route set = Record-Route in order.
    pub fn uas(req: &Request, local_tag: &str, confirmed: bool) -> Result<Dialog, DialogError> {
        let h = req.headers();
        let from = h.from()?;
        let (seq, _) = h.cseq()?;
        Ok(Dialog {
            id: DialogId {
                call_id: h.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: from.tag.clone().ok_or(DialogError::Missing("From tag"))?,
            },
            state: if confirmed {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: 0,
            remote_seq: Some(seq),
            local_uri: h.to()?.uri,
            remote_uri: from.uri,
            remote_target: contact_uri(h.contacts())?,
            route_set: uris(h.record_routes()?),
            invite_in_progress: false,
        })
    }

    /// UAC side (§12.1.2): from our request and a 1xx (early) or 2xx (confirmed) response
    /// with a To tag. Route set = Record-Route reversed.
    pub fn uac(req: &Request, resp: &Response) -> Result<Dialog, DialogError> {
        let h = req.headers();
        let rh = resp.headers();
        let to = rh.to()?;
        let (seq, _) = h.cseq()?;
        let mut routes = uris(rh.record_routes()?);
        routes.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: h.call_id()?.to_owned(),
                local_tag: h.from()?.tag.ok_or(DialogError::Missing("From tag"))?,
                remote_tag: to.tag.clone().ok_or(DialogError::Missing("To tag"))?,
            },
            state: if (200..300).contains(&resp.status()) {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: seq,
            remote_seq: None,
            local_uri: h.from()?.uri,
            remote_uri: to.uri,
            remote_target: contact_uri(rh.contacts())?,
            route_set: routes,
            invite_in_progress: false,
        })
    }

    pub fn confirm(&mut self) {
        if self.state == DialogState::Early {
            self.state = DialogState::Confirmed;
        }
    }

    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// An in-dialog request from the peer (§12.2.2). ACK and CANCEL carry the CSeq of their
    /// INVITE and are not ordered.
    pub fn handle_request(&mut self, req: &Request) -> Result<InDialog, DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        let (seq, _) = req.headers().cseq()?;
        let method = req.method().clone();
        let ordered = !matches!(method, Method::Ack | Method::Cancel);
        if ordered {
            if let Some(last) = self.remote_seq
                && seq <= last
            {
                return Err(DialogError::OutOfOrder { got: seq, last });
            }
            self.remote_seq = Some(seq);
        }
        match method {
            Method::Bye => {
                self.state = DialogState::Terminated;
                Ok(InDialog::Ended)
            }
            Method::Invite | Method::Update => {
                if method == Method::Invite {
                    // §14.2: a re-INVITE while one of ours is pending gets 491.
                    if self.invite_in_progress {
                        return Err(DialogError::Glare);
                    }
                    self.invite_in_progress = true;
                }
                // §12.2.2: target refresh requests replace the remote target.
                if let Ok(t) = contact_uri(req.headers().contacts()) {
                    self.remote_target = t;
                }
                Ok(InDialog::Refresh)
            }
            _ => Ok(InDialog::Other),
        }
    }

    /// The re-INVITE transaction (ours or theirs) finished.
    pub fn invite_done(&mut self) {
        self.invite_in_progress = false;
    }

    /// A new in-dialog request (§12.2.1.1) with our next CSeq; `branch` is random (injected).
    /// A re-INVITE while another is in progress is refused with `Glare`.
    pub fn new_request(
        &mut self,
        method: Method,
        via: &str,
        branch: &str,
    ) -> Result<Request, DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        if method == Method::Invite {
            if self.invite_in_progress {
                return Err(DialogError::Glare);
            }
            self.invite_in_progress = true;
        }
        self.local_seq = self.local_seq.saturating_add(1);
        self.build(method, self.local_seq, via, branch)
    }

    /// The ACK of a 2xx to the INVITE numbered `invite_seq` (§13.2.2.4): that CSeq number,
    /// its own `branch`, the route set. It uses no CSeq number of its own.
    pub fn ack(&self, invite_seq: u32, via: &str, branch: &str) -> Result<Request, DialogError> {
        self.build(Method::Ack, invite_seq, via, branch)
    }

    /// UAC: the 2xx that confirms an early dialog recomputes its route set and remote target
    /// (§13.2.2.4); the CSeq space (PRACK, UPDATE already sent) is kept.
    pub fn confirm_with(&mut self, resp: &Response) -> Result<(), DialogError> {
        let mut routes = uris(resp.headers().record_routes()?);
        routes.reverse();
        self.remote_target = contact_uri(resp.headers().contacts())?;
        self.route_set = routes;
        self.confirm();
        Ok(())
    }

    /// A 2xx to our target refresh request (re-INVITE, UPDATE) replaces the remote target
    /// (§12.2.1.2); a response without a usable Contact leaves it.
    pub fn refresh_target(&mut self, resp: &Response) {
        if let Ok(t) = contact_uri(resp.headers().contacts()) {
            self.remote_target = t;
        }
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        via: &str,
        branch: &str,
    ) -> Result<Request, DialogError> {
        let mut r = Request::new(method.clone(), &self.remote_target)?
            .with_header("Via", &format!("{via};branch={branch}"))?
            .with_header("Max-Forwards", "70")?
            .with_header(
                "From",
                &format!("<{}>;tag={}", self.local_uri, self.id.local_tag),
            )?
            .with_header(
                "To",
                &format!("<{}>;tag={}", self.remote_uri, self.id.remote_tag),
            )?
            .with_header("Call-ID", &self.id.call_id)?
            .with_header("CSeq", &format!("{seq} {}", method.as_str()))?;
        for route in &self.route_set {
            r = r.with_header("Route", route)?;
        }
        Ok(r)
    }
}

/// A dialog-creating response of a UAS (RFC 3261 §12.1.1): the §8.2.6 copy plus every
/// Record-Route in order and our Contact.
pub fn creating_response(
    req: &Request,
    status: u16,
    reason: &str,
    local_tag: &str,
    contact: &str,
) -> Result<Response, DialogError> {
    let mut r = Response::for_request(req, status, reason, local_tag)?;
    for rr in req.headers().get_all("Record-Route") {
        r.headers_mut().push("Record-Route", rr)?;
    }
    r.headers_mut().push("Contact", contact)?;
    Ok(r)
}

/// The dialogs of one user agent, found by (Call-ID, local tag, remote tag).
#[derive(Debug, Default)]
pub struct Dialogs {
    map: HashMap<DialogId, Dialog>,
}

impl Dialogs {
    pub fn insert(&mut self, d: Dialog) {
        self.map.insert(d.id.clone(), d);
    }

    /// The dialog an incoming request belongs to: its To tag is ours, its From tag theirs.
    pub fn for_request(&mut self, req: &Request) -> Result<&mut Dialog, DialogError> {
        let h = req.headers();
        let id = DialogId {
            call_id: h.call_id()?.to_owned(),
            local_tag: h.to()?.tag.ok_or(DialogError::NoDialog)?,
            remote_tag: h.from()?.tag.ok_or(DialogError::NoDialog)?,
        };
        self.map.get_mut(&id).ok_or(DialogError::NoDialog)
    }

    /// Drops terminated dialogs.
    pub fn prune(&mut self) {
        self.map.retain(|_, d| d.state != DialogState::Terminated);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Message, parse};

    fn req(text: &str) -> Request {
        match parse(text.as_bytes()).unwrap().0 {
            Message::Request(r) => r,
            m => panic!("{m:?}"),
        }
    }

    fn invite() -> Request {
        req("INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
            Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
            Max-Forwards: 70\r\n\
            Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
            To: Bob <sip:bob@example.com>\r\n\
            From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
            Call-ID: a84b4c76e66710\r\n\
            CSeq: 314159 INVITE\r\n\
            Contact: <sip:alice@pc33.example.com>\r\n\
            Content-Length: 0\r\n\r\n")
    }

    fn in_dialog(method: &str, cseq: u32, contact: &str) -> Request {
        req(&format!(
            "{method} sip:bob@192.0.2.4 SIP/2.0\r\n\
            Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-{cseq}\r\n\
            Max-Forwards: 70\r\n\
            To: Bob <sip:bob@example.com>;tag=b0b\r\n\
            From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
            Call-ID: a84b4c76e66710\r\n\
            CSeq: {cseq} {method}\r\n\
            {contact}Content-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn rfc3261_12_1_1_uas_dialog_keeps_record_route_order_and_matches_requests() {
        let d = Dialog::uas(&invite(), "b0b", true).unwrap();
        assert_eq!(
            d.route_set(),
            &["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:alice@pc33.example.com");
        let mut all = Dialogs::default();
        all.insert(d);
        let bye = in_dialog("BYE", 314160, "");
        assert_eq!(
            all.for_request(&bye).unwrap().handle_request(&bye),
            Ok(InDialog::Ended)
        );
        all.prune();
        assert!(all.is_empty());
        // rfc3261_12_2_2: a request for no dialog is 481.
        let e = all.for_request(&in_dialog("BYE", 1, "")).unwrap_err();
        assert_eq!(e.status(), 481);
    }

    #[test]
    fn rfc3261_12_2_2_lower_cseq_is_500_and_target_refresh_replaces_contact() {
        let mut d = Dialog::uas(&invite(), "b0b", true).unwrap();
        assert_eq!(
            d.handle_request(&in_dialog("INFO", 314159, ""))
                .unwrap_err()
                .status(),
            500
        );
        let re = in_dialog("INVITE", 314161, "Contact: <sip:alice@new.example.com>\r\n");
        assert_eq!(d.handle_request(&re), Ok(InDialog::Refresh));
        assert_eq!(d.remote_target(), "sip:alice@new.example.com");
        // ACK carries its INVITE's CSeq and is not ordered.
        assert_eq!(
            d.handle_request(&in_dialog("ACK", 314161, "")),
            Ok(InDialog::Other)
        );
    }

    #[test]
    fn rfc3261_14_reinvite_glare_is_491_both_ways() {
        let mut d = Dialog::uas(&invite(), "b0b", true).unwrap();
        let ours = d
            .new_request(Method::Invite, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-1")
            .unwrap();
        assert_eq!(ours.headers().cseq().unwrap(), (1, Method::Invite));
        let theirs = in_dialog("INVITE", 314161, "");
        assert_eq!(d.handle_request(&theirs), Err(DialogError::Glare));
        assert_eq!(DialogError::Glare.status(), 491);
        assert_eq!(
            d.new_request(Method::Invite, "v", "b").unwrap_err(),
            DialogError::Glare
        );
        d.invite_done();
        assert!(
            d.new_request(Method::Invite, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-2")
                .is_ok()
        );
    }

    #[test]
    fn rfc3261_12_2_1_1_new_requests_target_the_contact_with_the_route_set() {
        let mut d = Dialog::uas(&invite(), "b0b", true).unwrap();
        let bye = d
            .new_request(Method::Bye, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-9")
            .unwrap();
        assert_eq!(bye.uri(), "sip:alice@pc33.example.com");
        let h = bye.headers();
        assert_eq!(h.from().unwrap().tag.as_deref(), Some("b0b"));
        assert_eq!(h.to().unwrap().tag.as_deref(), Some("1928301774"));
        assert_eq!(h.routes().unwrap().len(), 2);
        assert_eq!(h.call_id().unwrap(), "a84b4c76e66710");
        let next = d
            .new_request(Method::Info, "SIP/2.0/UDP 127.0.0.1:5060", "z9hG4bK-10")
            .unwrap();
        assert_eq!(
            next.headers().cseq().unwrap().0,
            2,
            "our CSeq space counts up"
        );
    }

    #[test]
    fn rfc3261_12_1_2_uac_dialog_reverses_record_route_and_is_early_on_1xx() {
        let inv = invite();
        let ringing =
            creating_response(&inv, 180, "Ringing", "b0b", "<sip:bob@192.0.2.4>").unwrap();
        let d = Dialog::uac(&inv, &ringing).unwrap();
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(
            d.route_set(),
            &["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:bob@192.0.2.4");
        assert_eq!(d.id.remote_tag, "b0b");
        let no_tag = Response::for_request(&inv, 100, "Trying", "x").unwrap();
        assert!(Dialog::uac(&inv, &no_tag).is_err(), "a 100 has no To tag");
    }

    #[test]
    fn rfc3261_13_2_2_4_2xx_confirms_the_early_dialog_and_keeps_its_cseq_space() {
        let inv = invite();
        let ringing =
            creating_response(&inv, 180, "Ringing", "b0b", "<sip:bob@192.0.2.4>").unwrap();
        let mut d = Dialog::uac(&inv, &ringing).unwrap();
        let prack = d
            .new_request(Method::Prack, "SIP/2.0/UDP h", "z9hG4bK-p")
            .unwrap();
        assert_eq!(prack.headers().cseq().unwrap().0, 314160);
        let mut ok = Response::for_request(&inv, 200, "OK", "b0b").unwrap();
        ok.headers_mut()
            .push("Record-Route", "<sip:p9.example.com;lr>")
            .unwrap();
        ok.headers_mut()
            .push("Contact", "<sip:bob@198.51.100.9>")
            .unwrap();
        d.confirm_with(&ok).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.route_set(), &["<sip:p9.example.com;lr>"]);
        assert_eq!(d.remote_target(), "sip:bob@198.51.100.9");
        // The ACK reuses the INVITE's number; the next request continues after the PRACK.
        let ack = d.ack(314159, "SIP/2.0/UDP h", "z9hG4bK-a").unwrap();
        assert_eq!(ack.headers().cseq().unwrap(), (314159, Method::Ack));
        assert_eq!(ack.uri(), "sip:bob@198.51.100.9");
        let bye = d
            .new_request(Method::Bye, "SIP/2.0/UDP h", "z9hG4bK-b")
            .unwrap();
        assert_eq!(bye.headers().cseq().unwrap().0, 314161);
        let mut moved = ok.clone();
        moved
            .headers_mut()
            .set("Contact", "<sip:bob@203.0.113.1>")
            .unwrap();
        d.refresh_target(&moved);
        assert_eq!(d.remote_target(), "sip:bob@203.0.113.1");
    }
}
