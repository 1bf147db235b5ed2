//! A hook for counting messages (the gateway feeds its metrics from it). The transport
//! reports what crossed the wire; bounding label values is the observer's business.

use sip_proto::msg::{Message, Request, Response};

/// Which way a message crossed the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// What an [`Observer`] is told about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageInfo<'a> {
    /// `method` as written on the wire (any case, any token).
    Request { method: &'a str },
    /// `method` is the CSeq method, empty when the CSeq cannot be read.
    Response { status: u16, method: &'a str },
}

/// Told about every well-formed message received (after the rate limit) and every message
/// sent, retransmissions included. Runs on the driver task: it must be quick and not block.
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn message(&self, direction: Direction, info: MessageInfo<'_>);
}

pub(crate) fn request(obs: &dyn Observer, direction: Direction, req: &Request) {
    obs.message(
        direction,
        MessageInfo::Request {
            method: req.method().as_str(),
        },
    );
}

pub(crate) fn response(obs: &dyn Observer, direction: Direction, resp: &Response) {
    let method = resp
        .headers()
        .cseq()
        .map(|(_, m)| m.as_str().to_owned())
        .unwrap_or_default();
    obs.message(
        direction,
        MessageInfo::Response {
            status: resp.status(),
            method: &method,
        },
    );
}

pub(crate) fn message(obs: &dyn Observer, direction: Direction, msg: &Message) {
    match msg {
        Message::Request(r) => request(obs, direction, r),
        Message::Response(r) => response(obs, direction, r),
    }
}
