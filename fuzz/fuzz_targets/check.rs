//! Check's request decoder, which reads only the fields Check needs,
//! against prost's decoding of the whole `envoy.service.auth.v3.CheckRequest`:
//! every input the whole message decodes from, the slim one decodes from
//! too, and finds the same authorization, user agent, forwarded-for,
//! source address and required scopes.
#![no_main]

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use latchkey::grpc::CheckCall;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(full) = CheckRequest::decode(data) else {
        return;
    };
    let slim = CheckCall::decode(data).expect("a valid CheckRequest decodes as a CheckCall");
    let attributes = full.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    // The `headers` map's value, else the last `header_map` entry's raw
    // value (its value if the raw one is empty).
    let header = |name: &str| -> Option<&str> {
        let http = http?;
        if let Some(value) = http.headers.get(name) {
            return Some(value);
        }
        let last = http
            .header_map
            .as_ref()?
            .headers
            .iter()
            .rev()
            .find(|h| h.key == name)?;
        if last.raw_value.is_empty() {
            Some(&last.value)
        } else {
            std::str::from_utf8(&last.raw_value).ok()
        }
    };
    assert_eq!(slim.authorization(), header("authorization"));
    assert_eq!(slim.user_agent(), header("user-agent"));
    assert_eq!(slim.forwarded_for(), header("x-forwarded-for"));
    let source = attributes
        .and_then(|a| a.source.as_ref())
        .and_then(|p| p.address.as_ref())
        .and_then(|a| match &a.address {
            Some(Address::SocketAddress(s)) => Some(s.address.as_str()),
            _ => None,
        });
    assert_eq!(slim.source_address(), source);
    assert_eq!(
        slim.required_scopes(),
        attributes
            .and_then(|a| a.context_extensions.get("required_scopes"))
            .map(String::as_str)
    );
});
