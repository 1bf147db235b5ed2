//! The outcome of a call attempt in both vocabularies (ript-profile §5's table), with its
//! CDR/metrics bucket and whether another route target may be tried.
//!
//! One mapping function per direction: [`Verdict::from_sip`] reads a final SIP response to
//! our INVITE (RIPT-to-SIP calls), [`Verdict::from_ript`] a final RIPT state event from the
//! server (SIP-to-RIPT calls). [`Verdict::from_refusal`] covers a refused `POST {tg}/calls`.
//!
//! | SIP final | RIPT event | bucket |
//! |---|---|---|
//! | 2xx | `answered` | `answered` |
//! | 486, 600 | `declined` | `busy` |
//! | 603 | `declined` | `declined` |
//! | 408, 480, 487 | `noanswer` | `no_answer` |
//! | 401, 403, 407 | `failed` | `rejected` |
//! | 404, 484, 604 | `failed` | `no_route` |
//! | other 3xx–6xx | `failed` | `failed` |
//!
//! Retryable (fail over to the next target, only before an answer): 408 and every 5xx, which
//! covers the UA's synthetic 408 (timeout) and 503 (transport failure). Never a `declined`
//! (ARCHITECTURE §4: a 486 or 603 never fails over), never an `end`, never another 4xx or 6xx.

use ript_proto::events::EventKind;
use ript_proto::model::Reason;

/// CDR and metrics buckets: every call ends in exactly one.
pub mod bucket {
    /// Both legs were answered.
    pub const ANSWERED: &str = "answered";
    /// 486 Busy Here, 600 Busy Everywhere.
    pub const BUSY: &str = "busy";
    /// 603 Decline, or a RIPT `declined` with another cause.
    pub const DECLINED: &str = "declined";
    /// 408, 480, 487 from the far end, or a RIPT `noanswer`.
    pub const NO_ANSWER: &str = "no_answer";
    /// The caller (or an operator) gave up before the answer.
    pub const CANCELLED: &str = "cancelled";
    /// Any other failure: 5xx, most 4xx and 6xx, a lost leg.
    pub const FAILED: &str = "failed";
    /// No route target at all, or the far end knows no route (404, 484, 604).
    pub const NO_ROUTE: &str = "no_route";
    /// Refused by policy or authentication (401, 403, 407).
    pub const REJECTED: &str = "rejected";

    /// Every bucket, for registering metrics up front.
    pub const ALL: [&str; 8] = [
        ANSWERED, BUSY, DECLINED, NO_ANSWER, CANCELLED, FAILED, NO_ROUTE, REJECTED,
    ];
}

/// Defaults where a RIPT event carries no usable `reason.sip` (a code in 400..=699).
pub mod defaults {
    /// `declined` without a code: 603 Decline (the callee refused the call; 486 would claim
    /// it was busy, which the event does not say).
    pub const DECLINED: u16 = 603;
    /// `failed` without a code: 502 Bad Gateway (the network beyond the gateway failed
    /// without saying why). Being a 5xx, it fails over to the next target.
    pub const FAILED: u16 = 502;
    /// `noanswer` without a code: 480 Temporarily Unavailable.
    pub const NOANSWER: u16 = 480;
    /// `end` before the answer without a code: 487 Request Terminated.
    pub const END: u16 = 487;
}

/// The outcome of one attempt: what the SIP leg hears (or heard), what the RIPT leg hears
/// (or heard), the CDR bucket and whether the next route target may be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The final SIP status (200 when answered).
    pub sip_status: u16,
    /// The RIPT state event: `answered`, `declined`, `failed`, `noanswer` or `end`.
    pub ript_event: EventKind,
    /// The RIPT `reason` (`None` when answered).
    pub ript_reason: Option<Reason>,
    /// One of [`bucket`].
    pub bucket: &'static str,
    /// Another route target may be tried (never after an answer: the call enforces that).
    pub retryable: bool,
}

impl Verdict {
    /// A final SIP response to our INVITE, in RIPT terms (ript-profile §5). `status` outside
    /// 200..=699 is treated as 500.
    pub fn from_sip(status: u16) -> Verdict {
        let status = if (200..=699).contains(&status) {
            status
        } else {
            500
        };
        if (200..=299).contains(&status) {
            return Verdict::answered();
        }
        let ript_event = match status {
            486 | 600 | 603 => EventKind::Declined,
            408 | 480 | 487 => EventKind::Noanswer,
            _ => EventKind::Failed,
        };
        Verdict {
            sip_status: status,
            retryable: ript_event != EventKind::Declined && retryable_status(status),
            ript_event,
            ript_reason: Some(Reason::sip(status, reason_phrase(status))),
            bucket: bucket_for_status(status),
        }
    }

    /// A RIPT state event from the server, in SIP terms (ript-profile §5); `None` for
    /// events that are not an outcome (`proceeding`, `alerting`, `ping`, …). A `reason.sip`
    /// in 400..=699 is used toward SIP; otherwise the [`defaults`] apply. The reason itself
    /// is kept as received.
    pub fn from_ript(kind: &EventKind, reason: Option<&Reason>) -> Option<Verdict> {
        let code = reason
            .and_then(|r| r.sip)
            .filter(|c| (400..=699).contains(c));
        let (sip_status, bucket, retryable) = match kind {
            EventKind::Answered => return Some(Verdict::answered()),
            EventKind::Declined => {
                let s = code.unwrap_or(defaults::DECLINED);
                let b = if bucket_for_status(s) == bucket::BUSY {
                    bucket::BUSY
                } else {
                    bucket::DECLINED
                };
                (s, b, false)
            }
            EventKind::Failed => {
                let s = code.unwrap_or(defaults::FAILED);
                (s, bucket_for_status(s), retryable_status(s))
            }
            EventKind::Noanswer => {
                let s = code.unwrap_or(defaults::NOANSWER);
                (s, bucket::NO_ANSWER, retryable_status(s))
            }
            EventKind::End => (code.unwrap_or(defaults::END), bucket::CANCELLED, false),
            _ => return None,
        };
        Some(Verdict {
            sip_status,
            ript_event: kind.clone(),
            ript_reason: reason.cloned(),
            bucket,
            retryable,
        })
    }

    /// A refused `POST {tg}/calls` (ript-profile §2). 403 (outside the TG's policy) and 404
    /// (not reachable through this TG) pass through and are final; 429 and 503 become 503,
    /// other 5xx keep their code when SIP has it (500–504) else 502; any other 4xx (400, 401,
    /// 413, …) becomes 502: our request or credentials do not fit that provider, a fault of
    /// the route rather than an answer from the callee, so the next target is tried.
    /// `text` (e.g. the problem's title) goes into the reason.
    pub fn from_refusal(http_status: u16, text: Option<&str>) -> Verdict {
        let sip_status = match http_status {
            403 | 404 => http_status,
            429 | 503 => 503,
            500..=504 => http_status,
            _ => 502,
        };
        let bucket = match http_status {
            403 => bucket::REJECTED,
            404 => bucket::NO_ROUTE,
            _ => bucket::FAILED,
        };
        Verdict {
            sip_status,
            ript_event: EventKind::Failed,
            ript_reason: Some(Reason {
                sip: Some(sip_status),
                text: Some(text.unwrap_or(reason_phrase(sip_status)).to_owned()),
            }),
            bucket,
            retryable: retryable_status(sip_status),
        }
    }

    /// Both legs answered.
    pub fn answered() -> Verdict {
        Verdict {
            sip_status: 200,
            ript_event: EventKind::Answered,
            ript_reason: None,
            bucket: bucket::ANSWERED,
            retryable: false,
        }
    }

    /// The gateway has no route target for the call: 404 toward SIP, `failed` with
    /// reason 404 toward RIPT.
    pub fn no_route() -> Verdict {
        Verdict {
            sip_status: 404,
            ript_event: EventKind::Failed,
            ript_reason: Some(Reason::sip(404, "No Route")),
            bucket: bucket::NO_ROUTE,
            retryable: false,
        }
    }

    /// The caller (or an operator) ended the call before the answer: 487 / `end`.
    pub fn cancelled() -> Verdict {
        Verdict {
            sip_status: 487,
            ript_event: EventKind::End,
            ript_reason: Some(Reason::sip(487, reason_phrase(487))),
            bucket: bucket::CANCELLED,
            retryable: false,
        }
    }

    /// The outbound leg's connection is gone before the answer: like the UA's synthetic 503
    /// for a transport failure (RFC 3261 §8.1.3.1), so the next target is tried.
    pub fn leg_lost() -> Verdict {
        Verdict {
            ript_reason: Some(Reason::sip(503, "connection lost")),
            ..Verdict::from_sip(503)
        }
    }
}

/// 408 and every 5xx may be tried on another target.
fn retryable_status(status: u16) -> bool {
    status == 408 || (500..=599).contains(&status)
}

/// The bucket of a final non-2xx SIP status (the table in the module docs).
pub fn bucket_for_status(status: u16) -> &'static str {
    match status {
        200..=299 => bucket::ANSWERED,
        486 | 600 => bucket::BUSY,
        603 => bucket::DECLINED,
        408 | 480 | 487 => bucket::NO_ANSWER,
        401 | 403 | 407 => bucket::REJECTED,
        404 | 484 | 604 => bucket::NO_ROUTE,
        _ => bucket::FAILED,
    }
}

/// The RFC 3261 §21 (and later RFCs') reason phrase of a status; unknown codes get their
/// class's name. Toward SIP the gateway always writes its own phrase, never a peer's text.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => class_phrase(status),
    }
}

/// RFC 3261 §7.2: the name of a status class.
fn class_phrase(status: u16) -> &'static str {
    match status / 100 {
        1 => "Progress",
        2 => "Success",
        3 => "Redirection",
        4 => "Request Failure",
        5 => "Server Failure",
        6 => "Global Failure",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ript5_sip_finals_map_to_the_profile_events() {
        let rows: &[(u16, EventKind, &str, bool)] = &[
            (200, EventKind::Answered, bucket::ANSWERED, false),
            (486, EventKind::Declined, bucket::BUSY, false),
            (600, EventKind::Declined, bucket::BUSY, false),
            (603, EventKind::Declined, bucket::DECLINED, false),
            (408, EventKind::Noanswer, bucket::NO_ANSWER, true),
            (480, EventKind::Noanswer, bucket::NO_ANSWER, false),
            (487, EventKind::Noanswer, bucket::NO_ANSWER, false),
            (403, EventKind::Failed, bucket::REJECTED, false),
            (404, EventKind::Failed, bucket::NO_ROUTE, false),
            (488, EventKind::Failed, bucket::FAILED, false),
            (500, EventKind::Failed, bucket::FAILED, true),
            (503, EventKind::Failed, bucket::FAILED, true),
            (604, EventKind::Failed, bucket::NO_ROUTE, false),
            (606, EventKind::Failed, bucket::FAILED, false),
            (302, EventKind::Failed, bucket::FAILED, false),
        ];
        for (status, kind, b, retry) in rows {
            let v = Verdict::from_sip(*status);
            assert_eq!(&v.ript_event, kind, "{status}");
            assert_eq!(v.bucket, *b, "{status}");
            assert_eq!(v.retryable, *retry, "{status}");
            assert_eq!(v.sip_status, *status);
            if *status >= 300 {
                assert_eq!(v.ript_reason.as_ref().and_then(|r| r.sip), Some(*status));
            } else {
                assert_eq!(v.ript_reason, None);
            }
        }
    }

    #[test]
    fn ript5_ript_finals_map_to_sip_with_defaults() {
        let v = |k: EventKind, sip: Option<u16>| {
            let r = sip.map(|s| Reason::sip(s, "x"));
            Verdict::from_ript(&k, r.as_ref()).unwrap()
        };
        assert_eq!(v(EventKind::Declined, None).sip_status, 603);
        assert_eq!(v(EventKind::Declined, None).bucket, bucket::DECLINED);
        assert_eq!(v(EventKind::Declined, Some(486)).sip_status, 486);
        assert_eq!(v(EventKind::Declined, Some(486)).bucket, bucket::BUSY);
        assert_eq!(v(EventKind::Declined, Some(600)).bucket, bucket::BUSY);
        assert!(!v(EventKind::Declined, Some(503)).retryable);
        assert_eq!(v(EventKind::Failed, None).sip_status, 502);
        assert!(v(EventKind::Failed, None).retryable);
        assert_eq!(v(EventKind::Failed, Some(404)).bucket, bucket::NO_ROUTE);
        assert!(!v(EventKind::Failed, Some(404)).retryable);
        assert!(v(EventKind::Failed, Some(503)).retryable);
        assert_eq!(v(EventKind::Noanswer, None).sip_status, 480);
        assert!(v(EventKind::Noanswer, Some(408)).retryable);
        assert_eq!(v(EventKind::End, None).sip_status, 487);
        assert_eq!(v(EventKind::End, None).bucket, bucket::CANCELLED);
        assert!(!v(EventKind::End, Some(503)).retryable);
        // A code outside 400..=699 is ignored (a 302 without Contact would be invalid SIP).
        assert_eq!(v(EventKind::Failed, Some(302)).sip_status, 502);
        assert_eq!(v(EventKind::Answered, None), Verdict::answered());
        assert!(Verdict::from_ript(&EventKind::Alerting, None).is_none());
        assert!(Verdict::from_ript(&EventKind::Ping, None).is_none());
    }

    #[test]
    fn ript2_call_creation_refusals() {
        let r = Verdict::from_refusal(403, Some("Outside policy"));
        assert_eq!(
            (r.sip_status, r.bucket, r.retryable),
            (403, bucket::REJECTED, false)
        );
        assert_eq!(
            r.ript_reason.unwrap().text.as_deref(),
            Some("Outside policy")
        );
        let r = Verdict::from_refusal(404, None);
        assert_eq!(
            (r.sip_status, r.bucket, r.retryable),
            (404, bucket::NO_ROUTE, false)
        );
        let r = Verdict::from_refusal(503, None);
        assert_eq!((r.sip_status, r.retryable), (503, true));
        assert_eq!(Verdict::from_refusal(429, None).sip_status, 503);
        assert_eq!(Verdict::from_refusal(500, None).sip_status, 500);
        assert_eq!(Verdict::from_refusal(507, None).sip_status, 502);
        assert_eq!(Verdict::from_refusal(401, None).sip_status, 502);
        assert!(Verdict::from_refusal(400, None).retryable);
    }

    #[test]
    fn out_of_range_sip_status_is_a_server_error() {
        assert_eq!(Verdict::from_sip(99).sip_status, 500);
        assert_eq!(Verdict::from_sip(700).sip_status, 500);
        assert_eq!(Verdict::from_sip(180).sip_status, 500);
    }

    #[test]
    fn phrases() {
        assert_eq!(reason_phrase(486), "Busy Here");
        assert_eq!(reason_phrase(499), "Request Failure");
        assert_eq!(reason_phrase(42), "Unknown");
        assert_eq!(bucket::ALL.len(), 8);
    }
}
