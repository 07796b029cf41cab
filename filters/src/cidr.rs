//! A set of IPv4/IPv6 networks stored as (network, mask) integers, so a lookup is a few
//! AND-and-compare operations with no allocation.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// Networks kept apart by family; an IPv4-mapped IPv6 network is stored as the IPv4 network it
/// maps, and an IPv4-mapped address is looked up as IPv4, so dual-stack sockets behave like
/// IPv4 ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CidrSet {
    /// `(network, mask)` pairs of the IPv4 networks.
    v4: Vec<(u32, u32)>,
    /// `(network, mask)` pairs of the IPv6 networks.
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    /// Builds a set from networks (duplicates are kept out).
    pub(crate) fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = CidrSet::default();
        for net in nets {
            set.insert(net);
        }
        set
    }

    /// Adds one network.
    pub(crate) fn insert(&mut self, net: IpNet) {
        match canonical_net(net) {
            IpNet::V4(net) => {
                let entry = (u32::from(net.network()), u32::from(net.netmask()));
                if !self.v4.contains(&entry) {
                    self.v4.push(entry);
                }
            }
            IpNet::V6(net) => {
                let entry = (u128::from(net.network()), u128::from(net.netmask()));
                if !self.v6.contains(&entry) {
                    self.v6.push(entry);
                }
            }
        }
    }

    /// Whether `ip` falls in any of the networks.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let ip = u32::from(ip);
                self.v4.iter().any(|&(net, mask)| ip & mask == net)
            }
            IpAddr::V6(ip) => {
                let ip = u128::from(ip);
                self.v6.iter().any(|&(net, mask)| ip & mask == net)
            }
        }
    }

    /// Number of distinct networks (what the duplicate test counts).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Turns `::ffff:a.b.c.d/n` (n >= 96) into `a.b.c.d/(n-96)`.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped);
    }
    net
}

/// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or an IPv6 CIDR (a bare address is a /32 or
/// /128). Host bits after the prefix are allowed and ignored, as in OpenSIPS's subnets.
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net);
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> CidrSet {
        CidrSet::from_nets(items.iter().map(|item| parse_net(item).unwrap()))
    }

    #[test]
    fn ipv4_network_contains_its_hosts_only() {
        let nets = set(&["10.0.0.0/8"]);
        assert!(nets.contains("10.255.1.2".parse().unwrap()));
        assert!(!nets.contains("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bare_address_is_a_single_host() {
        let nets = set(&["192.0.2.7", "2001:db8::1"]);
        assert!(nets.contains("192.0.2.7".parse().unwrap()));
        assert!(!nets.contains("192.0.2.8".parse().unwrap()));
        assert!(nets.contains("2001:db8:0:0::1".parse().unwrap()));
        assert!(!nets.contains("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn zero_prefix_matches_the_whole_family() {
        let nets = set(&["0.0.0.0/0"]);
        assert!(nets.contains("203.0.113.9".parse().unwrap()));
        assert!(!nets.contains("::1".parse().unwrap()));
    }

    #[test]
    fn host_bits_after_the_prefix_are_ignored() {
        let nets = set(&["10.1.2.3/16"]);
        assert!(nets.contains("10.1.200.200".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks_and_back() {
        let nets = set(&["10.0.0.0/8", "::ffff:192.0.2.0/120"]);
        assert!(nets.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(nets.contains("192.0.2.44".parse().unwrap()));
    }

    #[test]
    fn duplicates_are_stored_once() {
        assert_eq!(
            set(&["10.0.0.0/8", "10.9.9.9/8", "::1", "::1/128"]).len(),
            2
        );
    }
}
