//! `latchkey.v1.TokenSelf`: a token looking up, renewing or revoking itself,
//! authenticated by itself (`authorization: Bearer <token>`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::answer;
use super::convert;
use super::pb::{self, token_self_server::TokenSelf};
use crate::auth::{Actor, bearer_credential};
use crate::clock::Clock;
use crate::error::Error;
use crate::lifecycle::{Lifecycle, SELF_REVOKE_REASON};
use crate::token::SELF_RENEW_SCOPE;
use crate::verifier::{Verdict, Verification, Verifier};

pub struct SelfService {
    lifecycle: Arc<Lifecycle>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    renew_scope: [String; 1],
}

impl SelfService {
    pub fn new(lifecycle: Arc<Lifecycle>, verifier: Arc<Verifier>, clock: Arc<dyn Clock>) -> Self {
        SelfService {
            lifecycle,
            verifier,
            clock,
            renew_scope: [SELF_RENEW_SCOPE.to_owned()],
        }
    }

    /// Verifies the call's bearer token, requiring `scopes`.
    async fn check<T>(
        &self,
        request: &Request<T>,
        scopes: &[String],
    ) -> Result<Verification, Error> {
        let token = super::authorization(request)
            .and_then(bearer_credential)
            .ok_or(Error::Unauthenticated)?;
        let checked = self.verifier.verify(token, scopes).await?;
        checked.record_in_span();
        Ok(checked)
    }

    /// The id of the call's bearer token, if it is valid.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Uuid, Error> {
        match self.check(request, &[]).await? {
            Verification {
                verdict: Verdict::Valid,
                token: Some(known),
                ..
            } => Ok(known.snapshot.id),
            _ => Err(Error::Unauthenticated),
        }
    }

    fn token(&self, record: &crate::token::TokenRecord) -> pb::Token {
        convert::token(record, self.clock.now())
    }
}

#[tonic::async_trait]
impl TokenSelf for SelfService {
    async fn lookup_self(
        &self,
        request: Request<pb::LookupSelfRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            let id = self.authenticate(&request).await?;
            let record = self.lifecycle.get(id).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }

    async fn renew_self(
        &self,
        request: Request<pb::RenewSelfRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        answer(async {
            let grace_period = request
                .get_ref()
                .grace_period
                .as_ref()
                .map(|d| convert::non_negative_duration("grace_period", d))
                .transpose()?
                .unwrap_or_default();
            let checked = self.check(&request, &self.renew_scope).await?;
            let Some(known) = checked.token else {
                return Err(Error::Unauthenticated);
            };
            if checked.verdict == Verdict::InsufficientScope {
                return Err(Error::PermissionDenied(SELF_RENEW_SCOPE));
            }
            // A token its renewal revoked or expired is still a replaced token
            // presented for renewal: the lifecycle judges it.
            let (record, secret) = self
                .lifecycle
                .renew_self(
                    known.snapshot.id,
                    grace_period,
                    checked.verdict == Verdict::Valid,
                )
                .await?;
            Ok(Response::new(pb::CreateTokenResponse {
                token: Some(self.token(&record)),
                secret: secret.expose().to_owned(),
            }))
        })
        .await
    }

    async fn revoke_self(
        &self,
        request: Request<pb::RevokeSelfRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            let id = self.authenticate(&request).await?;
            let reason = match request.get_ref().reason.as_str() {
                "" => SELF_REVOKE_REASON,
                reason => reason,
            };
            let record = self.lifecycle.revoke(id, reason, Actor::Token(id)).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }
}
