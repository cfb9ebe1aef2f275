//! What `latchkey-client`'s tower layer adds to a Verify call: a request
//! through an axum route guarded by `RequireToken` against a bare
//! `Client::verify`, both on a cache hit of one real latchkey server (SQLite,
//! in this process, over loopback). Run with `cargo bench --bench client_layer`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::config::Sensitive;
use latchkey::grpc::pb;
use latchkey::{Application, Settings};
use latchkey_client::{Client, RequireToken};
use tower_service::Service as _;

const ADMIN: &str = "bench-admin-credential-0123456789abcdef";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn layer_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, secret) = rt.block_on(async {
        let settings = Settings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            ),
            hmac_key: Some(Sensitive::new(KEY)),
            admin_token: Some(Sensitive::new(ADMIN)),
            ..Settings::default()
        };
        let app = Application::build(settings).await.unwrap();
        let addr = app.local_addr();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let client = Client::builder(format!("http://{addr}"))
            .credential(ADMIN)
            .connect()
            .await
            .unwrap();
        let created = client
            .admin()
            .create_token(pb::CreateTokenRequest {
                owner: "bench".into(),
                name: "bench".into(),
                scopes: vec!["reports:read".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (client, created.secret)
    });
    let scopes = vec!["reports:read".to_owned()];
    let router = axum::Router::new().route(
        "/reports",
        axum::routing::get(|| async { "ok" })
            .route_layer(RequireToken::new(client.clone()).scopes(scopes.clone())),
    );
    let bearer = format!("Bearer {secret}");
    // Warm latchkey's cache.
    rt.block_on(client.verify(&secret, &scopes)).unwrap();

    let mut group = c.benchmark_group("client");
    group.bench_function("verify, bare", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(client.verify(&secret, &scopes).await.unwrap()) });
    });
    group.bench_function("verify, through the layer", |b| {
        b.to_async(&rt).iter(|| async {
            let request = http::Request::get("/reports")
                .header("authorization", &bearer)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.clone().call(request).await.unwrap();
            assert_eq!(response.status(), 200);
            black_box(response)
        });
    });
    group.finish();
}

criterion_group!(benches, layer_overhead);
criterion_main!(benches);
