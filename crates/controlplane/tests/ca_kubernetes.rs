//! The CA's Kubernetes side against a mocked API server (kube's
//! `tower-test` pair): TokenReview authentication and the CA Secret.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use controlplane::ca::kubernetes::{
    GENERATED_CA_SECRET, TokenReviewAuthenticator, load_or_generate_in_secret,
};
use controlplane::ca::{Authenticator, CaError, CaMaterial, Caller, Credentials};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "mesh-system"), handle)
}

/// Answers the next request, checking its method and path, and returns
/// the request's JSON body (Null when empty).
async fn answer(
    handle: &mut Handle,
    method: Method,
    path: &str,
    status: StatusCode,
    body: Value,
) -> Value {
    let (request, respond) = handle.next_request().await.expect("a request to the API server");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let sent = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    respond.send_response(response);
    sent
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

fn review(authenticated: bool, username: &str, extra: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
           "status": {"authenticated": authenticated, "user": {"username": username, "extra": extra},
                      "error": if authenticated { Value::Null } else { json!("token expired") }}})
}

fn authenticator(client: kube::Client) -> TokenReviewAuthenticator {
    TokenReviewAuthenticator::new(
        client,
        "cluster.local",
        vec!["istio-ca".into()],
        ("istio-system".into(), "ztunnel".into()),
    )
}

fn with_token(token: &str) -> Credentials {
    Credentials { bearer_token: Some(token.into()), peer_identity: None }
}

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

#[tokio::test]
async fn service_account_tokens_become_workload_identities() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let body = review(true, "system:serviceaccount:default:sleep", json!({}));
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::CREATED, body).await
    });
    let caller = authenticator(client).authenticate(&with_token("tok")).await.unwrap();
    assert_eq!(
        caller,
        Caller::Workload("spiffe://cluster.local/ns/default/sa/sleep".parse().unwrap())
    );
    let sent = server.await.unwrap();
    assert_eq!(sent["spec"]["token"], "tok");
    assert_eq!(sent["spec"]["audiences"], json!(["istio-ca"]));
}

#[tokio::test]
async fn node_proxy_tokens_name_their_node() {
    let (client, mut handle) = mock();
    tokio::spawn(async move {
        let extra = json!({"authentication.kubernetes.io/node-name": ["node-a"]});
        let body = review(true, "system:serviceaccount:istio-system:ztunnel", extra);
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::CREATED, body).await;
        // The same account without a node binding is refused.
        let body = review(true, "system:serviceaccount:istio-system:ztunnel", json!({}));
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::CREATED, body).await;
    });
    let auth = authenticator(client);
    assert_eq!(
        auth.authenticate(&with_token("bound")).await.unwrap(),
        Caller::NodeProxy { node: "node-a".into() }
    );
    let err = auth.authenticate(&with_token("unbound")).await.unwrap_err();
    assert!(matches!(&err, CaError::Unauthenticated(why) if why.contains("not bound")), "{err}");
}

#[tokio::test]
async fn refused_and_failed_reviews_are_told_apart() {
    let (client, mut handle) = mock();
    tokio::spawn(async move {
        let body = review(false, "", json!({}));
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::CREATED, body).await;
        let body = review(true, "alice", json!({}));
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::CREATED, body).await;
        let failure = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "message": "etcd is down", "reason": "InternalError", "code": 500});
        answer(&mut handle, Method::POST, REVIEWS, StatusCode::INTERNAL_SERVER_ERROR, failure)
            .await;
    });
    let auth = authenticator(client);
    let err = auth.authenticate(&with_token("expired")).await.unwrap_err();
    assert!(
        matches!(&err, CaError::Unauthenticated(why) if why.contains("token expired")),
        "{err}"
    );
    assert_eq!(err.to_status().code(), tonic::Code::Unauthenticated);
    let err = auth.authenticate(&with_token("user")).await.unwrap_err();
    assert!(
        matches!(&err, CaError::Unauthenticated(why) if why.contains("not a service account")),
        "{err}"
    );
    let err = auth.authenticate(&with_token("any")).await.unwrap_err();
    assert!(matches!(err, CaError::Upstream(_)), "{err}");
    assert_eq!(err.to_status().code(), tonic::Code::Unavailable);
    // Without a token, a mesh certificate still identifies a workload.
    let by_cert = Credentials {
        bearer_token: None,
        peer_identity: Some("spiffe://cluster.local/ns/a/sa/b".parse().unwrap()),
    };
    assert!(matches!(auth.authenticate(&by_cert).await.unwrap(), Caller::Workload(_)));
}

const SECRETS: &str = "/api/v1/namespaces/mesh-system/secrets";

#[tokio::test]
async fn the_ca_is_generated_once_and_kept_in_a_secret() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        answer(
            &mut handle,
            Method::GET,
            &format!("{SECRETS}/cacerts"),
            StatusCode::NOT_FOUND,
            not_found("cacerts"),
        )
        .await;
        let generated = format!("{SECRETS}/{GENERATED_CA_SECRET}");
        answer(
            &mut handle,
            Method::GET,
            &generated,
            StatusCode::NOT_FOUND,
            not_found(GENERATED_CA_SECRET),
        )
        .await;
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!((request.method(), request.uri().path()), (&Method::POST, SECRETS));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let created: Secret = serde_json::from_slice(&bytes).unwrap();
        respond.send_response(
            Response::builder().status(201).body(Body::from(bytes.to_vec())).unwrap(),
        );
        created
    });
    let secrets = kube::Api::<Secret>::namespaced(client, "mesh-system");
    let material = load_or_generate_in_secret(&secrets, "cluster.local").await.unwrap();
    let created = server.await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some(GENERATED_CA_SECRET));
    let data = created.data.unwrap();
    assert_eq!(String::from_utf8(data["ca-cert.pem"].0.clone()).unwrap(), material.cert_pem);
    assert_eq!(String::from_utf8(data["ca-key.pem"].0.clone()).unwrap(), material.key_pem);
    assert!(data.contains_key("root-cert.pem") && data.contains_key("cert-chain.pem"));
}

fn secret_json(name: &str, material: &CaMaterial) -> Value {
    use base64_encode as b64;
    let data: serde_json::Map<String, Value> = material
        .to_parts()
        .into_iter()
        .map(|(k, v, _)| (k.to_string(), json!(b64(v.as_bytes()))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "mesh-system"}, "data": data})
}

/// Secret data is base64 in JSON; k8s-openapi's ByteString does the decoding,
/// so encode through it too.
fn base64_encode(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_user_provided_ca_wins_and_a_lost_race_uses_the_winner() {
    let user = CaMaterial::generate("cluster.local").unwrap();
    let (client, mut handle) = mock();
    let user_json = secret_json("cacerts", &user);
    tokio::spawn(async move {
        answer(&mut handle, Method::GET, &format!("{SECRETS}/cacerts"), StatusCode::OK, user_json)
            .await;
    });
    let secrets = kube::Api::<Secret>::namespaced(client, "mesh-system");
    let material = load_or_generate_in_secret(&secrets, "cluster.local").await.unwrap();
    assert_eq!(material.cert_pem, user.cert_pem);

    let winner = CaMaterial::generate("cluster.local").unwrap();
    let (client, mut handle) = mock();
    let winner_json = secret_json(GENERATED_CA_SECRET, &winner);
    tokio::spawn(async move {
        let generated = format!("{SECRETS}/{GENERATED_CA_SECRET}");
        answer(
            &mut handle,
            Method::GET,
            &format!("{SECRETS}/cacerts"),
            StatusCode::NOT_FOUND,
            not_found("cacerts"),
        )
        .await;
        answer(
            &mut handle,
            Method::GET,
            &generated,
            StatusCode::NOT_FOUND,
            not_found(GENERATED_CA_SECRET),
        )
        .await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": "already exists", "reason": "AlreadyExists", "code": 409});
        answer(&mut handle, Method::POST, SECRETS, StatusCode::CONFLICT, conflict).await;
        answer(&mut handle, Method::GET, &generated, StatusCode::OK, winner_json).await;
    });
    let secrets = kube::Api::<Secret>::namespaced(client, "mesh-system");
    let material = load_or_generate_in_secret(&secrets, "cluster.local").await.unwrap();
    assert_eq!(
        material.cert_pem, winner.cert_pem,
        "the replica that lost the race signs with the winner's CA"
    );
}
