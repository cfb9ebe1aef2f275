//! The parts of Envoy's `envoy.service.auth.v3.CheckRequest` that Check
//! reads, decoded by prost into messages that declare only them: the
//! `authorization`, `user-agent` and `x-forwarded-for` headers, the source
//! address and the `required_scopes` context extension. Every other field
//! (a real request carries dozens of headers, principals, the path, the
//! time) is skipped on the wire without being decoded or copied. The
//! attributes are kept as received (a slice of the receive buffer, not a
//! copy) and decoded where they lie: a header's key is compared in place,
//! and a kept value is only its position.
//!
//! Field numbers are `external_auth.proto` and `attribute_context.proto`'s.
//! Strings are taken only if they are UTF-8. For every encoding the full
//! message decodes, this one decodes too and finds the same values (a
//! map's last entry for a key wins, as protobuf says; a oneof's last member
//! set); the `check` fuzz target holds it to that.

use prost::DecodeError;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

/// `CheckRequest`: `attributes` (1), kept as received and decoded where it
/// lies: the fields Check reads are [`Span`]s of it.
#[derive(Clone, Default, PartialEq)]
pub struct CheckCall {
    raw: Bytes,
    attributes: Attributes,
}

/// Where a kept string lies in the attributes: its length, and how many
/// bytes from its first to the end of the attributes (what a decoder knows
/// is how much is left, not where it is).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Span {
    from_end: usize,
    len: usize,
}

/// `AttributeContext`: `source` (1), `request` (4) and, of the
/// `context_extensions` map (10), `required_scopes`.
#[derive(Clone, Default, PartialEq, Debug)]
struct Attributes {
    source: Option<Peer>,
    request: Option<Request>,
    required_scopes: Option<Span>,
}

/// `AttributeContext.Peer`: `address` (1).
#[derive(Clone, PartialEq, prost::Message)]
struct Peer {
    #[prost(message, optional, tag = "1")]
    address: Option<Address>,
}

/// `config.core.v3.Address`: `socket_address` (1) of the oneof `address`,
/// whose other members (`pipe`, 2; `envoy_internal_address`, 3) replace it.
#[derive(Clone, Default, PartialEq, Debug)]
struct Address {
    socket_address: Option<SocketAddress>,
}

/// `config.core.v3.SocketAddress`: `address` (2).
#[derive(Clone, Default, PartialEq, Debug)]
struct SocketAddress {
    address: Span,
}

/// `AttributeContext.Request`: `http` (2).
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(message, optional, tag = "2")]
    http: Option<Http>,
}

/// `AttributeContext.HttpRequest`: the headers Check reads ([`HEADERS`]),
/// from the `headers` map (3) or else from `header_map` (13, which Envoy
/// fills instead with `encode_raw_headers`; its last entry of a name, the
/// raw value if there is one). Envoy writes header names in lower case.
#[derive(Clone, Default, PartialEq)]
struct Http {
    headers: [Option<Span>; 3],
    header_map: [Option<Span>; 3],
}

/// The headers Check reads, in the order of [`Http`]'s slots.
const HEADERS: [&str; 3] = ["authorization", "user-agent", "x-forwarded-for"];

impl CheckCall {
    fn text(&self, span: Option<Span>) -> Option<&str> {
        let span = span?;
        let start = self.raw.len().checked_sub(span.from_end)?;
        std::str::from_utf8(self.raw.get(start..start + span.len)?).ok()
    }

    /// Header `i` of [`HEADERS`].
    fn header(&self, i: usize) -> Option<&str> {
        let http = self.attributes.request.as_ref()?.http.as_ref()?;
        self.text(http.headers[i].or(http.header_map[i]))
    }

    /// The `authorization` header.
    pub fn authorization(&self) -> Option<&str> {
        self.header(0)
    }

    /// The `user-agent` header.
    pub fn user_agent(&self) -> Option<&str> {
        self.header(1)
    }

    /// The `x-forwarded-for` header.
    pub fn forwarded_for(&self) -> Option<&str> {
        self.header(2)
    }

    /// The source's socket address (the connection Envoy saw).
    pub fn source_address(&self) -> Option<&str> {
        let peer = self.attributes.source.as_ref()?;
        let socket = peer.address.as_ref()?.socket_address.as_ref()?;
        self.text(Some(socket.address))
    }

    /// The `required_scopes` context extension.
    pub fn required_scopes(&self) -> Option<&str> {
        self.text(self.attributes.required_scopes)
    }
}

/// A length-delimited field's place, the buffer moved past it.
fn take_span(wire_type: WireType, buf: &mut impl Buf) -> Result<Span, DecodeError> {
    let len = field_len(wire_type, buf)?;
    let span = Span {
        from_end: buf.remaining(),
        len,
    };
    buf.advance(len);
    Ok(span)
}

/// A length-delimited field's length, read from its prefix and checked
/// against what is left.
fn field_len(wire_type: WireType, buf: &mut impl Buf) -> Result<usize, DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    usize::try_from(encoding::decode_varint(buf)?)
        .ok()
        .filter(|len| *len <= buf.remaining())
        .ok_or_else(underflow)
}

/// prost's own error for a length past the end of the buffer.
fn underflow() -> DecodeError {
    let mut nothing = Vec::new();
    // A one-byte field with nothing after its length.
    match encoding::bytes::merge(
        WireType::LengthDelimited,
        &mut nothing,
        &mut [1u8].as_slice(),
        DecodeContext::default(),
    ) {
        Err(e) => e,
        Ok(()) => unreachable!("a length past the end is an error"),
    }
}

/// Which of `keys` a length-delimited key field is, compared where it lies,
/// the buffer moved past it.
fn take_key(
    keys: &[&str],
    wire_type: WireType,
    buf: &mut impl Buf,
) -> Result<Option<usize>, DecodeError> {
    take_span_where(wire_type, buf, |bytes| {
        keys.iter().position(|k| k.as_bytes() == bytes)
    })
}

/// [`take_span`], looking at the bytes with `look` before moving past them
/// (on a buffer in pieces, at a copy of them).
fn take_span_where<T>(
    wire_type: WireType,
    buf: &mut impl Buf,
    look: impl FnOnce(&[u8]) -> T,
) -> Result<T, DecodeError> {
    let len = field_len(wire_type, buf)?;
    if let Some(bytes) = buf.chunk().get(..len) {
        let seen = look(bytes);
        buf.advance(len);
        Ok(seen)
    } else {
        Ok(look(&buf.copy_to_bytes(len)))
    }
}

/// Decodes one map entry (`key` 1, `value` 2; the last of each wins, as for
/// any field) and, if its key is one of `keys`, keeps where its value lies
/// in the matching slot of `kept` (an entry without a value has an empty
/// one).
fn merge_entry(
    keys: &[&str],
    kept: &mut [Option<Span>],
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let mut entry: (Option<usize>, Span) = (None, Span::default());
    encoding::merge_loop(&mut entry, buf, ctx, |(key, value), buf, ctx| {
        let (tag, wire_type) = encoding::decode_key(buf)?;
        match tag {
            1 => take_key(keys, wire_type, buf).map(|found| *key = found),
            2 => take_span(wire_type, buf).map(|span| *value = span),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    })?;
    if let (Some(i), value) = entry {
        kept[i] = Some(value);
    }
    Ok(())
}

/// Decodes one `config.core.v3.HeaderValue` (`key` 1, `value` 2,
/// `raw_value` 3) and, if its key is one of [`HEADERS`], keeps where its
/// raw value lies, or its value if the raw one is empty.
fn merge_header_value(
    kept: &mut [Option<Span>; 3],
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let mut header: (Option<usize>, Span, Span) = Default::default();
    encoding::merge_loop(&mut header, buf, ctx, |(key, value, raw), buf, ctx| {
        let (tag, wire_type) = encoding::decode_key(buf)?;
        match tag {
            1 => take_key(&HEADERS, wire_type, buf).map(|found| *key = found),
            2 => take_span(wire_type, buf).map(|span| *value = span),
            3 => take_span(wire_type, buf).map(|span| *raw = span),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    })?;
    if let (Some(i), value, raw) = header {
        kept[i] = Some(if raw.len > 0 { raw } else { value });
    }
    Ok(())
}

/// The messages here are decode-only: the server never encodes a request,
/// so they encode as empty.
macro_rules! decode_only {
    ($name:ty, |$this:ident, $tag:ident, $wire_type:ident, $buf:ident, $ctx:ident| $merge:expr) => {
        impl prost::Message for $name {
            fn encode_raw(&self, _: &mut impl BufMut) {}

            fn merge_field(
                &mut self,
                $tag: u32,
                $wire_type: WireType,
                $buf: &mut impl Buf,
                $ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                let $this = self;
                $merge
            }

            fn encoded_len(&self) -> usize {
                0
            }

            fn clear(&mut self) {
                *self = Self::default();
            }
        }
    };
}

decode_only!(CheckCall, |this, tag, wire_type, buf, ctx| match tag {
    1 => {
        // The attributes as received (no copy), decoded where they lie. A
        // message repeated is merged, as decoding its parts one after the
        // other does.
        let len = field_len(wire_type, buf)?;
        let part = buf.copy_to_bytes(len);
        this.raw = if this.raw.is_empty() {
            part
        } else {
            Bytes::from([this.raw.as_ref(), part.as_ref()].concat())
        };
        this.attributes = Attributes::default();
        prost::Message::merge(&mut this.attributes, this.raw.as_ref())
    }
    _ => encoding::skip_field(wire_type, tag, buf, ctx),
});

decode_only!(Attributes, |this, tag, wire_type, buf, ctx| match tag {
    1 => encoding::message::merge(
        wire_type,
        this.source.get_or_insert_with(Peer::default),
        buf,
        ctx
    ),
    4 => encoding::message::merge(
        wire_type,
        this.request.get_or_insert_with(Request::default),
        buf,
        ctx
    ),
    10 => merge_entry(
        &["required_scopes"],
        std::slice::from_mut(&mut this.required_scopes),
        wire_type,
        buf,
        ctx
    ),
    _ => encoding::skip_field(wire_type, tag, buf, ctx),
});

decode_only!(Address, |this, tag, wire_type, buf, ctx| match tag {
    1 => encoding::message::merge(
        wire_type,
        this.socket_address
            .get_or_insert_with(SocketAddress::default),
        buf,
        ctx,
    ),
    2 | 3 => {
        // Another member of the oneof: the last one set is the one.
        this.socket_address = None;
        encoding::skip_field(wire_type, tag, buf, ctx)
    }
    _ => encoding::skip_field(wire_type, tag, buf, ctx),
});

decode_only!(SocketAddress, |this, tag, wire_type, buf, ctx| match tag {
    2 => take_span(wire_type, buf).map(|span| this.address = span),
    _ => encoding::skip_field(wire_type, tag, buf, ctx),
});

decode_only!(Http, |this, tag, wire_type, buf, ctx| match tag {
    3 => merge_entry(&HEADERS, &mut this.headers, wire_type, buf, ctx),
    13 => {
        // `HeaderMap`: `headers` (1), each a `HeaderValue`.
        encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
        encoding::merge_loop(&mut this.header_map, buf, ctx, |kept, buf, ctx| {
            let (tag, wire_type) = encoding::decode_key(buf)?;
            match tag {
                1 => merge_header_value(kept, wire_type, buf, ctx),
                _ => encoding::skip_field(wire_type, tag, buf, ctx),
            }
        })
    }
    _ => encoding::skip_field(wire_type, tag, buf, ctx),
});

// Debug without the values: the authorization header is a secret.

impl std::fmt::Debug for CheckCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckCall")
            .field("authorization", &self.authorization().map(|_| "…"))
            .field("user_agent", &self.user_agent())
            .field("forwarded_for", &self.forwarded_for())
            .field("source_address", &self.source_address())
            .field("required_scopes", &self.required_scopes())
            .finish()
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").finish_non_exhaustive()
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
    fn headers_sent_raw_are_read_from_the_header_map() {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        let raw = |key: &str, value: &str, raw: &str| HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: raw.as_bytes().to_vec(),
        };
        let mut request = full(&[("user-agent", "from the map")], None);
        let http = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(HeaderMap {
            headers: vec![
                raw("authorization", "", "Bearer first"),
                raw("authorization", "", "Bearer lk_raw"),
                raw("user-agent", "", "from the header map"),
                raw("x-forwarded-for", "198.51.100.7", ""),
            ],
        });
        let call = CheckCall::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(call.authorization(), Some("Bearer lk_raw"));
        assert_eq!(call.user_agent(), Some("from the map"));
        assert_eq!(call.forwarded_for(), Some("198.51.100.7"));
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
