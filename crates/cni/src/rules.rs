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
//!   all other TCP goes to 15001;
//! - source preservation (Istio's, byte for byte): ztunnel connects to the
//!   application from the original client's address (a transparent
//!   socket carrying its mark). Such a connection is marked `0x111` in
//!   conntrack as it arrives (mangle PREROUTING), the application's replies
//!   get that mark back (mangle OUTPUT), and a policy route sends packets
//!   with it to the local table 100 (`local 0.0.0.0/0 dev lo`), so replies
//!   to a remote client's address return to ztunnel instead of leaving
//!   the pod ([`route_commands`]).

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

/// Our chains in the `mangle` table (iptables back end).
pub const MANGLE_PREROUTING_CHAIN: &str = "MESH_MANGLE_PRERT";
/// Our mangle output chain.
pub const MANGLE_OUTPUT_CHAIN: &str = "MESH_MANGLE_OUTPUT";

/// The mark mask compared (Istio's: the low 12 bits).
const MARK_MASK: u32 = 0xfff;
/// The connection mark of connections ztunnel made from a client's
/// address, and the packet mark their replies are routed by (Istio's).
pub const CONNECTION_MARK: u32 = 0x111;
/// The routing table those replies use, and the rule's preference
/// (Istio's).
pub const ROUTE_TABLE: u32 = 100;
/// Preference of the policy rule.
pub const RULE_PREFERENCE: u32 = 32764;

/// The rules of our two mangle chains, as `iptables-save` prints them.
pub fn iptables_mangle_rules(s: &RuleSettings) -> [String; 2] {
    [
        format!(
            "-A {MANGLE_PREROUTING_CHAIN} -m mark --mark 0x{:x}/0x{MARK_MASK:x} -j CONNMARK --set-xmark 0x{CONNECTION_MARK:x}/0x{MARK_MASK:x}",
            s.mark
        ),
        format!(
            "-A {MANGLE_OUTPUT_CHAIN} -m connmark --mark 0x{CONNECTION_MARK:x}/0x{MARK_MASK:x} -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
        ),
    ]
}

/// The jumps into our mangle chains.
pub fn iptables_mangle_jumps() -> [String; 2] {
    [
        format!("-A PREROUTING -j {MANGLE_PREROUTING_CHAIN}"),
        format!("-A OUTPUT -j {MANGLE_OUTPUT_CHAIN}"),
    ]
}

/// `ip` commands (arguments) that route replies of source-preserved
/// connections back to ztunnel, both families. Adding is done only where
/// [`route_rule_present`] says the rule is missing; `route replace` is
/// idempotent.
pub fn route_commands(v6: bool) -> [Vec<String>; 2] {
    let family = if v6 { "-6" } else { "-4" };
    let all = if v6 { "::/0" } else { "0.0.0.0/0" };
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    [
        words(&format!(
            "{family} rule add fwmark 0x{CONNECTION_MARK:x}/0x{MARK_MASK:x} pref {RULE_PREFERENCE} lookup {ROUTE_TABLE}"
        )),
        words(&format!("{family} route replace local {all} dev lo table {ROUTE_TABLE}")),
    ]
}

/// Whether `ip rule show` output holds our rule.
pub fn route_rule_present(ip_rule_show: &str) -> bool {
    ip_rule_show.lines().any(|l| {
        l.starts_with(&format!("{RULE_PREFERENCE}:"))
            && l.contains(&format!("fwmark 0x{CONNECTION_MARK:x}/0x{MARK_MASK:x}"))
            && l.contains(&format!("lookup {ROUTE_TABLE}"))
    })
}

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
    out += "COMMIT\n*mangle\n";
    out += &format!(":{MANGLE_PREROUTING_CHAIN} - [0:0]\n:{MANGLE_OUTPUT_CHAIN} - [0:0]\n");
    if with_jumps {
        for jump in iptables_mangle_jumps() {
            out += &jump;
            out.push('\n');
        }
    }
    for rule in iptables_mangle_rules(s) {
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
    let chain = |name: &str, kind: &str, hook: &str, priority: i32, rules: &[String]| {
        let mut c = format!(
            "  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;\n"
        );
        for r in rules {
            c += &format!("    {r}\n");
        }
        c + "  }\n"
    };
    // Source preservation, as the mangle rules of the iptables back end.
    let keep = !MARK_MASK;
    let mark_connection = [format!(
        "meta mark & 0x{MARK_MASK:x} == 0x{:x} ct mark set ct mark & 0x{keep:x} | 0x{CONNECTION_MARK:x}",
        s.mark & MARK_MASK
    )];
    let restore_mark =
        [format!("ct mark & 0x{MARK_MASK:x} == 0x{CONNECTION_MARK:x} meta mark set ct mark")];
    // -150: mangle's stage; -100: NAT at the destination-NAT stage. A
    // `route` chain re-routes a packet whose mark it changed.
    format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n{}{}{}{}}}\n",
        chain("mangle_prerouting", "filter", "prerouting", -150, &mark_connection),
        chain("mangle_output", "route", "output", -150, &restore_mark),
        chain("prerouting", "nat", "prerouting", -100, &pre),
        chain("output", "nat", "output", -100, &output)
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
*mangle
:MESH_MANGLE_PRERT - [0:0]
:MESH_MANGLE_OUTPUT - [0:0]
-A PREROUTING -j MESH_MANGLE_PRERT
-A OUTPUT -j MESH_MANGLE_OUTPUT
-A MESH_MANGLE_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
-A MESH_MANGLE_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
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
        assert!(script.contains("ct mark set ct mark & 0xfffff000 | 0x111"), "{script}");
        assert!(script.contains("type route hook output priority -150"), "{script}");
    }

    #[test]
    fn route_commands_are_istios() {
        assert_eq!(
            route_commands(false).map(|c| c.join(" ")),
            [
                "-4 rule add fwmark 0x111/0xfff pref 32764 lookup 100",
                "-4 route replace local 0.0.0.0/0 dev lo table 100"
            ]
        );
        assert_eq!(
            route_commands(true)[1].join(" "),
            "-6 route replace local ::/0 dev lo table 100"
        );
        assert!(route_rule_present(
            "0:\tfrom all lookup local\n32764:\tfrom all fwmark 0x111/0xfff lookup 100\n"
        ));
        assert!(!route_rule_present("0:\tfrom all lookup local\n32766:\tfrom all lookup main\n"));
    }
}
