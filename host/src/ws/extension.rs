//! Negotiating permessage-deflate (RFC 7692 §5, §7.1) from a client's
//! `Sec-WebSocket-Extensions` offers.
//!
//! The host compresses each server message on its own (`server_no_context_takeover`) with
//! one window for every connection, since one compressed frame is shared by all of them;
//! and asks the client to compress each of its messages on its own too
//! (`client_no_context_takeover`), so inflating them needs no state per connection. An offer
//! whose parameters cannot be met this way is declined, and the next one is tried.

use axum::http::HeaderMap;
use axum::http::header::SEC_WEBSOCKET_EXTENSIONS;

use crate::protocol::compress::WINDOW_BITS;

const NAME: &str = "permessage-deflate";
/// The answer to every accepted offer, and to one that named `server_max_window_bits`.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const ANSWER_WITH_WINDOW: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// The `Sec-WebSocket-Extensions` answer accepting the first offer of permessage-deflate
/// the host can meet, if any.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(accept)
}

/// The answer to one offer (`name; param; param=value`), if it is permessage-deflate and
/// acceptable.
fn accept(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().trim_matches('"'))),
            None => (param.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_window = Some(window_bits(v)?),
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => drop(window_bits(v)?),
            _ => return None,
        }
        seen.push(name);
    }
    match server_window {
        None => Some(ANSWER),
        Some(bits) => (bits >= WINDOW_BITS).then_some(ANSWER_WITH_WINDOW),
    }
}

/// A window size parameter: 8 to 15, written without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0')).then_some(bits)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn offered(values: &[&str]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(v).unwrap());
        }
        negotiate(&headers)
    }

    const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn the_window_answered_is_the_one_compressed_with() {
        assert!(ANSWER_WITH_WINDOW.ends_with(&format!("server_max_window_bits={WINDOW_BITS}")));
    }

    #[test]
    fn what_browsers_and_common_clients_offer_is_accepted() {
        assert_eq!(offered(&["permessage-deflate; client_max_window_bits"]), Some(ACCEPTED));
        assert_eq!(offered(&["permessage-deflate"]), Some(ACCEPTED));
        assert_eq!(offered(&["Permessage-Deflate; Client_Max_Window_Bits=\"12\""]), Some(ACCEPTED));
        let with_window = format!("{ACCEPTED}; server_max_window_bits=15");
        assert_eq!(offered(&["permessage-deflate; server_max_window_bits=15"]), Some(with_window.as_str()));
    }

    #[test]
    fn offers_the_host_cannot_meet_are_declined_and_the_next_is_tried() {
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["x-webkit-deflate-frame"]), None);
        assert_eq!(offered(&["permessage-deflate; server_max_window_bits=10"]), None, "a smaller window than ours");
        assert_eq!(offered(&["permessage-deflate; unknown_param"]), None);
        assert_eq!(offered(&["permessage-deflate; client_max_window_bits=7"]), None, "out of range");
        assert_eq!(offered(&["permessage-deflate; client_max_window_bits=015"]), None, "leading zero");
        assert_eq!(offered(&["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]), None);
        assert_eq!(offered(&["permessage-deflate; server_max_window_bits"]), None, "needs a value");
        let next = offered(&["permessage-deflate; server_max_window_bits=9, permessage-deflate", "other"]);
        assert_eq!(next, Some(ACCEPTED), "the second offer of the header");
        assert_eq!(offered(&["foo", "permessage-deflate"]), Some(ACCEPTED), "the second header");
    }
}
