//! Our protos against a table of Istio's (`proto/istio-fields.txt`): every
//! field Istio declares in the messages the table covers is declared here
//! with the same number, label and type, and every field we declare there
//! is Istio's or listed as ours. A field protobuf does not know is dropped
//! silently; this is where such a gap shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const TABLE: &str = include_str!("../../../proto/istio-fields.txt");

/// `package.Message[.Nested]` → field name → `number label type`.
fn ours() -> BTreeMap<String, BTreeMap<String, String>> {
    fn walk(
        prefix: &str,
        m: &DescriptorProto,
        out: &mut BTreeMap<String, BTreeMap<String, String>>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        let fields = out.entry(name.clone()).or_default();
        for f in &m.field {
            let label = match f.label() {
                Label::Repeated => "repeated",
                _ => "single",
            };
            let kind = match f.r#type() {
                Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_string(),
                other => other.as_str_name().trim_start_matches("TYPE_").to_ascii_lowercase(),
            };
            fields.insert(f.name().to_string(), format!("{} {label} {kind}", f.number()));
        }
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
    }
    let set = FileDescriptorSet::decode(mesh_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeMap::new();
    for file in &set.file {
        for m in &file.message_type {
            walk(file.package(), m, &mut out);
        }
    }
    out
}

#[test]
fn our_protos_declare_istios_fields_with_istios_numbers_and_types() {
    let ours = ours();
    let mut problems = Vec::new();
    let mut istio: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut extensions: Vec<(&str, &str)> = Vec::new();
    for line in TABLE.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match cols.as_slice() {
            ["ours", message, field, ..] => extensions.push((message, field)),
            [message, field, number, label, kind] => {
                istio.entry(message).or_default().push(field);
                let expected = format!("{number} {label} {kind}");
                match ours.get(*message).and_then(|f| f.get(*field)) {
                    Some(got) if *got == expected => {}
                    Some(got) => problems
                        .push(format!("{message}.{field}: Istio's is {expected}, ours {got}")),
                    None => {
                        problems.push(format!("{message}.{field} ({expected}) is not declared"))
                    }
                }
            }
            _ => panic!("bad table line: {line}"),
        }
    }
    assert!(istio.len() >= 15, "the table covers the messages: {istio:?}");
    for (message, fields) in &istio {
        for field in ours[*message].keys() {
            let known =
                fields.contains(&field.as_str()) || extensions.contains(&(message, field.as_str()));
            if !known {
                problems.push(format!("{message}.{field} is ours only and not listed as such"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
