//! OAuth 2.0 Token Introspection (RFC 7662): `POST /oauth2/introspect` with
//! form field `token`, by a caller presenting a latchkey token with scope
//! `latchkey:introspect` as its bearer credential.
//!
//! A valid token is answered `{"active": true, …}` with its scopes, owner
//! (`sub`), id (`client_id`, `jti`), creation (`iat`) and expiry (`exp`);
//! every other token, whatever the reason, exactly `{"active": false}`, as
//! RFC 7662 2.2 requires, so the answer tells the caller nothing more about
//! a token it may not use.

use std::borrow::Cow;

use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use zeroize::Zeroizing;

use super::api::{Answer, Refusal, WebApi, error, json_body, json_bytes, undecided};
use crate::observe::Api;
use crate::token::INTROSPECT_SCOPE;
use crate::verifier::{Snapshot, Verdict, View};

/// RFC 7662 introspection.
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";

const FORM: &str = "application/x-www-form-urlencoded";

impl WebApi {
    pub(super) async fn introspect(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        if let Some(refused) = self.authenticate_caller(headers).await {
            return refused;
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
        if !is_form {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
        let token = match token_field(body) {
            Field::One(token) if !token.is_empty() => token,
            Field::Repeated => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the token parameter is given more than once",
                );
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the token parameter is required",
                );
            }
        };
        // Borrowed from the body unless it was percent-encoded; a decoded
        // copy is wiped.
        let copy;
        let token = match token {
            Cow::Borrowed(token) => token,
            Cow::Owned(token) => {
                copy = Zeroizing::new(token);
                copy.as_str()
            }
        };
        let checked = match self
            .verifier
            .verify_spending(token, &[] as &[&str], 1, None)
            .await
        {
            Ok(checked) => checked,
            Err(e) => return undecided(e),
        };
        checked.record_in_span();
        self.observer.verdict(Api::Introspect, checked.verdict);
        let known = match (checked.verdict, checked.token) {
            (Verdict::Valid, Some(known)) => known,
            _ => return json_bytes(StatusCode::OK, Bytes::from_static(INACTIVE)),
        };
        json_bytes(
            StatusCode::OK,
            known.snapshot.view(View::Introspection, active),
        )
    }

    /// `None` if the caller's bearer token may introspect; else the 401 or
    /// 403 answer (RFC 6750 3.1).
    async fn authenticate_caller(&self, headers: &HeaderMap) -> Option<Answer> {
        let refusal = self.caller(headers, &self.introspect_scope).await.err()?;
        Some(match refusal {
            Refusal::NoCredential => challenge(
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"latchkey\"",
                "invalid_client",
                &format!("a bearer token with scope {INTROSPECT_SCOPE} is required"),
            ),
            Refusal::MissingScope => challenge(
                StatusCode::FORBIDDEN,
                "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"latchkey:introspect\"",
                "insufficient_scope",
                &format!("the caller's token lacks scope {INTROSPECT_SCOPE}"),
            ),
            Refusal::Invalid(verdict) => challenge(
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"latchkey\", error=\"invalid_token\"",
                "invalid_token",
                &format!("the caller's token: {}", verdict.reason()),
            ),
            Refusal::Undecided(answer) => answer,
        })
    }
}

/// How often a form field is given.
#[derive(Debug, PartialEq)]
enum Field<'a> {
    Missing,
    One(Cow<'a, str>),
    Repeated,
}

/// The form's `token` field. A form with nothing percent- or
/// plus-encoded (the usual one) is split in place, as `form_urlencoded`
/// would split it; any other is decoded by `form_urlencoded`.
fn token_field(body: &[u8]) -> Field<'_> {
    let encoded = body.iter().any(|b| matches!(b, b'%' | b'+'));
    let plain = std::str::from_utf8(body).ok().filter(|_| !encoded);
    match plain {
        Some(body) => once(
            body.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .filter(|(name, _)| *name == "token")
                .map(|(_, value)| Cow::Borrowed(value)),
        ),
        None => decoded_token_field(body),
    }
}

fn decoded_token_field(body: &[u8]) -> Field<'_> {
    once(
        form_urlencoded::parse(body)
            .filter(|(name, _)| name == "token")
            .map(|(_, value)| value),
    )
}

fn once<'a>(mut values: impl Iterator<Item = Cow<'a, str>>) -> Field<'a> {
    match (values.next(), values.next()) {
        (None, _) => Field::Missing,
        (Some(value), None) => Field::One(value),
        (Some(_), Some(_)) => Field::Repeated,
    }
}

/// The answer for every token but a valid one.
const INACTIVE: &[u8] = br#"{"active":false}"#;

/// The RFC 7662 2.2 answer for an active token, its fields in name order.
#[derive(serde::Serialize)]
struct Active<'a> {
    active: bool,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    iat: i64,
    jti: &'a str,
    scope: &'a str,
    sub: &'a str,
    token_type: &'static str,
}

fn active(token: &Snapshot) -> Bytes {
    let mut id = [0u8; 36];
    let id = token.id.hyphenated().encode_lower(&mut id);
    let answer = Active {
        active: true,
        client_id: id,
        exp: token.lifetime.expire_time().map(|t| t.to_unix().0),
        iat: token.create_time.to_unix().0,
        jti: id,
        scope: token.scopes(),
        sub: token.owner(),
        token_type: "Bearer",
    };
    json_body(&answer)
}

fn challenge(status: StatusCode, value: &'static str, code: &str, description: &str) -> Answer {
    let mut answer: Response<_> = error(status, code, description);
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::token::TokenRecord;

    #[test]
    fn a_plain_form_is_split_as_form_urlencoded_splits_it() {
        for body in [
            "token=lk_abc",
            "token=",
            "token",
            "",
            "&&token=lk_abc&",
            "a=1&token=lk_abc&b",
            "token=a=b",
            "token_type_hint=access_token&token=lk_abc",
            "token=x&token=y",
            "=token&token=z",
            "tokens=x",
            "token=caf\u{e9}",
        ] {
            let field = token_field(body.as_bytes());
            assert!(
                matches!(
                    field,
                    Field::Missing | Field::Repeated | Field::One(Cow::Borrowed(_))
                ),
                "{body}"
            );
            assert_eq!(field, decoded_token_field(body.as_bytes()), "{body}");
        }
        // Encoded forms are decoded (a name too).
        for (body, token) in [
            ("token=a%2Bb", "a+b"),
            ("tok%65n=lk", "lk"),
            ("token=a+b", "a b"),
            ("token=%FF", "\u{fffd}"),
        ] {
            assert_eq!(
                token_field(body.as_bytes()),
                Field::One(Cow::Owned(token.into()))
            );
        }
        assert_eq!(
            token_field(b"token=\xff"),
            Field::One(Cow::Owned("\u{fffd}".into()))
        );
    }

    #[test]
    fn an_active_answer_has_the_rfc_fields_and_no_exp_without_expiry() {
        let id = uuid::Uuid::nil();
        let record = TokenRecord {
            scopes: vec!["a".into(), "b:*".into()],
            ..TokenRecord::new(id, "alice".into(), Timestamp::from_micros(100_000_005))
        };
        let parse = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let answer = parse(active(&Snapshot::new(&record, false, |_, _| {})));
        let id = id.to_string();
        assert_eq!(
            answer,
            serde_json::json!({
                "active": true, "scope": "a b:*", "client_id": id, "sub": "alice",
                "iat": 100, "token_type": "Bearer", "jti": id,
            })
        );
        let expiring = TokenRecord {
            expire_time: Some(Timestamp::from_micros(200_000_000)),
            ..record
        };
        assert_eq!(
            parse(active(&Snapshot::new(&expiring, false, |_, _| {})))["exp"],
            200
        );
    }
}
