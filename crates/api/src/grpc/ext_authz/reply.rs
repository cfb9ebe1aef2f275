//! Check's answer. An allowed request's `CheckResponse` is written straight
//! from the cached token (its id, owner and scopes as upstream headers),
//! with prost's encoding functions and no message built; every other answer
//! is an envoy-types `CheckResponse`. On the wire both are exactly
//! `envoy.service.auth.v3.CheckResponse`.

use std::borrow::Cow;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HeaderValueOption};
use prost::DecodeError;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

use super::headers::{OWNER_HEADER, SCOPES_HEADER, TOKEN_ID_HEADER, header_safe};
use crate::verifier::Snapshot;

/// `CheckResponse.status` (1), `.ok_response` (3).
const STATUS: u32 = 1;
const OK_RESPONSE: u32 = 3;
/// `OkHttpResponse.headers` (2), `.headers_to_remove` (5),
/// `.response_headers_to_add` (6).
const HEADERS: u32 = 2;
const HEADERS_TO_REMOVE: u32 = 5;
const RESPONSE_HEADERS_TO_ADD: u32 = 6;
/// `HeaderValueOption.header` (1), `.append_action` (3);
/// `HeaderValue.key` (1), `.value` (2).
const HEADER: u32 = 1;
const APPEND_ACTION: u32 = 3;
const KEY: u32 = 1;
const VALUE: u32 = 2;

/// What Check answers Envoy.
#[derive(Debug)]
pub enum CheckReply {
    /// Let the request through, with the token's headers for the upstream.
    Allowed(Allowed),
    /// Anything else: a denial (or an allowed answer built as a message).
    Message(Box<CheckResponse>),
}

impl Default for CheckReply {
    fn default() -> Self {
        CheckReply::Message(Box::default())
    }
}

/// An allowed request's answer: the token's id, owner and scopes as
/// headers for the upstream, `authorization` removed if so configured, and
/// headers for the client (rate limits), rarely any.
#[derive(Debug)]
pub struct Allowed {
    token: Arc<Snapshot>,
    remove_authorization: bool,
    response_headers: Vec<HeaderValueOption>,
    /// `ok_response`'s length, worked out once: encoding asks for the
    /// whole length first, then writes this one as a prefix.
    ok_len: usize,
}

/// The token's id as text, on the stack.
fn id_text<'a>(token: &Snapshot, out: &'a mut [u8; 36]) -> &'a str {
    token.id.hyphenated().encode_lower(out)
}

impl Allowed {
    pub fn new(
        token: Arc<Snapshot>,
        remove_authorization: bool,
        response_headers: Vec<HeaderValueOption>,
    ) -> Self {
        let mut allowed = Allowed {
            token,
            remove_authorization,
            response_headers,
            ok_len: 0,
        };
        let mut id = [0u8; 36];
        allowed.ok_len =
            allowed.ok_response_len(&allowed.headers(id_text(&allowed.token, &mut id)));
        allowed
    }

    /// The upstream headers, each checked for control characters.
    fn headers<'a>(&'a self, id: &'a str) -> [(&'static str, Cow<'a, str>); 3] {
        [
            (TOKEN_ID_HEADER, Cow::Borrowed(id)),
            (OWNER_HEADER, header_safe(self.token.owner())),
            (SCOPES_HEADER, header_safe(self.token.scopes())),
        ]
    }

    fn ok_response_len(&self, headers: &[(&str, Cow<'_, str>)]) -> usize {
        headers
            .iter()
            .map(|(k, v)| nested_len(HEADERS, option_len(k, v)))
            .sum::<usize>()
            + if self.remove_authorization {
                str_len(HEADERS_TO_REMOVE, "authorization")
            } else {
                0
            }
            + encoding::message::encoded_len_repeated(
                RESPONSE_HEADERS_TO_ADD,
                &self.response_headers,
            )
    }
}

/// A length-delimited field of `len` bytes under `tag`, in bytes.
fn nested_len(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

fn str_len(tag: u32, value: &str) -> usize {
    nested_len(tag, value.len())
}

/// A `HeaderValue{key, value}` in bytes.
fn header_value_len(key: &str, value: &str) -> usize {
    str_len(KEY, key) + str_len(VALUE, value)
}

/// A `HeaderValueOption{header, append_action: OVERWRITE_IF_EXISTS_OR_ADD}`
/// in bytes.
fn option_len(key: &str, value: &str) -> usize {
    nested_len(HEADER, header_value_len(key, value))
        + encoding::int32::encoded_len(APPEND_ACTION, &overwrite())
}

fn overwrite() -> i32 {
    HeaderAppendAction::OverwriteIfExistsOrAdd.into()
}

fn encode_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

fn encode_option(key: &str, value: &str, buf: &mut impl BufMut) {
    encoding::encode_key(HEADERS, WireType::LengthDelimited, buf);
    encoding::encode_varint(option_len(key, value) as u64, buf);
    encoding::encode_key(HEADER, WireType::LengthDelimited, buf);
    encoding::encode_varint(header_value_len(key, value) as u64, buf);
    encode_str(KEY, key, buf);
    encode_str(VALUE, value, buf);
    encoding::int32::encode(APPEND_ACTION, &overwrite(), buf);
}

impl prost::Message for CheckReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let allowed = match self {
            CheckReply::Message(message) => return message.encode_raw(buf),
            CheckReply::Allowed(allowed) => allowed,
        };
        let mut id = [0u8; 36];
        let headers = allowed.headers(id_text(&allowed.token, &mut id));
        // status: google.rpc.Status with code OK, an empty message.
        encoding::encode_key(STATUS, WireType::LengthDelimited, buf);
        encoding::encode_varint(0, buf);
        encoding::encode_key(OK_RESPONSE, WireType::LengthDelimited, buf);
        encoding::encode_varint(allowed.ok_len as u64, buf);
        for (key, value) in &headers {
            encode_option(key, value, buf);
        }
        if allowed.remove_authorization {
            encode_str(HEADERS_TO_REMOVE, "authorization", buf);
        }
        encoding::message::encode_repeated(RESPONSE_HEADERS_TO_ADD, &allowed.response_headers, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Encode-only: the server never decodes an answer.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let allowed = match self {
            CheckReply::Message(message) => return message.encoded_len(),
            CheckReply::Allowed(allowed) => allowed,
        };
        nested_len(STATUS, 0) + nested_len(OK_RESPONSE, allowed.ok_len)
    }

    fn clear(&mut self) {
        *self = CheckReply::default();
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::{HeaderValue, HttpResponse, OkHttpResponse};
    use envoy_types::pb::google::rpc;
    use prost::Message as _;

    use super::*;
    use crate::clock::Timestamp;
    use crate::token::TokenRecord;

    /// The answer as a message, the way it was built before it was written
    /// by hand.
    fn as_message(id: String, owner: &str, scopes: &str, remove: bool) -> CheckResponse {
        let headers = [
            (TOKEN_ID_HEADER, id),
            (OWNER_HEADER, header_safe(owner).into_owned()),
            (SCOPES_HEADER, scopes.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.to_owned(),
                value: v,
                raw_value: Vec::new(),
            }),
            append_action: overwrite(),
            ..Default::default()
        })
        .collect();
        CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: if remove {
                    vec!["authorization".to_owned()]
                } else {
                    Vec::new()
                },
                response_headers_to_add: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "retry-after".into(),
                        value: "3".into(),
                        raw_value: Vec::new(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn an_allowed_answer_is_the_check_response_it_stands_for() {
        for (owner, remove) in [("alice", false), ("eve\r\nx-admin: 1", true)] {
            let record = TokenRecord {
                scopes: vec!["read".into(), "deploy:*".into()],
                ..TokenRecord::new(
                    uuid::Uuid::now_v7(),
                    owner.into(),
                    Timestamp::from_micros(1),
                )
            };
            let token = Arc::new(Snapshot::new(&record, false, |_, _| {}));
            let expected = as_message(record.id.to_string(), owner, "read deploy:*", remove);
            let reply = CheckReply::Allowed(Allowed::new(
                token,
                remove,
                match &expected.http_response {
                    Some(HttpResponse::OkResponse(ok)) => ok.response_headers_to_add.clone(),
                    _ => unreachable!(),
                },
            ));
            let bytes = reply.encode_to_vec();
            assert_eq!(bytes.len(), reply.encoded_len());
            assert_eq!(CheckResponse::decode(bytes.as_slice()).unwrap(), expected);
            assert_eq!(bytes, expected.encode_to_vec());
        }
    }
}
