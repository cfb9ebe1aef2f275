//! Every request a client can send, decoded from arbitrary bytes and sent
//! to a real server (SQLite; the admin credential attached, or for TokenSelf
//! a new token of the caller's own): no panic, and
//! every refusal a client error, never INTERNAL or UNKNOWN.
#![no_main]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use latchkey::config::Sensitive;
use latchkey::grpc::pb::{
    self, token_admin_client::TokenAdminClient, token_self_client::TokenSelfClient,
    token_verify_client::TokenVerifyClient,
};
use latchkey::{Application, Settings};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN_TOKEN: &str = "fuzz-admin-credential-0123456789abcdef";

struct Server {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let channel = runtime.block_on(async {
        let settings = Settings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: format!("sqlite://{}/fuzz.db?mode=rwc", dir.path().display()),
            hmac_key: Some(Sensitive::new("00".repeat(32))),
            admin_token: Some(Sensitive::new(ADMIN_TOKEN)),
            ..Settings::default()
        };
        let app = Application::build(settings).await.expect("server starts");
        let addr = app.local_addr();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connects")
    });
    Server {
        runtime,
        channel,
        _dir: dir,
    }
});

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().unwrap(),
    );
    request
}

fn admin<T>(message: T) -> Request<T> {
    bearer(ADMIN_TOKEN, message)
}

/// A new token allowed to renew itself, for one TokenSelf call: each for an
/// owner of its own, so that no creation limit is reached.
async fn own_token(admin_client: &mut TokenAdminClient<Channel>) -> String {
    static OWNERS: AtomicU64 = AtomicU64::new(0);
    let owner = OWNERS.fetch_add(1, Ordering::Relaxed);
    admin_client
        .create_token(admin(pb::CreateTokenRequest {
            owner: format!("fuzz-device-{owner}"),
            name: "device".into(),
            scopes: vec!["latchkey:self-renew".into()],
            ..Default::default()
        }))
        .await
        .expect("an admin creates a token")
        .into_inner()
        .secret
}

/// Decodes a TokenSelf request and sends it with a new token of its own.
macro_rules! call_self {
    ($admin:expr, $client:expr, $method:ident, $message:ty, $bytes:expr) => {{
        let Ok(message) = <$message>::decode($bytes) else {
            return None;
        };
        let token = own_token(&mut $admin).await;
        $client.$method(bearer(&token, message)).await.err()
    }};
}

macro_rules! call {
    ($client:expr, $method:ident, $message:ty, $bytes:expr) => {{
        let Ok(message) = <$message>::decode($bytes) else {
            return None;
        };
        $client.$method(admin(message)).await.err()
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let server = &*SERVER;
    let failure = server.runtime.block_on(async {
        let mut a = TokenAdminClient::new(server.channel.clone());
        let mut v = TokenVerifyClient::new(server.channel.clone());
        let mut s = TokenSelfClient::new(server.channel.clone());
        // The top selector values go to TokenSelf, leaving the rest (and the
        // corpus built before it) mapped as they were.
        let status: Option<tonic::Status> = match which {
            240..=244 => call_self!(a, s, renew_self, pb::RenewSelfRequest, bytes),
            245..=249 => call_self!(a, s, revoke_self, pb::RevokeSelfRequest, bytes),
            250..=255 => call_self!(a, s, lookup_self, pb::LookupSelfRequest, bytes),
            _ => match which % 15 {
            0 => call!(a, create_token, pb::CreateTokenRequest, bytes),
            1 => call!(a, get_token, pb::GetTokenRequest, bytes),
            2 => call!(a, list_tokens, pb::ListTokensRequest, bytes),
            3 => call!(a, update_token, pb::UpdateTokenRequest, bytes),
            4 => call!(a, revoke_token, pb::RevokeTokenRequest, bytes),
            5 => call!(a, restore_token, pb::RestoreTokenRequest, bytes),
            6 => call!(a, delete_token, pb::DeleteTokenRequest, bytes),
            7 => call!(a, renew_token, pb::RenewTokenRequest, bytes),
            8 => call!(a, disable_owner, pb::DisableOwnerRequest, bytes),
            9 => call!(a, enable_owner, pb::EnableOwnerRequest, bytes),
            10 => call!(a, get_owner, pb::GetOwnerRequest, bytes),
            11 => call!(a, delete_owner_tokens, pb::DeleteOwnerTokensRequest, bytes),
            12 => call!(a, list_token_events, pb::ListTokenEventsRequest, bytes),
            13 => call!(a, list_keys, pb::ListKeysRequest, bytes),
            _ => call!(v, verify, pb::VerifyRequest, bytes),
            },
        };
        status
    });
    if let Some(status) = failure {
        // Some refusal a client can act on; never a server fault.
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::AlreadyExists
                    | Code::ResourceExhausted
                    | Code::OutOfRange
            ),
            "request {which} answered {:?}: {}",
            status.code(),
            status.message()
        );
    }
});
