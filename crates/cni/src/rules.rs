//! The redirection rules inside a pod's network namespace, as text for
//! `iptables-restore` (iptables-nft by default) or `nft -f` (native
//! nftables). Pure: generated from settings, tested as strings; applying
//! them is `netns_exec`'s job.
//!
//! What they do (same for both back ends):
//! - packets carrying ztunnel's mark pass untouched (its own sockets);
//! - inbound: health probes from the node pass; TCP to 15008 reaches
//!   ztunnel's HBONE listener as is; all other inbound TCP goes to 15006;
//! - outbound: loopback traffic stays; DNS (UDP and TCP 53) goes to 15053;
//!   all other TCP goes to 15001.

use std::net::IpAddr;

/// Which tool installs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-restore` (the nft-based iptables on current distributions).
    Iptables,
    /// `nft -f`, one table of our own.
    Nftables,
}

/// What the rules redirect to and exempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSettings {
    /// ztunnel's outbound capture port.
    pub outbound_port: u16,
    /// ztunnel's inbound plaintext port.
    pub inbound_plaintext_port: u16,
    /// ztunnel's HBONE port.
    pub hbone_port: u16,
    /// ztunnel's DNS port.
    pub dns_port: u16,
    /// ztunnel's socket mark.
    pub mark: u32,
    /// Where the node's health probes come from; exempt from capture.
    pub probe_source: Option<IpAddr>,
    /// Whether DNS is captured.
    pub capture_dns: bool,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            hbone_port: 15008,
            dns_port: 15053,
            mark: 1337,
            // Istio's node agent SNATs kubelet probes to this address.
            probe_source: Some(IpAddr::from([169, 254, 7, 127])),
            capture_dns: true,
        }
    }
}

/// Our chains in the `nat` table (iptables back end).
pub const PREROUTING_CHAIN: &str = "MESH_PRERT";
/// Our output chain.
pub const OUTPUT_CHAIN: &str = "MESH_OUTPUT";
/// Our table (nftables back end).
pub const NFT_TABLE: &str = "mesh_inpod";

/// The mark mask compared (Istio's: the low 12 bits).
const MARK_MASK: u32 = 0xfff;

/// The rules of our two chains, as `iptables-save` prints them.
pub fn iptables_rules(s: &RuleSettings) -> Vec<String> {
    let mark = format!("-m mark --mark 0x{:x}/0x{MARK_MASK:x}", s.mark);
    let mut rules = vec![format!("-A {PREROUTING_CHAIN} {mark} -j ACCEPT")];
    if let Some(probe) = s.probe_source {
        rules.push(format!("-A {PREROUTING_CHAIN} -s {} -p tcp -j ACCEPT", host_net(probe)));
    }
    rules.extend([
        format!("-A {PREROUTING_CHAIN} -p tcp -m tcp --dport {} -j ACCEPT", s.hbone_port),
        format!(
            "-A {PREROUTING_CHAIN} ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports {}",
            s.inbound_plaintext_port
        ),
        format!("-A {OUTPUT_CHAIN} {mark} -j ACCEPT"),
        format!("-A {OUTPUT_CHAIN} -d 127.0.0.1/32 -j ACCEPT"),
    ]);
    if s.capture_dns {
        rules.extend([
            format!(
                "-A {OUTPUT_CHAIN} -p udp -m udp --dport 53 -j REDIRECT --to-ports {}",
                s.dns_port
            ),
            format!(
                "-A {OUTPUT_CHAIN} -p tcp -m tcp --dport 53 -j REDIRECT --to-ports {}",
                s.dns_port
            ),
        ]);
    }
    rules.push(format!("-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}", s.outbound_port));
    rules
}

/// The jumps from the built-in chains into ours.
pub fn iptables_jumps() -> [String; 2] {
    [format!("-A PREROUTING -j {PREROUTING_CHAIN}"), format!("-A OUTPUT -j {OUTPUT_CHAIN}")]
}

/// `iptables-restore --noflush` input that (re)writes our chains: declaring
/// a chain flushes it, so applying twice leaves one copy. `with_jumps` adds
/// the jumps (only when they are missing: they live in built-in chains that
/// are not flushed).
pub fn iptables_restore(s: &RuleSettings, with_jumps: bool) -> String {
    let mut out = String::from("*nat\n");
    out += &format!(":{PREROUTING_CHAIN} - [0:0]\n:{OUTPUT_CHAIN} - [0:0]\n");
    if with_jumps {
        for jump in iptables_jumps() {
            out += &jump;
            out.push('\n');
        }
    }
    for rule in iptables_rules(s) {
        out += &rule;
        out.push('\n');
    }
    out += "COMMIT\n";
    out
}

/// An `nft -f` script that replaces our table atomically (create, delete,
/// define: idempotent whether or not it existed).
pub fn nft_script(s: &RuleSettings) -> String {
    let mut pre = vec![format!("meta mark & 0x{MARK_MASK:x} == 0x{:x} accept", s.mark & MARK_MASK)];
    if let Some(probe) = s.probe_source {
        let family = if probe.is_ipv4() { "ip" } else { "ip6" };
        pre.push(format!("{family} saddr {probe} meta l4proto tcp accept"));
    }
    pre.push(format!("tcp dport {} accept", s.hbone_port));
    pre.push(format!(
        "ip daddr != 127.0.0.1 meta l4proto tcp redirect to :{}",
        s.inbound_plaintext_port
    ));
    let mut output = vec![
        format!("meta mark & 0x{MARK_MASK:x} == 0x{:x} accept", s.mark & MARK_MASK),
        "ip daddr 127.0.0.1 accept".to_string(),
    ];
    if s.capture_dns {
        output.push(format!("udp dport 53 redirect to :{}", s.dns_port));
        output.push(format!("tcp dport 53 redirect to :{}", s.dns_port));
    }
    output.push(format!("meta l4proto tcp redirect to :{}", s.outbound_port));
    let chain = |name: &str, hook: &str, rules: &[String]| {
        // -100: NAT at the destination-NAT stage of both hooks.
        let mut c =
            format!("  chain {name} {{\n    type nat hook {hook} priority -100; policy accept;\n");
        for r in rules {
            c += &format!("    {r}\n");
        }
        c + "  }\n"
    };
    format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n{}{}}}\n",
        chain("prerouting", "prerouting", &pre),
        chain("output", "output", &output)
    )
}

fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_in_order() {
        let rules = iptables_restore(&RuleSettings::default(), true);
        let expected = "\
*nat
:MESH_PRERT - [0:0]
:MESH_OUTPUT - [0:0]
-A PREROUTING -j MESH_PRERT
-A OUTPUT -j MESH_OUTPUT
-A MESH_PRERT -m mark --mark 0x539/0xfff -j ACCEPT
-A MESH_PRERT -s 169.254.7.127/32 -p tcp -j ACCEPT
-A MESH_PRERT -p tcp -m tcp --dport 15008 -j ACCEPT
-A MESH_PRERT ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15006
-A MESH_OUTPUT -m mark --mark 0x539/0xfff -j ACCEPT
-A MESH_OUTPUT -d 127.0.0.1/32 -j ACCEPT
-A MESH_OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
-A MESH_OUTPUT -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053
-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";
        assert_eq!(rules, expected);
        assert!(!iptables_restore(&RuleSettings::default(), false).contains("-A PREROUTING"));
    }

    #[test]
    fn nft_script_replaces_one_table() {
        let s = RuleSettings { capture_dns: false, probe_source: None, ..Default::default() };
        let script = nft_script(&s);
        assert!(script.starts_with("table inet mesh_inpod\ndelete table inet mesh_inpod\n"));
        assert!(script.contains("tcp dport 15008 accept"));
        assert!(script.contains("redirect to :15006"));
        assert!(script.contains("meta l4proto tcp redirect to :15001"));
        assert!(!script.contains("dport 53"), "DNS capture off");
        assert!(!script.contains("saddr"), "no probe exemption");
    }
}
