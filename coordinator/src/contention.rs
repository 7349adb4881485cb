//! The most contended resources, in bounded memory (Space-Saving, Metwally et al.):
//! shown at `GET /admin/contention`, never as metric labels (unbounded cardinality).

use std::collections::HashMap;
use std::sync::Mutex;

/// Resources tracked at most.
const CAPACITY: usize = 128;

/// A bounded top-K counter of refused acquires per resource.
#[derive(Debug, Default)]
pub struct TopContended {
    /// Resource → (count, overestimate).
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

impl TopContended {
    /// Count one refused acquire of `resource`.
    pub fn record(&self, resource: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = counts.get_mut(resource) {
            entry.0 += 1;
            return;
        }
        if counts.len() < CAPACITY {
            counts.insert(resource.to_owned(), (1, 0));
            return;
        }
        // Replace the smallest: the newcomer inherits its count (an upper bound).
        if let Some((victim, (min, _))) = counts
            .iter()
            .min_by_key(|(_, (count, _))| *count)
            .map(|(k, v)| (k.clone(), *v))
        {
            counts.remove(&victim);
            counts.insert(resource.to_owned(), (min + 1, min));
        }
    }

    /// The `n` most contended resources: (resource, refused acquires, maximum
    /// overcount), largest first.
    pub fn top(&self, n: usize) -> Vec<(String, u64, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, u64, u64)> = counts
            .iter()
            .map(|(k, (c, e))| (k.clone(), *c, *e))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_long_tail() {
        let top = TopContended::default();
        for _ in 0..500 {
            top.record("hot/a");
        }
        for i in 0..1_000 {
            top.record(&format!("tail/{i}"));
            if i % 3 == 0 {
                top.record("hot/b");
            }
        }
        let best = top.top(2);
        assert_eq!(best[0].0, "hot/a");
        assert_eq!(best[1].0, "hot/b");
        assert!(top.top(1_000).len() <= CAPACITY);
    }
}
