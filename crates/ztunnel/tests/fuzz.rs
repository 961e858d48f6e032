//! Property/fuzz checks of what a pod controls at its node proxy: DNS
//! queries. Any bytes get an answer, a forward or nothing; an answer to a
//! query with an id keeps that id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bolero::check;
use proxy_core::store::WorkloadStore;
use ztunnel::dns::{Answer, answer};

#[test]
fn any_dns_query_is_answered_forwarded_or_dropped() {
    let store = WorkloadStore::new();
    check!().with_iterations(20_000).for_each(|query: &[u8]| {
        if let Answer::Reply(reply) = answer(&store, "apps", "cluster.local", query) {
            assert!(reply.len() >= 12, "a DNS header at least");
            assert_eq!(reply[..2], query[..2], "the reply keeps the query's id");
        }
    });
}
