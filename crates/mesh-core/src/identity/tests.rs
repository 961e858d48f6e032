use super::*;
use proptest::prelude::*;

#[test]
fn parses_and_displays() {
    let id: Identity = "spiffe://cluster.local/ns/default/sa/sleep".parse().unwrap();
    assert_eq!(id.trust_domain(), "cluster.local");
    assert_eq!(id.namespace(), "default");
    assert_eq!(id.service_account(), "sleep");
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
}

#[test]
fn service_accounts_may_hold_dots() {
    let id: Identity = "spiffe://td/ns/a/sa/b.c".parse().unwrap();
    assert_eq!(id.service_account(), "b.c");
}

#[test]
fn rejects_each_malformed_form_with_its_own_error() {
    use IdentityError::*;
    type Expect = fn(&IdentityError) -> bool;
    let cases: &[(&str, Expect)] = &[
        ("http://cluster.local/ns/a/sa/b", |e| matches!(e, WrongScheme(_))),
        ("cluster.local/ns/a/sa/b", |e| matches!(e, WrongScheme(_))),
        ("spiffe:///ns/a/sa/b", |e| matches!(e, Empty(Part::TrustDomain))),
        ("spiffe://td/ns//sa/b", |e| matches!(e, Empty(Part::Namespace))),
        ("spiffe://td/ns/a/sa/", |e| matches!(e, Empty(Part::ServiceAccount))),
        ("spiffe://Cluster.local/ns/a/sa/b", |e| {
            matches!(e, BadCharacter { part: Part::TrustDomain, found: 'C', .. })
        }),
        ("spiffe://td/ns/a_b/sa/b", |e| {
            matches!(e, BadCharacter { part: Part::Namespace, found: '_', .. })
        }),
        ("spiffe://td/ns/a.b/sa/b", |e| {
            matches!(e, BadCharacter { part: Part::Namespace, found: '.', .. })
        }),
        ("spiffe://td/ns/a/sa/B", |e| {
            matches!(e, BadCharacter { part: Part::ServiceAccount, found: 'B', .. })
        }),
        ("spiffe://td/ns/-a/sa/b", |e| matches!(e, BadEdge { part: Part::Namespace, .. })),
        ("spiffe://td/ns/a/sa/b.", |e| matches!(e, BadEdge { part: Part::ServiceAccount, .. })),
        ("spiffe://td", |e| matches!(e, BadPath(_))),
        ("spiffe://td/", |e| matches!(e, BadPath(_))),
        ("spiffe://td/ns/a", |e| matches!(e, BadPath(_))),
        ("spiffe://td/ns/a/sa/b/extra", |e| matches!(e, BadPath(_))),
        ("spiffe://td/ns/a/sa/b/", |e| matches!(e, BadPath(_))),
        ("spiffe://td/sa/b/ns/a", |e| matches!(e, BadPath(_))),
        ("spiffe://td/namespace/a/sa/b", |e| matches!(e, BadPath(_))),
    ];
    for (input, expected) in cases {
        let err = input.parse::<Identity>().expect_err(input);
        assert!(expected(&err), "{input}: unexpected error {err:?}");
        // Every error names what was wrong in words.
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn rejects_overlong_parts() {
    let ns = "a".repeat(64);
    let err = format!("spiffe://td/ns/{ns}/sa/b").parse::<Identity>().unwrap_err();
    assert_eq!(err, IdentityError::TooLong { part: Part::Namespace, len: 64, max: 63 });
    let td = "a".repeat(256);
    let err = format!("spiffe://{td}/ns/a/sa/b").parse::<Identity>().unwrap_err();
    assert!(matches!(err, IdentityError::TooLong { part: Part::TrustDomain, .. }));
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn subdomain() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?"
}

fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

proptest! {
    #[test]
    fn display_then_parse_round_trips(td in trust_domain(), ns in label(), sa in subdomain()) {
        let id = Identity::new(&td, &ns, &sa).unwrap();
        let parsed: Identity = id.to_string().parse().unwrap();
        prop_assert_eq!(&parsed, &id);
        prop_assert_eq!(parsed.to_string(), id.to_string());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,80}") {
        // Whatever the outcome, parsing must return rather than panic, and a
        // success must display back to the same string.
        if let Ok(id) = s.parse::<Identity>() {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn a_bad_character_anywhere_is_rejected(
        ns in label(),
        pos in 0usize..20,
        bad in "[A-Z_/ :@%]",
    ) {
        let mut chars: Vec<char> = ns.chars().collect();
        let at = pos.min(chars.len());
        chars.insert(at, bad.chars().next().unwrap());
        let ns: String = chars.into_iter().collect();
        let input = format!("spiffe://td/ns/{ns}/sa/b");
        prop_assert!(input.parse::<Identity>().is_err());
    }

    #[test]
    fn extra_segments_are_rejected(td in trust_domain(), ns in label(), sa in subdomain(), extra in label()) {
        let s = format!("spiffe://{td}/ns/{ns}/sa/{sa}/{extra}");
        prop_assert!(matches!(s.parse::<Identity>(), Err(IdentityError::BadPath(_))));
    }
}
