//! The cells of the benchmark: a workload, a number of workers, and the
//! systems measured side by side on it.

use crate::geography;

/// What the workers of a cell do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Each worker acquires and releases a resource of its own.
    Uncontended,
    /// Every worker acquires and releases the same resource: each acquisition
    /// is a handoff from the previous holder.
    Hot,
    /// Like `Uncontended`, with every system stretched over three emulated
    /// regions and the client in `client_region`.
    Wan {
        /// Where the client (and globallock's coordinator) is.
        client_region: usize,
    },
}

/// A system measured in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// `make dev`'s topology over TLS, through `globallock-client`.
    Globallock,
    /// etcd's own lock on a single-member cluster.
    Etcd1,
    /// etcd's own lock on a three-member cluster.
    Etcd3,
    /// Redlock over three `redis-server`s.
    Redlock,
    /// etcd's own lock on a three-member cluster stretched over the WAN profile.
    EtcdStretched,
}

impl System {
    /// Every system, in report order.
    pub const ALL: [System; 5] = [
        System::Globallock,
        System::Etcd1,
        System::Etcd3,
        System::Redlock,
        System::EtcdStretched,
    ];

    /// Its name in flags, the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Globallock => "globallock",
            System::Etcd1 => "etcd-1",
            System::Etcd3 => "etcd-3",
            System::Redlock => "redlock",
            System::EtcdStretched => "etcd-stretched",
        }
    }
}

/// One cell.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    /// Its name (`--cells` selects by it, or by the part before the `-`).
    pub name: &'static str,
    /// What the workers do.
    pub workload: Workload,
    /// How many workers.
    pub workers: usize,
    /// How many with `--smoke` (a short run on a loaded test machine).
    pub smoke_workers: usize,
}

/// Every cell, in run order.
pub const CELLS: [Cell; 6] = [
    Cell {
        name: "uncontended-16",
        workload: Workload::Uncontended,
        workers: 16,
        smoke_workers: 4,
    },
    Cell {
        name: "uncontended-64",
        workload: Workload::Uncontended,
        workers: 64,
        smoke_workers: 8,
    },
    Cell {
        name: "hot-8",
        workload: Workload::Hot,
        workers: 8,
        smoke_workers: 4,
    },
    Cell {
        name: "hot-64",
        workload: Workload::Hot,
        workers: 64,
        smoke_workers: 8,
    },
    Cell {
        name: "wan-leader",
        workload: Workload::Wan {
            client_region: geography::LEADER_REGION,
        },
        workers: 8,
        smoke_workers: 2,
    },
    Cell {
        name: "wan-remote",
        workload: Workload::Wan {
            client_region: geography::REMOTE_REGION,
        },
        workers: 8,
        smoke_workers: 2,
    },
];

impl Cell {
    /// The systems compared in this cell, globallock first.
    pub fn systems(&self) -> &'static [System] {
        match self.workload {
            Workload::Uncontended | Workload::Hot => &[
                System::Globallock,
                System::Etcd1,
                System::Etcd3,
                System::Redlock,
            ],
            Workload::Wan { .. } => &[System::Globallock, System::EtcdStretched],
        }
    }

    /// One line saying what the cell measures.
    pub fn describe(&self, workers: usize) -> String {
        match self.workload {
            Workload::Uncontended => format!(
                "uncontended: {workers} workers, each acquiring and releasing its own resource"
            ),
            Workload::Hot => {
                format!(
                    "one hot resource: {workers} workers wait for it, each acquisition a handoff"
                )
            }
            Workload::Wan { client_region } => format!(
                "WAN (round trips 80/88/137 ms): {workers} workers, own resources, client in {} \
                 ({} the stretched etcd's leader region; nearest majority {} ms away)",
                geography::PLACES[client_region],
                if client_region == geography::LEADER_REGION {
                    "in"
                } else {
                    "outside"
                },
                geography::nearest_majority(client_region).as_millis()
            ),
        }
    }

    /// Whether the fairness index means something here (many workers, one resource).
    pub fn has_fairness(&self) -> bool {
        self.workload == Workload::Hot
    }
}

/// The cells `filter` names (comma-separated names, or prefixes such as `hot`
/// or `wan`); every cell when it is empty.
pub fn select(filter: &[String]) -> Result<Vec<Cell>, String> {
    if filter.is_empty() {
        return Ok(CELLS.to_vec());
    }
    for wanted in filter {
        if !CELLS.iter().any(|c| matches(c, wanted)) {
            let names: Vec<&str> = CELLS.iter().map(|c| c.name).collect();
            return Err(format!(
                "no cell named {wanted:?}; cells: {}",
                names.join(", ")
            ));
        }
    }
    Ok(CELLS
        .iter()
        .filter(|c| filter.iter().any(|w| matches(c, w)))
        .copied()
        .collect())
}

/// The systems `filter` names; every system when it is empty.
pub fn select_systems(filter: &[String]) -> Result<Vec<System>, String> {
    let mut systems = Vec::new();
    for wanted in filter {
        match System::ALL.iter().find(|s| s.name() == wanted) {
            Some(s) => systems.push(*s),
            None => {
                let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
                return Err(format!(
                    "no system named {wanted:?}; systems: {}",
                    names.join(", ")
                ));
            }
        }
    }
    if systems.is_empty() {
        systems = System::ALL.to_vec();
    }
    Ok(systems)
}

fn matches(cell: &Cell, wanted: &str) -> bool {
    cell.name == wanted || cell.name.split('-').next() == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_selects_a_family_of_cells() {
        let names = |f: &[&str]| {
            let filter: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
            select(&filter).map(|cells| cells.iter().map(|c| c.name).collect::<Vec<_>>())
        };
        assert_eq!(names(&["hot"]), Ok(vec!["hot-8", "hot-64"]));
        assert_eq!(
            names(&["wan-remote", "hot-8"]),
            Ok(vec!["hot-8", "wan-remote"])
        );
        assert_eq!(names(&[]).map(|n| n.len()), Ok(CELLS.len()));
        assert!(names(&["cold"]).is_err());
    }
}
