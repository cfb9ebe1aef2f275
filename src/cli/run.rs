//! Running a client command: connect, call, print, and the exit status.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use latchkey_client::{Client, Error, pb};

use super::render;
use super::{
    ClientArgs, ClientCommand, EventsArgs, Expiry, LimitArgs, Output, OwnerCommand, Status,
    TokenCommand,
};
use latchkey_core::limit::RateLimit;

/// Runs `command` against the server `args` name; prints the answer to
/// stdout and any error to stderr. Exit status 0 on success; 1 on an error,
/// or when `verify` finds the token not valid.
pub async fn run(args: ClientArgs, command: ClientCommand) -> ExitCode {
    match execute(&args, command).await {
        Ok(code) => code,
        Err(error) => {
            let mut out = std::io::stderr().lock();
            let _ = writeln!(out, "error: {error}");
            if let Some(Error::Status(status)) = error.downcast_ref::<Error>()
                && status.code() == tonic::Code::Unauthenticated
            {
                let _ = writeln!(
                    out,
                    "hint: give the admin credential in LATCHKEY_TOKEN (or --token)"
                );
            }
            ExitCode::FAILURE
        }
    }
}

async fn execute(args: &ClientArgs, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let client = connect(args).await?;
    let json = args.output == Output::Json;
    let out = match command {
        ClientCommand::Token(command) => token(&client, command, json).await?,
        ClientCommand::Owner(command) => owner(&client, command, json).await?,
        ClientCommand::Events(events) => list_events(&client, events, json).await?,
        ClientCommand::Watch { owner, after } => {
            watch(&client, owner, after, json).await?;
            return Ok(ExitCode::SUCCESS);
        }
        ClientCommand::Keys => {
            let keys = client
                .admin()
                .list_keys(pb::ListKeysRequest {})
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            pick(json, &keys, "latchkey.v1.ListKeysResponse", || {
                render::keys(&keys.keys)
            })
        }
        ClientCommand::Verify { scopes } => {
            let token = read_token()?;
            let answer = client.verify(&token, &scopes).await?;
            print(&pick(json, &answer, "latchkey.v1.VerifyResponse", || {
                render::verdict(&answer)
            }))?;
            return Ok(if answer.verdict() == pb::Verdict::Valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    };
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
    };
    let mut builder = Client::builder(args.addr.clone()).retries(0, std::time::Duration::ZERO);
    if let Some(token) = &args.token {
        builder = builder.credential(token.clone());
    }
    if let Some(path) = &args.ca_cert {
        builder = builder.ca_certificate(read(path, "--ca-cert")?);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        builder = builder.identity(read(cert, "--client-cert")?, read(key, "--client-key")?);
    }
    Ok(builder.connect().await?)
}

/// The JSON of `message` or the table `human` makes.
fn pick<M: prost::Message>(
    json: bool,
    message: &M,
    name: &str,
    human: impl FnOnce() -> String,
) -> String {
    if json {
        render::json(message, name)
    } else {
        human()
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The token to verify, from stdin (never an argument: `ps` and shell
/// history would show it), without surrounding whitespace.
fn read_token() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut token = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut token)
        .map_err(|e| anyhow::anyhow!("reading the token from stdin: {e}"))?;
    let trimmed = token.trim();
    if trimmed.is_empty() {
        anyhow::bail!("no token on stdin (pipe it in: latchkey verify < token.txt)");
    }
    Ok(zeroize::Zeroizing::new(trimmed.to_owned()))
}

/// Asks `question` on the terminal; without one, refuses unless `yes`.
fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not deleting without confirmation: stdin is not a terminal (pass --yes)");
    }
    eprint!("{question} This cannot be undone. [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        anyhow::bail!("not deleted")
    }
}

fn expiration_create(
    expiry: Expiry,
) -> anyhow::Result<Option<pb::create_token_request::Expiration>> {
    use pb::create_token_request::Expiration;
    Ok(match (expiry.ttl, expiry.expires) {
        (Some(ttl), _) => Some(Expiration::Ttl(proto_duration(ttl, "--ttl")?)),
        (_, Some(t)) => Some(Expiration::ExpireTime(t.into())),
        _ => None,
    })
}

fn expiration_renew(expiry: Expiry) -> anyhow::Result<Option<pb::renew_token_request::Expiration>> {
    use pb::renew_token_request::Expiration;
    Ok(match (expiry.ttl, expiry.expires) {
        (Some(ttl), _) => Some(Expiration::Ttl(proto_duration(ttl, "--ttl")?)),
        (_, Some(t)) => Some(Expiration::ExpireTime(t.into())),
        _ => None,
    })
}

fn credits_message(limits: &LimitArgs) -> anyhow::Result<Option<pb::Credits>> {
    limits
        .credits
        .map(|remaining| {
            Ok(pb::Credits {
                remaining,
                refill: limits
                    .refill
                    .map(|r| {
                        Ok::<_, anyhow::Error>(pb::CreditsRefill {
                            amount: i64::try_from(r.amount)?,
                            interval: Some(proto_duration(r.interval, "--refill")?),
                        })
                    })
                    .transpose()?,
            })
        })
        .transpose()
}

fn rate_limits_message(limits: Vec<RateLimit>) -> anyhow::Result<Vec<pb::RateLimit>> {
    limits
        .into_iter()
        .map(|l| {
            Ok(pb::RateLimit {
                name: l.name,
                limit: i64::try_from(l.limit)?,
                window: Some(proto_duration(l.window, "--rate-limit")?),
            })
        })
        .collect()
}

fn proto_duration(d: std::time::Duration, flag: &str) -> anyhow::Result<prost_types::Duration> {
    prost_types::Duration::try_from(d).map_err(|_| anyhow::anyhow!("{flag}: too long"))
}

async fn token(client: &Client, command: TokenCommand, json: bool) -> anyhow::Result<String> {
    let mut admin = client.admin();
    let fail = |s| client.error(s);
    let detail = |t: pb::Token| pick(json, &t, "latchkey.v1.Token", || render::token(&t));
    let created = |c: pb::CreateTokenResponse| {
        pick(json, &c, "latchkey.v1.CreateTokenResponse", || {
            render::created(&c)
        })
    };
    Ok(match command {
        TokenCommand::Create {
            owner,
            name,
            description,
            scopes,
            metadata,
            expiry,
            idle_timeout,
            limits,
        } => {
            let request = pb::CreateTokenRequest {
                owner,
                name,
                description,
                scopes,
                metadata: metadata.into_iter().collect(),
                expiration: expiration_create(expiry)?,
                idle_timeout: idle_timeout
                    .map(|d| proto_duration(d, "--idle-timeout"))
                    .transpose()?,
                credits: credits_message(&limits)?,
                rate_limits: rate_limits_message(limits.rate_limits)?,
            };
            created(
                admin
                    .create_token(request)
                    .await
                    .map_err(fail)?
                    .into_inner(),
            )
        }
        TokenCommand::List {
            owner,
            statuses,
            expires_before,
        } => {
            let statuses: Vec<i32> = statuses
                .into_iter()
                .map(|s| token_status(s) as i32)
                .collect();
            let mut all = pb::ListTokensResponse::default();
            loop {
                let request = pb::ListTokensRequest {
                    owner: owner.clone().unwrap_or_default(),
                    statuses: statuses.clone(),
                    page_size: 1000,
                    page_token: std::mem::take(&mut all.next_page_token),
                    expire_before: expires_before.map(Into::into),
                };
                let page = admin.list_tokens(request).await.map_err(fail)?.into_inner();
                all.tokens.extend(page.tokens);
                if page.next_page_token.is_empty() {
                    break;
                }
                all.next_page_token = page.next_page_token;
            }
            pick(json, &all, "latchkey.v1.ListTokensResponse", || {
                render::tokens(&all.tokens)
            })
        }
        TokenCommand::Usage { id, days } => {
            let usage = admin
                .get_token_usage(pb::GetTokenUsageRequest { id, days })
                .await
                .map_err(fail)?
                .into_inner();
            pick(json, &usage, "latchkey.v1.GetTokenUsageResponse", || {
                render::usage(&usage.days, days)
            })
        }
        TokenCommand::Get { id } => detail(
            admin
                .get_token(pb::GetTokenRequest { id })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        TokenCommand::Update {
            id,
            name,
            description,
            metadata,
            limits,
            no_rate_limits,
            unlimited,
        } => {
            let mut paths = Vec::new();
            let mut token = pb::Token {
                id,
                ..Default::default()
            };
            if let Some(name) = name {
                token.name = name;
                paths.push("name".to_owned());
            }
            if let Some(description) = description {
                token.description = description;
                paths.push("description".to_owned());
            }
            if !metadata.is_empty() {
                token.metadata = metadata.into_iter().collect();
                paths.push("metadata".to_owned());
            }
            if no_rate_limits || !limits.rate_limits.is_empty() {
                paths.push("rate_limits".to_owned());
            }
            if unlimited || limits.credits.is_some() {
                paths.push("credits".to_owned());
            }
            token.credits = credits_message(&limits)?;
            token.rate_limits = rate_limits_message(limits.rate_limits)?;
            if paths.is_empty() {
                anyhow::bail!(
                    "nothing to update: give --name, --description, --meta, --rate-limit, \
                     --no-rate-limits, --credits or --unlimited"
                );
            }
            let request = pb::UpdateTokenRequest {
                token: Some(token),
                update_mask: Some(prost_types::FieldMask { paths }),
            };
            detail(
                admin
                    .update_token(request)
                    .await
                    .map_err(fail)?
                    .into_inner(),
            )
        }
        TokenCommand::Revoke { id, reason } => detail(
            admin
                .revoke_token(pb::RevokeTokenRequest { id, reason })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        TokenCommand::Restore { id } => detail(
            admin
                .restore_token(pb::RestoreTokenRequest { id })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        TokenCommand::Delete { id, yes } => {
            if !yes && std::io::stdin().is_terminal() {
                let token = admin
                    .get_token(pb::GetTokenRequest { id: id.clone() })
                    .await
                    .map_err(fail)?
                    .into_inner();
                confirm(
                    &format!("Delete token {} ({})?", token.id, render::text(&token.name)),
                    false,
                )?;
            } else {
                confirm("", yes)?;
            }
            admin
                .delete_token(pb::DeleteTokenRequest { id: id.clone() })
                .await
                .map_err(fail)?;
            // google.protobuf.Empty, in proto3 JSON.
            if json {
                "{}\n".to_owned()
            } else {
                format!("Deleted token {id}\n")
            }
        }
        TokenCommand::Renew { id, grace, expiry } => {
            let request = pb::RenewTokenRequest {
                id,
                grace_period: grace.map(|d| proto_duration(d, "--grace")).transpose()?,
                expiration: expiration_renew(expiry)?,
            };
            created(admin.renew_token(request).await.map_err(fail)?.into_inner())
        }
    })
}

fn token_status(status: Status) -> pb::TokenStatus {
    match status {
        Status::Active => pb::TokenStatus::Active,
        Status::Revoked => pb::TokenStatus::Revoked,
        Status::Expired => pb::TokenStatus::Expired,
        Status::Inactive => pb::TokenStatus::Inactive,
    }
}

async fn owner(client: &Client, command: OwnerCommand, json: bool) -> anyhow::Result<String> {
    let mut admin = client.admin();
    let fail = |s| client.error(s);
    let detail = |o: pb::Owner| pick(json, &o, "latchkey.v1.Owner", || render::owner(&o));
    Ok(match command {
        OwnerCommand::Get { owner } => detail(
            admin
                .get_owner(pb::GetOwnerRequest { owner })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        OwnerCommand::Disable { owner, reason } => detail(
            admin
                .disable_owner(pb::DisableOwnerRequest { owner, reason })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        OwnerCommand::Enable { owner } => detail(
            admin
                .enable_owner(pb::EnableOwnerRequest { owner })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        OwnerCommand::Limits { owner, rate_limits } => detail(
            admin
                .set_owner_limits(pb::SetOwnerLimitsRequest {
                    owner,
                    rate_limits: rate_limits_message(rate_limits)?,
                })
                .await
                .map_err(fail)?
                .into_inner(),
        ),
        OwnerCommand::ConsoleLink {
            owner,
            ttl,
            return_url,
        } => {
            let link = admin
                .create_console_link(pb::CreateConsoleLinkRequest {
                    owner,
                    ttl: ttl.map(|d| proto_duration(d, "--ttl")).transpose()?,
                    return_url,
                })
                .await
                .map_err(fail)?
                .into_inner();
            pick(json, &link, "latchkey.v1.CreateConsoleLinkResponse", || {
                render::console_link(&link)
            })
        }
        OwnerCommand::DeleteTokens { owner, yes } => {
            confirm(
                &format!("Delete every token of {}?", render::text(&owner)),
                yes,
            )?;
            let answer = admin
                .delete_owner_tokens(pb::DeleteOwnerTokensRequest {
                    owner: owner.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            pick(
                json,
                &answer,
                "latchkey.v1.DeleteOwnerTokensResponse",
                || {
                    format!(
                        "Deleted {} tokens of {}\n",
                        answer.deleted_count,
                        render::text(&owner)
                    )
                },
            )
        }
    })
}

/// Prints each message of WatchEvents as it comes, until the stream ends.
async fn watch(
    client: &Client,
    owner: Option<String>,
    after: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let request = pb::WatchEventsRequest {
        after: after.unwrap_or_default(),
        owner: owner.unwrap_or_default(),
    };
    let mut stream = client
        .admin()
        .watch_events(request)
        .await
        .map_err(|s| client.error(s))?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(|s| client.error(s))? {
        if json {
            print(&render::json_line(
                &message,
                "latchkey.v1.WatchEventsResponse",
            ))?;
        } else if let Some(event) = &message.event {
            print(&render::watched_event(event, &message.cursor))?;
        }
    }
    Ok(())
}

async fn list_events(client: &Client, args: EventsArgs, json: bool) -> anyhow::Result<String> {
    let mut admin = client.admin();
    let mut all = pb::ListTokenEventsResponse::default();
    loop {
        let request = pb::ListTokenEventsRequest {
            token_id: args.token_id.clone().unwrap_or_default(),
            owner: args.owner.clone().unwrap_or_default(),
            page_size: 1000,
            page_token: std::mem::take(&mut all.next_page_token),
        };
        let page = admin
            .list_token_events(request)
            .await
            .map_err(|s| client.error(s))?
            .into_inner();
        all.events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        all.next_page_token = page.next_page_token;
    }
    Ok(pick(
        json,
        &all,
        "latchkey.v1.ListTokenEventsResponse",
        || render::events(&all.events),
    ))
}
