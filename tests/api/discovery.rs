//! What grpcurl and Kubernetes need with no proto files: reflection (v1 and
//! v1alpha) and the health service.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::*;

const SERVICES: [&str; 6] = [
    "grpc.health.v1.Health",
    "latchkey.v1.TokenAdmin",
    "latchkey.v1.TokenSelf",
    "latchkey.v1.TokenVerify",
    "envoy.service.auth.v3.Authorization",
    "grpc.reflection.v1.ServerReflection",
];

#[tokio::test]
async fn reflection_v1_lists_the_services_and_describes_them() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let ask = |message_request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message_request),
    };
    let requests = vec![
        ask(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ask(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "latchkey.v1.TokenAdmin".into(),
            ),
        ),
        ask(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "envoy.service.auth.v3.Authorization".into(),
            ),
        ),
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    assert_lists(list.service.into_iter().map(|s| s.name), &SERVICES);
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("TokenAdmin is not described");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("envoy's Authorization is not described, so grpcurl cannot call Check");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    assert_lists(list.service.into_iter().map(|s| s.name), &SERVICES[..5]);
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "latchkey.v1.TokenAdmin",
        "latchkey.v1.TokenSelf",
        "latchkey.v1.TokenVerify",
        "envoy.service.auth.v3.Authorization",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[track_caller]
fn assert_lists(names: impl Iterator<Item = String>, expected: &[&str]) {
    let names: Vec<String> = names.collect();
    for service in expected {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}
