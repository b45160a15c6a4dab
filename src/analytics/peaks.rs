//! Peak concurrent viewers per minute: the aggregator samples its open views every
//! `analytics.flush_s` and keeps, per minute, the largest count of each playback id and of
//! each tenant; a minute is written once it has passed.

use std::collections::HashMap;

use crate::db::Peak;

/// The largest count sampled in each minute not yet written: (tenant, playback id or `""`
/// for the whole tenant, minute) → viewers.
#[derive(Debug, Default)]
pub(super) struct Peaks(HashMap<(String, String, i64), i64>);

impl Peaks {
    /// Counts one sample taken at `now`: the (tenant, playback id) of each concurrent viewer.
    pub fn sample<'a>(&mut self, viewers: impl Iterator<Item = (&'a str, &'a str)>, now: i64) {
        let minute = now.div_euclid(60_000) * 60_000;
        let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
        for (tenant, playback_id) in viewers {
            *counts.entry((tenant, playback_id)).or_default() += 1;
            *counts.entry((tenant, "")).or_default() += 1;
        }
        for ((tenant, playback_id), n) in counts {
            let peak = self
                .0
                .entry((tenant.to_string(), playback_id.to_string(), minute))
                .or_default();
            *peak = (*peak).max(n);
        }
    }

    /// The peaks so far of the minutes not over yet (written early by a flush; a later
    /// write of a larger peak replaces them).
    pub fn current(&self) -> Vec<Peak> {
        self.0
            .iter()
            .map(|(key, viewers)| Peak {
                tenant_id: key.0.clone(),
                playback_id: key.1.clone(),
                minute: key.2,
                viewers: *viewers,
            })
            .collect()
    }

    /// Takes the peaks of the minutes before `now`'s (all of them at shutdown: `None`).
    pub fn take_before(&mut self, now: Option<i64>) -> Vec<Peak> {
        let cut = now.map_or(i64::MAX, |n| n.div_euclid(60_000) * 60_000);
        let done: Vec<_> = self.0.keys().filter(|k| k.2 < cut).cloned().collect();
        done.into_iter()
            .map(|key| {
                let viewers = self.0.remove(&key).expect("listed above");
                Peak {
                    tenant_id: key.0,
                    playback_id: key.1,
                    minute: key.2,
                    viewers,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minute keeps its largest sample, per playback id and for the tenant as a whole,
    /// and is handed over once it has passed.
    #[test]
    fn a_minute_keeps_its_largest_sample() {
        let mut peaks = Peaks::default();
        let t0 = 1_765_000_020_000; // a whole minute
        peaks.sample([("t", "a"), ("t", "a"), ("t", "b")].into_iter(), t0 + 5_000);
        peaks.sample(
            [("t", "a"), ("t", "b"), ("t", "b"), ("u", "c")].into_iter(),
            t0 + 15_000,
        );
        peaks.sample([("t", "a")].into_iter(), t0 + 65_000);
        assert!(
            peaks.take_before(Some(t0 + 59_000)).is_empty(),
            "the minute is not over"
        );
        let mut got: Vec<(String, String, i64, i64)> = peaks
            .take_before(Some(t0 + 65_000))
            .into_iter()
            .map(|p| (p.tenant_id, p.playback_id, p.minute, p.viewers))
            .collect();
        got.sort();
        let want = [
            ("t", "", 3),
            ("t", "a", 2),
            ("t", "b", 2),
            ("u", "", 1),
            ("u", "c", 1),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(t, p, n)| (t.to_string(), p.to_string(), t0, *n))
            .collect();
        assert_eq!(got, want);
        assert_eq!(peaks.current().len(), 2, "the next minute so far");
        let rest = peaks.take_before(None);
        assert_eq!(rest.len(), 2, "the next minute, at shutdown: {rest:?}");
    }
}
