//! Named address groups for `check_source_address("group")`, the counterpart of the OpenSIPS
//! permissions module's address table (IPs and CIDRs per group; ports and protocols are not
//! part of a group here).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::cidr::CidrSet;

/// Address groups by name, as the configuration defines them.
///
/// Each group is shared (`Arc`) with the compiled routes that use it, so a route keeps working
/// on the groups it was compiled against even after the config is reloaded.
#[derive(Debug, Clone, Default)]
pub struct AddressGroups {
    /// The networks of each group.
    groups: BTreeMap<String, Arc<CidrSet>>,
}

impl AddressGroups {
    /// Builds the groups from the config's `name -> [IpNet]` table (a bare IP in the config is
    /// a /32 or /128 network). An empty group is allowed and matches nothing.
    pub fn new(groups: &BTreeMap<String, Vec<IpNet>>) -> Self {
        let groups = groups
            .iter()
            .map(|(name, nets)| {
                (
                    name.clone(),
                    Arc::new(CidrSet::from_nets(nets.iter().copied())),
                )
            })
            .collect();
        AddressGroups { groups }
    }

    /// Whether `ip` is in `group`; an unknown group contains nothing.
    pub fn contains(&self, group: &str, ip: IpAddr) -> bool {
        self.groups.get(group).is_some_and(|set| set.contains(ip))
    }

    /// The group names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// The shared networks of one group, for the compiler.
    pub(crate) fn get(&self, group: &str) -> Option<Arc<CidrSet>> {
        self.groups.get(group).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_ips_and_cidrs_by_name() {
        let mut table = BTreeMap::new();
        table.insert(
            "1".to_owned(),
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.1/32".parse().unwrap(),
            ],
        );
        table.insert("v6".to_owned(), vec!["2001:db8::/32".parse().unwrap()]);
        let groups = AddressGroups::new(&table);

        assert!(groups.contains("1", "10.20.30.40".parse().unwrap()));
        assert!(groups.contains("1", "192.0.2.1".parse().unwrap()));
        assert!(!groups.contains("1", "192.0.2.2".parse().unwrap()));
        assert!(groups.contains("v6", "2001:db8:1::5".parse().unwrap()));
        assert!(!groups.contains("missing", "10.0.0.1".parse().unwrap()));
        assert_eq!(groups.names().collect::<Vec<_>>(), ["1", "v6"]);
    }
}
