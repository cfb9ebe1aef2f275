//! The parts of Envoy's `envoy.service.auth.v3.CheckRequest` that Check
//! reads, decoded by prost into messages that declare only them: the
//! `authorization`, `user-agent` and `x-forwarded-for` headers, the source
//! address and the `required_scopes` context extension. Every other field
//! (a real request carries dozens of headers, principals, the path, the
//! time) is skipped on the wire without being decoded or copied, and what
//! is kept points into the received buffer.
//!
//! Field numbers are `external_auth.proto` and `attribute_context.proto`'s.
//! Strings are read as bytes and taken only if they are UTF-8. For every
//! encoding the full message decodes, this one decodes too and finds the
//! same values (a map's last entry for a key wins, as protobuf says); the
//! `check` fuzz target holds it to that.

use prost::DecodeError;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

/// `CheckRequest`: `attributes` (1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckCall {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<Attributes>,
}

/// `AttributeContext`: `source` (1), `request` (4) and, of the
/// `context_extensions` map (10), `required_scopes`.
#[derive(Clone, Default, PartialEq)]
pub struct Attributes {
    pub source: Option<Peer>,
    pub request: Option<Request>,
    pub required_scopes: Option<Bytes>,
}

/// `AttributeContext.Peer`: `address` (1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `config.core.v3.Address`: `socket_address` (1) of the oneof `address`,
/// whose other members (`pipe`, 2; `envoy_internal_address`, 3) replace it.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct Address {
    pub socket_address: Option<SocketAddress>,
}

/// `config.core.v3.SocketAddress`: `address` (2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(bytes = "bytes", tag = "2")]
    pub address: Bytes,
}

/// `AttributeContext.Request`: `http` (2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<Http>,
}

/// `AttributeContext.HttpRequest`: of the `headers` map (3), the three
/// Check reads. Envoy writes header names in lower case.
#[derive(Clone, Default, PartialEq)]
pub struct Http {
    pub authorization: Option<Bytes>,
    pub user_agent: Option<Bytes>,
    pub forwarded_for: Option<Bytes>,
}

/// One entry of a `map<string, string>`: `key` (1), `value` (2).
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

impl CheckCall {
    fn attributes(&self) -> Option<&Attributes> {
        self.attributes.as_ref()
    }

    fn http(&self) -> Option<&Http> {
        self.attributes()?.request.as_ref()?.http.as_ref()
    }

    /// The `authorization` header.
    pub fn authorization(&self) -> Option<&str> {
        text(self.http()?.authorization.as_ref())
    }

    /// The `user-agent` header.
    pub fn user_agent(&self) -> Option<&str> {
        text(self.http()?.user_agent.as_ref())
    }

    /// The `x-forwarded-for` header.
    pub fn forwarded_for(&self) -> Option<&str> {
        text(self.http()?.forwarded_for.as_ref())
    }

    /// The source's socket address (the connection Envoy saw).
    pub fn source_address(&self) -> Option<&str> {
        let peer = self.attributes()?.source.as_ref()?;
        text(Some(
            &peer.address.as_ref()?.socket_address.as_ref()?.address,
        ))
    }

    /// The `required_scopes` context extension.
    pub fn required_scopes(&self) -> Option<&str> {
        text(self.attributes()?.required_scopes.as_ref())
    }
}

fn text(bytes: Option<&Bytes>) -> Option<&str> {
    std::str::from_utf8(bytes?).ok()
}

/// Decodes one map entry and, if its key is one of `keys`, keeps its value
/// in the matching slot of `kept`.
fn merge_entry(
    keys: &[&str],
    kept: &mut [&mut Option<Bytes>],
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let mut entry = Entry::default();
    encoding::message::merge(wire_type, &mut entry, buf, ctx)?;
    if let Some(i) = keys.iter().position(|k| k.as_bytes() == entry.key) {
        *kept[i] = Some(entry.value);
    }
    Ok(())
}

// Decode-only messages: the server never encodes a request, so these
// encode as empty (which decodes back to nothing kept).

impl prost::Message for Attributes {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.source.get_or_insert_with(Peer::default),
                buf,
                ctx,
            ),
            4 => encoding::message::merge(
                wire_type,
                self.request.get_or_insert_with(Request::default),
                buf,
                ctx,
            ),
            10 => merge_entry(
                &["required_scopes"],
                &mut [&mut self.required_scopes],
                wire_type,
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Attributes::default();
    }
}

impl prost::Message for Address {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.socket_address
                    .get_or_insert_with(SocketAddress::default),
                buf,
                ctx,
            ),
            2 | 3 => {
                // Another member of the oneof: the last one set is the one.
                self.socket_address = None;
                encoding::skip_field(wire_type, tag, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Address::default();
    }
}

impl prost::Message for Http {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            3 => merge_entry(
                &["authorization", "user-agent", "x-forwarded-for"],
                &mut [
                    &mut self.authorization,
                    &mut self.user_agent,
                    &mut self.forwarded_for,
                ],
                wire_type,
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Http::default();
    }
}

// Debug without the values: the authorization header is a secret.

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attributes")
            .field("source", &self.source)
            .field("request", &self.request)
            .field("required_scopes", &self.required_scopes)
            .finish()
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("user_agent", &self.user_agent)
            .field("forwarded_for", &self.forwarded_for)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use envoy_types::pb::envoy::config::core::v3::address::Address as FullAddress;
    use envoy_types::pb::envoy::config::core::v3::{
        Address as CoreAddress, SocketAddress as CoreSocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer as FullPeer, Request as FullRequest,
    };
    use prost::Message as _;

    use super::*;

    fn full(headers: &[(&str, &str)], scopes: Option<&str>) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(FullPeer {
                    address: Some(CoreAddress {
                        address: Some(FullAddress::SocketAddress(CoreSocketAddress {
                            address: "203.0.113.9".into(),
                            ..Default::default()
                        })),
                    }),
                    principal: "spiffe://cluster.local/ns/edge/sa/gateway".into(),
                    ..Default::default()
                }),
                request: Some(FullRequest {
                    http: Some(HttpRequest {
                        id: "f81d4fae".into(),
                        path: "/v1/things".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: scopes
                    .map(|s| [("required_scopes".to_owned(), s.to_owned())].into())
                    .unwrap_or_default(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_fields_check_reads_are_found_and_the_rest_skipped() {
        let request = full(
            &[
                ("authorization", "Bearer lk_x"),
                ("user-agent", "curl/8"),
                ("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
                ("cookie", "a=b"),
            ],
            Some("read write"),
        );
        let call = CheckCall::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(call.authorization(), Some("Bearer lk_x"));
        assert_eq!(call.user_agent(), Some("curl/8"));
        assert_eq!(call.forwarded_for(), Some("198.51.100.7, 10.0.0.1"));
        assert_eq!(call.source_address(), Some("203.0.113.9"));
        assert_eq!(call.required_scopes(), Some("read write"));
        let bare = CheckCall::decode(full(&[], None).encode_to_vec().as_slice()).unwrap();
        assert_eq!((bare.authorization(), bare.required_scopes()), (None, None));
        assert!(!format!("{call:?}").contains("lk_x"), "{call:?}");
    }

    #[test]
    fn the_last_entry_of_a_repeated_key_wins_as_in_a_map() {
        let first = full(&[("authorization", "Bearer first")], None).encode_to_vec();
        let second = full(&[("authorization", "Bearer second")], None).encode_to_vec();
        // Two encodings of the message back to back merge: the later map
        // entry replaces the earlier.
        let both = [first, second].concat();
        let decoded = CheckRequest::decode(both.as_slice()).unwrap();
        let call = CheckCall::decode(both.as_slice()).unwrap();
        assert_eq!(
            call.authorization(),
            decoded
                .attributes
                .unwrap()
                .request
                .unwrap()
                .http
                .unwrap()
                .headers["authorization"]
                .as_str()
                .into()
        );
        assert_eq!(call.authorization(), Some("Bearer second"));
    }
}
