//! Delta ADS, server and client together on loopback.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_proto::core::Node;
use mesh_proto::discovery::DeltaDiscoveryRequest;
use mesh_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost_types::Any;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint, Server};
use xds::{
    DeltaAdsServer, Handler, NodeFilter, Rejected, SnapshotStore, Update, XdsClient,
    XdsClientConfig,
};

const T: &str = "type.googleapis.com/test.Thing";

fn body(value: &str) -> Any {
    Any { type_url: T.into(), value: value.as_bytes().to_vec() }
}

struct Running {
    addr: SocketAddr,
    ads: DeltaAdsServer,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        self.ads.close_streams();
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap();
    }
}

async fn serve_on(server: DeltaAdsServer, listener: TcpListener) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let ads = server.clone();
    let done = tokio::spawn(async move {
        Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running { addr, ads, stop: Some(stop), done }
}

async fn serve(server: DeltaAdsServer) -> Running {
    serve_on(server, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
}

/// Records what it holds and every update; rejects bodies starting "bad".
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    held: HashMap<String, String>,
    log: Vec<Update>,
}

impl Recorder {
    fn held(&self) -> HashMap<String, String> {
        self.state.lock().unwrap().held.clone()
    }
    fn log(&self) -> Vec<Update> {
        self.state.lock().unwrap().log.clone()
    }
    fn handler(&self) -> Box<dyn Handler> {
        Box::new(self.clone())
    }
}

impl Handler for Recorder {
    fn type_url(&self) -> &str {
        T
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        let mut state = self.state.lock().unwrap();
        state.log.push(update.clone());
        let mut rejected = Vec::new();
        for (name, any) in update.resources {
            let text = String::from_utf8(any.value).unwrap();
            if text.starts_with("bad") {
                rejected.push(Rejected { name, reason: "bodies must not start with bad".into() });
            } else {
                state.held.insert(name, text);
            }
        }
        for name in update.removed {
            state.held.remove(&name);
        }
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn held(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn start_client(addr: SocketAddr, recorder: &Recorder) -> oneshot::Sender<()> {
    let config = XdsClientConfig {
        node: Node { id: "test~node".into(), ..Default::default() },
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let client = XdsClient::new(channel(addr), config, vec![recorder.handler()]);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(client.run(async {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn add_update_remove() {
    let store = SnapshotStore::new();
    store.put(T, "a", body("1"));
    store.put(T, "b", body("1"));
    let server = serve(DeltaAdsServer::new(store.clone())).await;
    let recorder = Recorder::default();
    let _client = start_client(server.addr, &recorder);
    eventually("initial state", || recorder.held() == held(&[("a", "1"), ("b", "1")])).await;

    store.put(T, "a", body("2"));
    eventually("update", || recorder.held() == held(&[("a", "2"), ("b", "1")])).await;
    store.remove(T, "b");
    eventually("removal", || recorder.held() == held(&[("a", "2")])).await;

    // Only what changed was sent each time.
    let log = recorder.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[1].resources.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a"]);
    assert!(log[1].removed.is_empty());
    assert!(log[2].resources.is_empty());
    assert_eq!(log[2].removed, ["b"]);
}

#[tokio::test]
async fn a_nacked_resource_does_not_stop_the_others() {
    let store = SnapshotStore::new();
    let ads = DeltaAdsServer::new(store.clone());
    let server = serve(ads.clone()).await;
    let recorder = Recorder::default();
    let _client = start_client(server.addr, &recorder);
    store.apply([
        xds::Change::Put { type_url: T.into(), name: "good1".into(), body: body("ok") },
        xds::Change::Put { type_url: T.into(), name: "broken".into(), body: body("bad!") },
        xds::Change::Put { type_url: T.into(), name: "good2".into(), body: body("ok") },
    ]);
    eventually("good resources applied", || {
        recorder.held() == held(&[("good1", "ok"), ("good2", "ok")])
    })
    .await;
    eventually("server saw the NACK", || ads.clients().iter().any(|c| c.nacks >= 1)).await;
    let info = ads.clients().into_iter().find(|c| c.nacks >= 1).unwrap();
    assert_eq!(info.node_id, "test~node");
    assert!(info.last_nack.unwrap().contains("broken: bodies must not start with bad"));

    // Later changes still flow, and a fixed resource is accepted.
    store.put(T, "good1", body("ok2"));
    store.put(T, "broken", body("fixed"));
    eventually("later changes", || {
        recorder.held() == held(&[("good1", "ok2"), ("good2", "ok"), ("broken", "fixed")])
    })
    .await;
}

#[tokio::test]
async fn reconnect_resends_only_differences() {
    let store = SnapshotStore::new();
    for (name, value) in [("a", "1"), ("b", "1"), ("c", "1")] {
        store.put(T, name, body(value));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_on(DeltaAdsServer::new(store.clone()), listener).await;
    let recorder = Recorder::default();
    let _client = start_client(addr, &recorder);
    eventually("initial state", || recorder.held().len() == 3).await;
    let updates_before = recorder.log().len();

    // The control plane goes away; meanwhile its state changes.
    server.stop().await;
    store.remove(T, "a");
    store.put(T, "b", body("2"));
    store.put(T, "d", body("1"));
    // It comes back on the same address with the same store.
    let server =
        serve_on(DeltaAdsServer::new(store.clone()), TcpListener::bind(addr).await.unwrap()).await;
    eventually("caught up", || recorder.held() == held(&[("b", "2"), ("c", "1"), ("d", "1")]))
        .await;

    let log = recorder.log();
    let after: Vec<&Update> = log[updates_before..].iter().collect();
    assert_eq!(after.len(), 1, "one response with the differences: {after:?}");
    let mut names: Vec<&str> = after[0].resources.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["b", "d"], "c was unchanged and not resent");
    assert_eq!(after[0].removed, ["a"]);

    // A reconnect with nothing changed sends nothing at all.
    server.stop().await;
    let _server =
        serve_on(DeltaAdsServer::new(store.clone()), TcpListener::bind(addr).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorder.log().len(), log.len(), "no duplicate deliveries");
}

/// Counts clients that have seen "x" at value "2".
struct Counter {
    seen: Arc<AtomicUsize>,
}

impl Handler for Counter {
    fn type_url(&self) -> &str {
        T
    }
    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        if update.resources.iter().any(|(n, b)| n == "x" && b.value == b"2") {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_receive_a_change() {
    const CLIENTS: usize = 1000;
    let store = SnapshotStore::new();
    store.put(T, "x", body("1"));
    let ads = DeltaAdsServer::new(store.clone());
    let server = serve(ads.clone()).await;
    let seen = Arc::new(AtomicUsize::new(0));
    // Ten connections with a hundred streams each, as HTTP/2 servers cap
    // concurrent streams per connection.
    let channels: Vec<Channel> = (0..10).map(|_| channel(server.addr)).collect();
    let mut stops = Vec::new();
    for i in 0..CLIENTS {
        let config = XdsClientConfig {
            node: Node { id: format!("client-{i}"), ..Default::default() },
            ..Default::default()
        };
        let handler = Box::new(Counter { seen: seen.clone() });
        let client = XdsClient::new(channels[i % 10].clone(), config, vec![handler]);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(client.run(async {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    eventually("all clients connected", || ads.clients().len() == CLIENTS).await;
    store.put(T, "x", body("2"));
    eventually("every client got the change", || seen.load(Ordering::Relaxed) == CLIENTS).await;
}

/// Opens a raw stream for tests that speak the protocol by hand.
async fn raw_stream(
    addr: SocketAddr,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    tonic::Streaming<mesh_proto::discovery::DeltaDiscoveryResponse>,
) {
    let (tx, rx) = mpsc::channel(8);
    let mut client = AggregatedDiscoveryServiceClient::new(channel(addr));
    let responses =
        client.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, responses)
}

#[tokio::test]
async fn explicit_subscriptions_get_only_their_names() {
    let store = SnapshotStore::new();
    store.put(T, "a", body("1"));
    store.put(T, "b", body("1"));
    let server = serve(DeltaAdsServer::new(store.clone())).await;
    let (tx, mut responses) = raw_stream(server.addr).await;
    tx.send(DeltaDiscoveryRequest {
        type_url: T.into(),
        resource_names_subscribe: vec!["a".into(), "missing".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a"]);
    // ACK, then a change to b (not subscribed) and to a (subscribed).
    tx.send(DeltaDiscoveryRequest {
        type_url: T.into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.put(T, "b", body("2"));
    store.put(T, "a", body("2"));
    let next = responses.message().await.unwrap().unwrap();
    assert_eq!(next.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_ne!(next.nonce, first.nonce, "every response has its own nonce");
    // The subscribed name that appears later is sent when it does.
    store.put(T, "missing", body("here now"));
    let later = responses.message().await.unwrap().unwrap();
    assert_eq!(later.resources[0].name, "missing");
}

struct HideSecrets;

impl NodeFilter for HideSecrets {
    fn allows(&self, node: &Node, _: &str, name: &str) -> bool {
        node.id != "restricted" || !name.starts_with("secret")
    }
}

#[tokio::test]
async fn a_filter_scopes_what_each_client_sees() {
    let store = SnapshotStore::new();
    store.put(T, "public", body("1"));
    store.put(T, "secret-1", body("1"));
    let server = serve(DeltaAdsServer::with_filter(store.clone(), Arc::new(HideSecrets))).await;
    for (node, expected) in
        [("restricted", vec!["public"]), ("trusted", vec!["public", "secret-1"])]
    {
        let (tx, mut responses) = raw_stream(server.addr).await;
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node { id: node.into(), ..Default::default() }),
            type_url: T.into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let response = responses.message().await.unwrap().unwrap();
        let names: Vec<&str> = response.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, expected, "node {node}");
    }
}

#[tokio::test]
async fn protocol_errors_are_named() {
    let server = serve(DeltaAdsServer::new(SnapshotStore::new())).await;
    let (tx, mut responses) = raw_stream(server.addr).await;
    tx.send(DeltaDiscoveryRequest::default()).await.unwrap();
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("type_url"));

    let mut client = AggregatedDiscoveryServiceClient::new(channel(server.addr));
    let (_tx, rx) = mpsc::channel(1);
    let status = client.stream_aggregated_resources(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

/// Hides everything until told otherwise.
struct Switch(Arc<std::sync::atomic::AtomicBool>);

impl NodeFilter for Switch {
    fn allows(&self, _: &Node, _: &str, _: &str) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn refilter_sends_what_became_visible_and_removes_what_was_hidden() {
    let store = SnapshotStore::new();
    store.put(T, "a", body("1"));
    let visible = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ads = DeltaAdsServer::with_filter(store.clone(), Arc::new(Switch(visible.clone())));
    let server = serve(ads.clone()).await;
    let recorder = Recorder::default();
    let _client = start_client(server.addr, &recorder);
    eventually("connected", || ads.clients().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(recorder.held().is_empty(), "hidden at first");
    // The resource did not change; only what the client may see did.
    visible.store(true, Ordering::Relaxed);
    ads.refilter();
    eventually("now visible", || recorder.held() == held(&[("a", "1")])).await;
    visible.store(false, Ordering::Relaxed);
    ads.refilter();
    eventually("hidden again", || recorder.held().is_empty()).await;
}

#[tokio::test]
async fn a_type_with_nothing_in_it_still_answers_so_clients_sync() {
    let server = serve(DeltaAdsServer::new(SnapshotStore::new())).await;
    let recorder = Recorder::default();
    let client =
        XdsClient::new(channel(server.addr), XdsClientConfig::default(), vec![recorder.handler()]);
    let mut synced = client.synced();
    tokio::spawn(client.run(std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), synced.wait_for(|s| *s))
        .await
        .expect("an empty type must still get its first response")
        .unwrap();
    server.stop().await;
}
