//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external
//! authorization, on the same cache and verdicts as Verify, so a mesh can
//! protect a service with configuration only.
//!
//! The token is the request's `authorization: Bearer …` header; a route
//! names the scopes it needs in the check's context extensions
//! (`required_scopes`, space-separated). A token's verdict is always an
//! answer Envoy applies, never a gRPC error: allowed requests go upstream
//! with the token's id, owner and scopes in headers; denied ones get 401
//! (`invalid_token`) or 403 (`insufficient_scope`) as RFC 6750 describes. A
//! gRPC error means latchkey could not decide (the database unreachable on a
//! cache miss, or a route's bad `required_scopes`), and Envoy applies its
//! own failure policy.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::CheckRequestExt as _;
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::auth::bearer_credential;
use crate::client::Client;
use crate::limits::RateState;
use crate::observe::{Api, Observe};
use crate::verifier::{Snapshot, Verdict, Verifier};

/// The context extension naming the scopes a route requires.
pub const REQUIRED_SCOPES: &str = "required_scopes";

/// Headers set on an allowed request for the upstream service.
pub const TOKEN_ID_HEADER: &str = "x-latchkey-token-id";
pub const OWNER_HEADER: &str = "x-latchkey-owner";
pub const SCOPES_HEADER: &str = "x-latchkey-scopes";

pub struct ExtAuthzService {
    verifier: Arc<Verifier>,
    observer: Arc<dyn Observe>,
    /// Remove the `authorization` header from allowed requests, so the
    /// upstream never sees the token.
    remove_authorization: bool,
    /// Take the client's address from `x-forwarded-for` (its first entry)
    /// rather than the connection's source.
    forwarded_for: bool,
}

impl ExtAuthzService {
    /// Takes the client's address from `x-forwarded-for`, as a proxy in
    /// front of Envoy set it.
    #[must_use]
    pub fn with_forwarded_for(mut self, trusted: bool) -> Self {
        self.forwarded_for = trusted;
        self
    }

    /// The client of `request` as Envoy saw it.
    fn client(&self, request: &CheckRequest) -> Option<Client> {
        let headers = request.get_client_headers();
        let header = |name| headers.and_then(|h| h.get(name)).map(String::as_str);
        let ip = if self.forwarded_for {
            header("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .and_then(|first| first.trim().parse().ok())
        } else {
            request
                .attributes
                .as_ref()
                .and_then(|a| a.source.as_ref())
                .and_then(|peer| peer.address.as_ref())
                .and_then(|a| match &a.address {
                    Some(Address::SocketAddress(s)) => s.address.parse().ok(),
                    _ => None,
                })
        };
        Client::seen(ip, header("user-agent").unwrap_or_default())
    }
    pub fn new(
        verifier: Arc<Verifier>,
        observer: Arc<dyn Observe>,
        remove_authorization: bool,
    ) -> Self {
        ExtAuthzService {
            verifier,
            observer,
            remove_authorization,
            forwarded_for: false,
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = WipedOnDrop(request.into_inner());
        let required: Vec<String> = request
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(REQUIRED_SCOPES))
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let Some(token) = request
            .get_client_headers()
            .and_then(|h| h.get("authorization"))
            .and_then(|v| bearer_credential(v))
        else {
            self.observer.verdict(Api::Check, Verdict::Malformed);
            return Ok(Response::new(denied(
                HttpStatusCode::Unauthorized,
                "Bearer realm=\"latchkey\"".to_owned(),
                "missing_token",
                "a bearer token is required",
            )));
        };
        let checked = self
            .verifier
            .verify_spending(token, &required, 1, self.client(&request).as_ref())
            .await
            .map_err(|e| match e {
                // The route's configuration, not the client, is at fault.
                crate::error::Error::InvalidArgument { field, reason } => {
                    let at = field.strip_prefix("required_scopes").unwrap_or_default();
                    Status::invalid_argument(format!(
                        "context_extensions.{REQUIRED_SCOPES}{at}: {reason}"
                    ))
                }
                e => crate::status::status(e),
            })?;
        checked.record_in_span();
        self.observer.verdict(Api::Check, checked.verdict);
        let rate_headers = rate_limit_headers(checked.rate.as_ref(), checked.retry_after);
        let mut answer = match (checked.verdict, checked.token) {
            (Verdict::Valid, Some(known)) => self.allowed(&known.snapshot),
            (Verdict::RateLimited, _) => denied(
                HttpStatusCode::TooManyRequests,
                "Bearer realm=\"latchkey\"".to_owned(),
                "rate_limited",
                Verdict::RateLimited.reason(),
            ),
            (Verdict::InsufficientScope, _) => denied(
                HttpStatusCode::Forbidden,
                format!(
                    "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"{}\"",
                    required.join(" ")
                ),
                "insufficient_scope",
                &format!("the token lacks {}", checked.missing_scopes.join(" ")),
            ),
            (Verdict::UsageExceeded, _) => denied(
                HttpStatusCode::TooManyRequests,
                "Bearer realm=\"latchkey\"".to_owned(),
                "usage_exceeded",
                Verdict::UsageExceeded.reason(),
            ),
            (verdict, _) => denied(
                HttpStatusCode::Unauthorized,
                "Bearer realm=\"latchkey\", error=\"invalid_token\"".to_owned(),
                "invalid_token",
                verdict.reason(),
            ),
        };
        if !rate_headers.is_empty() {
            match &mut answer.http_response {
                Some(HttpResponse::OkResponse(ok)) => ok.response_headers_to_add = rate_headers,
                Some(HttpResponse::DeniedResponse(denied)) => denied.headers.extend(rate_headers),
                _ => {}
            }
        }
        Ok(Response::new(answer))
    }
}

/// For a token with rate limits, the headers of the IETF draft
/// "RateLimit header fields for HTTP" (`RateLimit-Policy: "name";q=..;w=..`
/// and `RateLimit: "name";r=..;t=..`, for the limit with the fewest calls
/// left), and `Retry-After` when it refused: on the client's response,
/// allowed or not. Both times are whole seconds already, rounded up where
/// the limits are spent.
fn rate_limit_headers(
    rate: Option<&RateState>,
    retry_after: Option<Duration>,
) -> Vec<HeaderValueOption> {
    let mut headers = Vec::new();
    if let Some(rate) = rate {
        let window_secs = rate.window.as_secs();
        headers.push(header(
            "ratelimit-policy",
            format!("\"{}\";q={};w={window_secs}", rate.name, rate.limit),
        ));
        headers.push(header(
            "ratelimit",
            format!(
                "\"{}\";r={};t={}",
                rate.name,
                rate.remaining,
                rate.reset.as_secs()
            ),
        ));
    }
    if let Some(after) = retry_after {
        headers.push(header("retry-after", after.as_secs().to_string()));
    }
    headers
}

impl ExtAuthzService {
    fn allowed(&self, token: &Snapshot) -> CheckResponse {
        let headers = [
            (TOKEN_ID_HEADER, token.id.to_string()),
            (OWNER_HEADER, token.owner().to_owned()),
            (SCOPES_HEADER, token.scopes().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| header(k, v))
        .collect();
        CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok.into(),
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: if self.remove_authorization {
                    vec!["authorization".to_owned()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

/// Envoy's answer to the client: `status`, a `www-authenticate` challenge
/// and a small JSON body. Envoy replaces any upstream header of these names
/// with these values.
fn denied(
    status: HttpStatusCode,
    challenge: String,
    error: &str,
    description: &str,
) -> CheckResponse {
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    let code = if status == HttpStatusCode::Forbidden {
        tonic::Code::PermissionDenied
    } else {
        tonic::Code::Unauthenticated
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code.into(),
            message: description.to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status.into(),
            }),
            headers: vec![
                header("www-authenticate", challenge),
                header("content-type", "application/json".to_owned()),
            ],
            body,
        })),
        ..Default::default()
    }
}

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: header_safe(value),
            raw_value: Vec::new(),
        }),
        append_action: envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd
            .into(),
        ..Default::default()
    }
}

/// `value` with every control character percent-encoded (`%0D%0A`), so no
/// header Envoy writes can be split or cut short, whatever a stored owner
/// holds. Text fields refuse control characters on the way in; this guards
/// rows written before that rule, or straight into the database.
fn header_safe(value: String) -> String {
    if !value.chars().any(char::is_control) {
        return value;
    }
    let mut safe = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        } else {
            safe.push(c);
        }
    }
    safe
}

/// A Check request whose bearer credential is zeroed when it is dropped.
struct WipedOnDrop(CheckRequest);

impl std::ops::Deref for WipedOnDrop {
    type Target = CheckRequest;

    fn deref(&self) -> &CheckRequest {
        &self.0
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        wipe_authorization(&mut self.0);
    }
}

/// Zeroes the request's `authorization` header, wherever Envoy put it.
fn wipe_authorization(request: &mut CheckRequest) {
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut());
    let Some(http) = http else { return };
    if let Some(value) = http.headers.get_mut("authorization") {
        zeroize::Zeroize::zeroize(value);
    }
    for header in http
        .header_map
        .iter_mut()
        .flat_map(|m| m.headers.iter_mut())
    {
        if header.key.eq_ignore_ascii_case("authorization") {
            zeroize::Zeroize::zeroize(&mut header.value);
            zeroize::Zeroize::zeroize(&mut header.raw_value);
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    use super::*;

    #[test]
    fn the_bearer_credential_is_wiped_from_both_header_forms() {
        let mut request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers: [("authorization".to_owned(), "Bearer lk_secret".to_owned())]
                            .into(),
                        header_map: Some(HeaderMap {
                            headers: vec![HeaderValue {
                                key: "Authorization".into(),
                                value: "Bearer lk_secret".into(),
                                raw_value: b"Bearer lk_secret".to_vec(),
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        wipe_authorization(&mut request);
        let http = request.get_client_headers().unwrap();
        assert_eq!(http["authorization"], "");
        let attributes = request.attributes.unwrap();
        let map = attributes
            .request
            .unwrap()
            .http
            .unwrap()
            .header_map
            .unwrap();
        assert!(map.headers[0].value.is_empty() && map.headers[0].raw_value.is_empty());
    }

    #[test]
    fn header_values_never_carry_control_characters() {
        assert_eq!(header_safe("user-42".into()), "user-42");
        assert_eq!(
            header_safe("alice\r\nx-admin: true\0".into()),
            "alice%0D%0Ax-admin: true%00"
        );
        assert_eq!(header_safe("a\u{85}b".into()), "a%C2%85b");
        let h = header(OWNER_HEADER, "eve\nx".into()).header.unwrap();
        assert_eq!(h.value, "eve%0Ax");
    }
}
