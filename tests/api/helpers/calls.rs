//! Typed calls on a [`TestApp`]: each TokenAdmin and TokenVerify RPC as a
//! test writes it, with the admin credential.

use super::*;

impl TestApp {
    /// `msg` with the static admin credential attached.
    pub fn admin_request<T>(&self, msg: T) -> Request<T> {
        with_bearer(msg, ADMIN_TOKEN)
    }

    pub async fn create(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        self.admin
            .clone()
            .create_token(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a token for `owner` with `scopes`; returns it and its secret.
    pub async fn create_token(&self, owner: &str, scopes: &[&str]) -> (pb::Token, String) {
        let created = self
            .create(pb::CreateTokenRequest {
                owner: owner.to_owned(),
                name: format!("{owner} token"),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .expect("CreateToken");
        (created.token.expect("token"), created.secret)
    }

    pub async fn verify(&self, secret: &str, required: &[&str]) -> pb::VerifyResponse {
        self.try_verify(secret, required).await.expect("Verify")
    }

    pub async fn try_verify(
        &self,
        secret: &str,
        required: &[&str],
    ) -> Result<pb::VerifyResponse, Status> {
        self.verifier
            .clone()
            .verify(pb::VerifyRequest {
                token: secret.to_owned(),
                required_scopes: required.iter().map(|s| (*s).to_owned()).collect(),
                cost: None,
                client: None,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Starts a Verify that misses the cache and returns once it is paused
    /// in the miss gate, having read the database but not yet cached what it
    /// read. [`MissGate::release`] lets it finish.
    pub async fn start_paused_verify(
        &self,
        secret: &str,
    ) -> JoinHandle<Result<pb::VerifyResponse, Status>> {
        self.gate.arm();
        let mut client = self.verifier.clone();
        let request = pb::VerifyRequest {
            token: secret.to_owned(),
            required_scopes: vec![],
            cost: None,
            client: None,
        };
        let call =
            tokio::spawn(async move { client.verify(request).await.map(|r| r.into_inner()) });
        self.gate.reached().await;
        call
    }

    /// Creates a token for `owner` that expires `secs` from now.
    pub async fn create_with_ttl(&self, owner: &str, secs: i64) -> pb::CreateTokenResponse {
        self.create(pb::CreateTokenRequest {
            owner: owner.to_owned(),
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(secs))),
            ..Default::default()
        })
        .await
        .expect("CreateToken")
    }

    pub async fn get(&self, id: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .get_token(self.admin_request(pb::GetTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list(&self, req: pb::ListTokensRequest) -> Result<pb::ListTokensResponse, Status> {
        self.admin
            .clone()
            .list_tokens(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Every token, every page, newest first.
    pub async fn list_all(&self) -> Vec<pb::Token> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list(pb::ListTokensRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("ListTokens");
            all.extend(page.tokens);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn revoke(&self, id: &str, reason: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .revoke_token(self.admin_request(pb::RevokeTokenRequest {
                id: id.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn restore(&self, id: &str) -> Result<pb::Token, Status> {
        self.admin
            .clone()
            .restore_token(self.admin_request(pb::RestoreTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete(&self, id: &str) -> Result<(), Status> {
        self.admin
            .clone()
            .delete_token(self.admin_request(pb::DeleteTokenRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn update(&self, token: pb::Token, paths: &[&str]) -> Result<pb::Token, Status> {
        let update_mask = (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        });
        self.admin
            .clone()
            .update_token(self.admin_request(pb::UpdateTokenRequest {
                token: Some(token),
                update_mask,
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn renew(
        &self,
        req: pb::RenewTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        self.admin
            .clone()
            .renew_token(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Renews `id` with no grace period and the old lifetime.
    pub async fn try_renew(&self, id: &str) -> Result<pb::CreateTokenResponse, Status> {
        self.renew(pb::RenewTokenRequest {
            id: id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Renews `id` with a grace period of `grace_secs` (0: none).
    pub async fn renew_with_grace(&self, id: &str, grace_secs: i64) -> (pb::Token, String) {
        let renewed = self
            .renew(pb::RenewTokenRequest {
                id: id.to_owned(),
                grace_period: (grace_secs > 0).then(|| duration(grace_secs)),
                expiration: None,
            })
            .await
            .expect("RenewToken");
        (renewed.token.expect("token"), renewed.secret)
    }

    pub async fn disable_owner(&self, owner: &str, reason: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .disable_owner(self.admin_request(pb::DisableOwnerRequest {
                owner: owner.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn enable_owner(&self, owner: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .enable_owner(self.admin_request(pb::EnableOwnerRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_owner(&self, owner: &str) -> Result<pb::Owner, Status> {
        self.admin
            .clone()
            .get_owner(self.admin_request(pb::GetOwnerRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete_owner_tokens(&self, owner: &str) -> Result<i64, Status> {
        self.admin
            .clone()
            .delete_owner_tokens(self.admin_request(pb::DeleteOwnerTokensRequest {
                owner: owner.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().deleted_count)
    }

    pub async fn list_events(
        &self,
        req: pb::ListTokenEventsRequest,
    ) -> Result<pb::ListTokenEventsResponse, Status> {
        self.admin
            .clone()
            .list_token_events(self.admin_request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Every event for `token_id` and `owner` (either may be empty), newest
    /// first.
    pub async fn events(&self, token_id: &str, owner: &str) -> Vec<pb::TokenEvent> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_events(pb::ListTokenEventsRequest {
                    token_id: token_id.to_owned(),
                    owner: owner.to_owned(),
                    page_size: 1000,
                    page_token,
                })
                .await
                .expect("ListTokenEvents");
            all.extend(page.events);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// The kinds of every event of `token_id`, oldest first.
    pub async fn event_kinds(&self, token_id: &str) -> Vec<pb::EventKind> {
        let mut kinds: Vec<_> = self
            .events(token_id, "")
            .await
            .iter()
            .map(|e| e.kind())
            .collect();
        kinds.reverse();
        kinds
    }
}
