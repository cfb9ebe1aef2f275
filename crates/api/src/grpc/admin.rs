//! `latchkey.v1.TokenAdmin`: authenticates each call, converts the request,
//! calls the lifecycle, converts the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::answer;
use super::convert;
use super::pb::{self, token_admin_server::TokenAdmin};
use super::watch::{EventStream, Watchers, event_stream};
use crate::audit::EventFilter;
use crate::auth::{Actor, AdminAuth};
use crate::clock::Clock;
use crate::console::ConsoleSessions;
use crate::error::Error;
use crate::lifecycle::{EventQuery, Lifecycle, ListQuery, NewToken, Renewal};
use crate::owner::{OwnerRecord, TokenCounts};
use crate::query::{ListFilter, TokenPatch};

pub struct AdminService {
    lifecycle: Arc<Lifecycle>,
    auth: Arc<AdminAuth>,
    watchers: Watchers,
    clock: Arc<dyn Clock>,
    /// The configured HMAC keys' ids, the primary first.
    key_ids: Vec<String>,
    /// The console's sessions and the base of its links
    /// (`console.public_url`), when the console is served.
    console: Option<(Arc<ConsoleSessions>, String)>,
}

impl AdminService {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        auth: Arc<AdminAuth>,
        watchers: Watchers,
        clock: Arc<dyn Clock>,
        key_ids: Vec<String>,
    ) -> Self {
        AdminService {
            lifecycle,
            auth,
            watchers,
            clock,
            key_ids,
            console: None,
        }
    }

    /// Makes console links (CreateConsoleLink) under `public_url`, such as
    /// `https://tokens.example.com`.
    pub fn with_console_links(
        mut self,
        sessions: Arc<ConsoleSessions>,
        public_url: String,
    ) -> Self {
        self.console = Some((sessions, public_url.trim_end_matches('/').to_owned()));
        self
    }

    async fn authorize<T>(&self, request: &Request<T>) -> Result<Actor, Error> {
        self.auth.authorize(super::authorization(request)).await
    }

    fn token(&self, record: &crate::token::TokenRecord) -> pb::Token {
        convert::token(record, self.clock.now())
    }
}

#[tonic::async_trait]
impl TokenAdmin for AdminService {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let credential = super::authorization(&request).map(str::to_owned);
            let req = request.into_inner();
            let watcher = self
                .watchers
                .watching
                .watch(&req.after, (!req.owner.is_empty()).then_some(req.owner))
                .await?;
            Ok(Response::new(event_stream(
                watcher,
                Arc::clone(&self.auth),
                credential,
                self.watchers.stop.clone(),
            )))
        })
        .await
    }
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.into_inner();
            let expiry = convert::expiry(req.expiration.as_ref().map(Into::into))?
                .unwrap_or(crate::lifecycle::Expiry::Never);
            let idle_timeout = req
                .idle_timeout
                .as_ref()
                .map(|d| convert::positive_duration("idle_timeout", d))
                .transpose()?;
            let (record, secret) = self
                .lifecycle
                .create(
                    NewToken {
                        owner: req.owner,
                        name: req.name,
                        description: req.description,
                        scopes: req.scopes,
                        metadata: req.metadata,
                        expiry,
                        idle_timeout,
                        credits: req
                            .credits
                            .as_ref()
                            .map(|c| convert::credits_from("credits", c))
                            .transpose()?,
                        rate_limits: convert::rate_limits_from("rate_limits", &req.rate_limits)?,
                    },
                    actor,
                )
                .await?;
            Ok(Response::new(pb::CreateTokenResponse {
                token: Some(self.token(&record)),
                secret: secret.expose().to_owned(),
            }))
        })
        .await
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let id = convert::id("id", &request.get_ref().id)?;
            let record = self.lifecycle.get(id).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let req = request.into_inner();
            let statuses = req
                .statuses
                .iter()
                .enumerate()
                .map(|(i, s)| convert::status_from(&format!("statuses[{i}]"), *s))
                .collect::<Result<Vec<_>, _>>()?;
            let page = self
                .lifecycle
                .list(ListQuery {
                    filter: ListFilter {
                        owner: (!req.owner.is_empty()).then_some(req.owner),
                        statuses,
                        expire_before: req
                            .expire_before
                            .as_ref()
                            .map(|t| convert::timestamp_from("expire_before", t))
                            .transpose()?,
                    },
                    page_size: req.page_size,
                    page_token: req.page_token,
                })
                .await?;
            let now = self.clock.now();
            Ok(Response::new(pb::ListTokensResponse {
                tokens: page.items.iter().map(|t| convert::token(t, now)).collect(),
                next_page_token: page.next_page_token,
            }))
        })
        .await
    }

    async fn update_token(
        &self,
        request: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.into_inner();
            let token = req
                .token
                .ok_or_else(|| Error::invalid("token", "is required"))?;
            let id = convert::id("token.id", &token.id)?;
            let patch = patch_from_mask(token, req.update_mask)?;
            let record = self.lifecycle.update(id, patch, actor).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.get_ref();
            let id = convert::id("id", &req.id)?;
            let record = self.lifecycle.revoke(id, &req.reason, actor).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }

    async fn restore_token(
        &self,
        request: Request<pb::RestoreTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let id = convert::id("id", &request.get_ref().id)?;
            let record = self.lifecycle.restore(id, actor).await?;
            Ok(Response::new(self.token(&record)))
        })
        .await
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<()>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let id = convert::id("id", &request.get_ref().id)?;
            self.lifecycle.delete(id, actor).await?;
            Ok(Response::new(()))
        })
        .await
    }

    async fn renew_token(
        &self,
        request: Request<pb::RenewTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.into_inner();
            let id = convert::id("id", &req.id)?;
            let grace_period = req
                .grace_period
                .as_ref()
                .map(|d| convert::non_negative_duration("grace_period", d))
                .transpose()?
                .unwrap_or_default();
            let expiry = convert::expiry(req.expiration.as_ref().map(Into::into))?;
            let (record, secret) = self
                .lifecycle
                .renew(
                    Renewal {
                        id,
                        grace_period,
                        expiry,
                    },
                    actor,
                )
                .await?;
            Ok(Response::new(pb::CreateTokenResponse {
                token: Some(self.token(&record)),
                secret: secret.expose().to_owned(),
            }))
        })
        .await
    }

    async fn disable_owner(
        &self,
        request: Request<pb::DisableOwnerRequest>,
    ) -> Result<Response<pb::Owner>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.get_ref();
            let owner = self
                .lifecycle
                .disable_owner(&req.owner, &req.reason, actor)
                .await?;
            Ok(Response::new(owner_message(owner)))
        })
        .await
    }

    async fn enable_owner(
        &self,
        request: Request<pb::EnableOwnerRequest>,
    ) -> Result<Response<pb::Owner>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let owner = self
                .lifecycle
                .enable_owner(&request.get_ref().owner, actor)
                .await?;
            Ok(Response::new(owner_message(owner)))
        })
        .await
    }

    async fn set_owner_limits(
        &self,
        request: Request<pb::SetOwnerLimitsRequest>,
    ) -> Result<Response<pb::Owner>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let req = request.get_ref();
            let limits = convert::rate_limits_from("rate_limits", &req.rate_limits)?;
            let owner = self
                .lifecycle
                .set_owner_limits(&req.owner, &limits, actor)
                .await?;
            Ok(Response::new(owner_message(owner)))
        })
        .await
    }

    async fn get_token_usage(
        &self,
        request: Request<pb::GetTokenUsageRequest>,
    ) -> Result<Response<pb::GetTokenUsageResponse>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let req = request.get_ref();
            let id = convert::id("id", &req.id)?;
            // Negative is as far out of range as too many.
            let days = u32::try_from(req.days).unwrap_or(u32::MAX);
            let days = self.lifecycle.usage(id, days).await?;
            Ok(Response::new(pb::GetTokenUsageResponse {
                days: days.iter().map(convert::usage_day).collect(),
            }))
        })
        .await
    }

    async fn get_owner(
        &self,
        request: Request<pb::GetOwnerRequest>,
    ) -> Result<Response<pb::Owner>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let owner = self.lifecycle.get_owner(&request.get_ref().owner).await?;
            Ok(Response::new(owner_message(owner)))
        })
        .await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let keys = self
                .lifecycle
                .keys(&self.key_ids)
                .await?
                .into_iter()
                .map(|k| pb::KeyUsage {
                    id: k.id,
                    primary: k.primary,
                    configured: k.configured,
                    token_count: i64::try_from(k.tokens).unwrap_or(i64::MAX),
                })
                .collect();
            Ok(Response::new(pb::ListKeysResponse { keys }))
        })
        .await
    }

    async fn delete_owner_tokens(
        &self,
        request: Request<pb::DeleteOwnerTokensRequest>,
    ) -> Result<Response<pb::DeleteOwnerTokensResponse>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let deleted = self
                .lifecycle
                .delete_owner_tokens(&request.get_ref().owner, actor)
                .await?;
            Ok(Response::new(pb::DeleteOwnerTokensResponse {
                deleted_count: i64::try_from(deleted).unwrap_or(i64::MAX),
            }))
        })
        .await
    }

    async fn list_token_events(
        &self,
        request: Request<pb::ListTokenEventsRequest>,
    ) -> Result<Response<pb::ListTokenEventsResponse>, Status> {
        answer(async {
            self.authorize(&request).await?;
            let req = request.into_inner();
            let token_id = match req.token_id.as_str() {
                "" => None,
                id => Some(convert::id("token_id", id)?),
            };
            let page = self
                .lifecycle
                .list_events(EventQuery {
                    filter: EventFilter {
                        token_id,
                        owner: (!req.owner.is_empty()).then_some(req.owner),
                    },
                    page_size: req.page_size,
                    page_token: req.page_token,
                })
                .await?;
            Ok(Response::new(pb::ListTokenEventsResponse {
                events: page.items.iter().map(convert::event).collect(),
                next_page_token: page.next_page_token,
            }))
        })
        .await
    }

    async fn create_console_link(
        &self,
        request: Request<pb::CreateConsoleLinkRequest>,
    ) -> Result<Response<pb::CreateConsoleLinkResponse>, Status> {
        answer(async {
            let actor = self.authorize(&request).await?;
            let Some((sessions, public_url)) = &self.console else {
                return Err(Error::FailedPrecondition(
                    "the console is off: set http_addr (LATCHKEY_HTTP_ADDR) to serve it".into(),
                ));
            };
            let req = request.into_inner();
            let ttl = req
                .ttl
                .as_ref()
                .map(|d| convert::positive_duration("ttl", d))
                .transpose()?;
            let (secret, expire_time) = sessions
                .create_link(actor, &req.owner, ttl, &req.return_url)
                .await?;
            Ok(Response::new(pb::CreateConsoleLinkResponse {
                url: format!("{public_url}/console/link/{}", secret.as_str()),
                expire_time: Some(convert::timestamp(expire_time)),
            }))
        })
        .await
    }
}

fn owner_message((record, counts): (OwnerRecord, TokenCounts)) -> pb::Owner {
    convert::owner(&record, &counts)
}

/// The fields of `token` that `mask` names. With no mask (or an empty one),
/// every updatable field that is set in `token`, as AIP-134 prescribes.
fn credits_patch(
    credits: Option<&pb::Credits>,
) -> Result<Option<latchkey_core::limit::Credits>, Error> {
    credits
        .map(|c| convert::credits_from("token.credits", c))
        .transpose()
}

fn patch_from_mask(
    token: pb::Token,
    mask: Option<prost_types::FieldMask>,
) -> Result<TokenPatch, Error> {
    let paths = match mask {
        Some(m) if !m.paths.is_empty() => m.paths,
        _ => {
            let mut implied = Vec::new();
            if !token.name.is_empty() {
                implied.push("name".to_owned());
            }
            if !token.description.is_empty() {
                implied.push("description".to_owned());
            }
            if !token.metadata.is_empty() {
                implied.push("metadata".to_owned());
            }
            if !token.rate_limits.is_empty() {
                implied.push("rate_limits".to_owned());
            }
            if token.credits.is_some() {
                implied.push("credits".to_owned());
            }
            if implied.is_empty() {
                return Err(Error::invalid("update_mask", "names no field to update"));
            }
            implied
        }
    };
    let mut patch = TokenPatch::default();
    for path in &paths {
        match path.as_str() {
            "name" => patch.name = Some(token.name.clone()),
            "description" => patch.description = Some(token.description.clone()),
            "metadata" => patch.metadata = Some(token.metadata.clone()),
            "rate_limits" => {
                patch.rate_limits = Some(convert::rate_limits_from(
                    "token.rate_limits",
                    &token.rate_limits,
                )?);
            }
            "credits" => patch.credits = Some(credits_patch(token.credits.as_ref())?),
            "*" => {
                patch.name = Some(token.name.clone());
                patch.description = Some(token.description.clone());
                patch.metadata = Some(token.metadata.clone());
                patch.rate_limits = Some(convert::rate_limits_from(
                    "token.rate_limits",
                    &token.rate_limits,
                )?);
                patch.credits = Some(credits_patch(token.credits.as_ref())?);
            }
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "cannot update {other:?}; updatable fields are name, description, metadata, rate_limits and credits"
                    ),
                ));
            }
        }
    }
    Ok(patch)
}
