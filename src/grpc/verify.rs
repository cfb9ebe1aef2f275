//! `latchkey.v1.TokenVerify`: every verdict is an OK answer; errors are for bad
//! requests and for an unreachable database.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{self, token_verify_server::TokenVerify};
use crate::verifier::Verifier;

pub struct VerifyService {
    verifier: Arc<Verifier>,
}

impl VerifyService {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        VerifyService { verifier }
    }
}

#[tonic::async_trait]
impl TokenVerify for VerifyService {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let req = request.get_ref();
        let v = self
            .verifier
            .verify(&req.token, &req.required_scopes)
            .await?;
        Ok(Response::new(pb::VerifyResponse {
            verdict: convert::verdict(v.verdict) as i32,
            token: v.token.map(|s| convert::token(&s.token, v.at)),
            missing_scopes: v.missing_scopes,
        }))
    }
}
