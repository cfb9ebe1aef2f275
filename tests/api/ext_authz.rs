//! Envoy's external authorization: what Envoy would apply for allowed,
//! missing, malformed, revoked and insufficient-scope requests (the HTTP
//! status, the headers, the body), on the same server and cache as Verify.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_valid_token_passes_with_its_identity_for_the_upstream,
    bad_tokens_get_401_and_missing_scopes_403_never_a_grpc_error,
    the_authorization_header_is_removed_when_configured,
);

/// A check as Envoy sends it: the client's headers, and the route's
/// context extensions.
pub(crate) fn check_request(
    authorization: Option<&str>,
    required_scopes: Option<&str>,
) -> CheckRequest {
    let mut headers = HashMap::from([
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), "/repos/42".to_owned()),
    ]);
    if let Some(a) = authorization {
        headers.insert("authorization".to_owned(), a.to_owned());
    }
    let context_extensions = required_scopes
        .map(|s| HashMap::from([("required_scopes".to_owned(), s.to_owned())]))
        .unwrap_or_default();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/repos/42".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

pub(crate) async fn check(
    app: &TestApp,
    request: CheckRequest,
) -> Result<CheckResponse, tonic::Status> {
    AuthorizationClient::new(app.channel.clone())
        .check(request)
        .await
        .map(tonic::Response::into_inner)
}

/// (name, value) of each header an answer sets.
pub(crate) fn headers(
    options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption],
) -> HashMap<String, String> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// The HTTP status Envoy sends the client, the headers, and the body.
pub(crate) fn denial(answer: &CheckResponse) -> (i32, HashMap<String, String>, serde_json::Value) {
    let Some(HttpResponse::DeniedResponse(denied)) = &answer.http_response else {
        panic!("not a denial: {answer:?}");
    };
    assert_ne!(
        answer.status.as_ref().unwrap().code,
        0,
        "a denial has a non-OK status"
    );
    (
        denied.status.as_ref().unwrap().code,
        headers(&denied.headers),
        serde_json::from_str(&denied.body).unwrap(),
    )
}

async fn a_valid_token_passes_with_its_identity_for_the_upstream(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app
        .create_token("user-42", &["repo:read", "deploy:*"])
        .await;
    let bearer = format!("Bearer {secret}");
    for required in [None, Some("repo:read"), Some("repo:read deploy:prod")] {
        let answer = check(&app, check_request(Some(&bearer), required))
            .await
            .unwrap();
        assert_eq!(answer.status.as_ref().unwrap().code, 0, "{required:?}");
        let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
            panic!("not allowed: {answer:?}");
        };
        let set = headers(&ok.headers);
        assert_eq!(set["x-latchkey-token-id"], token.id);
        assert_eq!(set["x-latchkey-owner"], "user-42");
        assert_eq!(set["x-latchkey-scopes"], "repo:read deploy:*");
        assert!(ok.headers_to_remove.is_empty(), "kept unless configured");
    }
    // Same cache as Verify: checks after the first cost no lookup.
    assert_eq!(app.gate.lookups(), 1);
}

async fn bad_tokens_get_401_and_missing_scopes_403_never_a_grpc_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, reader) = app.create_token("u", &["repo:read"]).await;
    let (revoked, revoked_secret) = app.create_token("u", &["repo:read"]).await;
    app.revoke(&revoked.id, "leaked").await.unwrap();
    let (deleted, unknown) = app.create_token("u", &[]).await;
    app.delete(&deleted.id).await.unwrap();
    // The last character changed, so the checksum no longer matches.
    let last = if reader.ends_with('x') { 'y' } else { 'x' };
    let malformed = format!("{}{last}", &reader[..reader.len() - 1]);

    let (status, set, body) = denial(&check(&app, check_request(None, None)).await.unwrap());
    assert_eq!(status, 401);
    assert_eq!(set["www-authenticate"], "Bearer realm=\"latchkey\"");
    assert_eq!(body["error"], "missing_token");

    for (credential, description) in [
        (format!("Bearer {malformed}"), "the token is not valid"),
        (format!("Bearer {unknown}"), "the token is not valid"),
        (
            format!("Bearer {revoked_secret}"),
            "the token has been revoked",
        ),
        (format!("Basic {reader}"), ""),
    ] {
        let (status, set, body) = denial(
            &check(&app, check_request(Some(&credential), None))
                .await
                .unwrap(),
        );
        assert_eq!(status, 401, "{description}");
        if description.is_empty() {
            assert_eq!(body["error"], "missing_token", "not a bearer token");
            continue;
        }
        assert_eq!(
            set["www-authenticate"],
            "Bearer realm=\"latchkey\", error=\"invalid_token\""
        );
        assert_eq!(set["content-type"], "application/json");
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["error_description"], description);
    }

    let bearer = format!("Bearer {reader}");
    let answer = check(
        &app,
        check_request(Some(&bearer), Some("repo:read repo:write")),
    )
    .await
    .unwrap();
    let (status, set, body) = denial(&answer);
    assert_eq!(status, 403);
    assert_eq!(
        set["www-authenticate"],
        "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"repo:read repo:write\""
    );
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["error_description"], "the token lacks repo:write");

    // A route's bad configuration is the one gRPC error, naming the field.
    let err = check(&app, check_request(Some(&bearer), Some("repo read!")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("context_extensions.required_scopes"),
        "{err:?}"
    );
}

async fn the_authorization_header_is_removed_when_configured(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.ext_authz.remove_authorization = true).await;
    let (_, secret) = app.create_token("u", &[]).await;
    let answer = check(&app, check_request(Some(&format!("Bearer {secret}")), None))
        .await
        .unwrap();
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
        panic!("not allowed: {answer:?}");
    };
    assert_eq!(ok.headers_to_remove, ["authorization"]);
}
