//! Property/fuzz checks of ZDS datagrams as ztunnel reads them: any bytes,
//! with or without a descriptor, give a request or a named error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bolero::check;

#[test]
fn any_datagram_is_a_request_or_an_error() {
    check!().with_iterations(10_000).with_type::<(Vec<u8>, bool)>().for_each(|(bytes, fd)| {
        let netns =
            fd.then(|| std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        match zds::interpret(bytes, netns) {
            Ok(request) => {
                // Only AddWorkload carries a namespace, and it always does.
                let is_add = matches!(request.payload, zds::Payload::Add(_));
                assert_eq!(is_add, request.netns.is_some());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}
