//! How an event's target is shared among its participating DERs. Pure: numbers in,
//! numbers out.
//!
//! The rule: each DER is asked for a share of the target in proportion to its
//! committed kW, never more than its cap (the smaller of its commitment and its
//! nameplate). What a capped DER cannot take is shared again among the others in the
//! same proportion ("water filling"), so the fleet covers the target whenever the sum
//! of caps allows; otherwise every DER is asked for its cap and the total falls short.
//! Allocations are rounded down to whole watts (3 decimals of kW), which is what the
//! database keeps, so no DER is ever asked for more than its cap.

/// One participant's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Participant {
    pub committed_kw: f64,
    pub nameplate_kw: f64,
}

impl Participant {
    fn cap(&self) -> f64 {
        self.committed_kw.min(self.nameplate_kw).max(0.0)
    }
}

/// Each participant's share, in input order, and their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub kw: Vec<f64>,
    pub total_kw: f64,
}

/// Shares `target_kw` among `participants` (see the module's rule).
pub fn allocate(target_kw: f64, participants: &[Participant]) -> Allocation {
    let mut kw = vec![0.0; participants.len()];
    let mut open: Vec<usize> = (0..participants.len())
        .filter(|&i| participants[i].cap() > 0.0)
        .collect();
    let mut remaining = if target_kw.is_finite() {
        target_kw.max(0.0)
    } else {
        0.0
    };
    // Each round either settles every open DER or caps at least one, so at most
    // `participants.len()` rounds.
    while remaining > 0.0 && !open.is_empty() {
        let weight: f64 = open.iter().map(|&i| participants[i].committed_kw).sum();
        if weight <= 0.0 {
            break;
        }
        let per_kw = remaining / weight;
        let (capped, fits): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| participants[i].committed_kw * per_kw >= participants[i].cap());
        if capped.is_empty() {
            for i in fits {
                kw[i] = participants[i].committed_kw * per_kw;
            }
            break;
        }
        for i in capped {
            kw[i] = participants[i].cap();
            remaining -= kw[i];
        }
        open = fits;
    }
    for (share, p) in kw.iter_mut().zip(participants) {
        *share = round_down_watts(share.min(p.cap()));
    }
    let total_kw = round_down_watts(kw.iter().sum::<f64>() + 1e-9);
    Allocation { kw, total_kw }
}

fn round_down_watts(kw: f64) -> f64 {
    ((kw * 1000.0) + 1e-6).floor() / 1000.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(committed_kw: f64, nameplate_kw: f64) -> Participant {
        Participant {
            committed_kw,
            nameplate_kw,
        }
    }

    #[test]
    fn shares_in_proportion_to_commitment() {
        // 30 kW over commitments 10, 20, 30 (sum 60): half of each.
        let a = allocate(30.0, &[p(10.0, 50.0), p(20.0, 50.0), p(30.0, 50.0)]);
        assert_eq!(a.kw, vec![5.0, 10.0, 15.0]);
        assert_eq!(a.total_kw, 30.0);
    }

    #[test]
    fn a_small_nameplate_caps_and_the_rest_take_up_the_difference() {
        // 20 kW over commitments 10 and 10; the first DER's nameplate is 4 kW.
        // Proportional would be 10 + 10; the first is capped at 4, the second takes
        // the remaining 16 but is capped at its commitment of 10: total 14, short 6.
        let a = allocate(20.0, &[p(10.0, 4.0), p(10.0, 50.0)]);
        assert_eq!(a.kw, vec![4.0, 10.0]);
        assert_eq!(a.total_kw, 14.0);
        // 12 kW: proportional 6 + 6; the first is capped at 4, the second takes 8.
        let a = allocate(12.0, &[p(10.0, 4.0), p(10.0, 50.0)]);
        assert_eq!(a.kw, vec![4.0, 8.0]);
        assert_eq!(a.total_kw, 12.0);
    }

    #[test]
    fn a_fleet_too_small_gets_its_caps() {
        let a = allocate(1000.0, &[p(3.0, 5.0), p(2.5, 2.0)]);
        assert_eq!(a.kw, vec![3.0, 2.0]);
        assert_eq!(a.total_kw, 5.0);
    }

    #[test]
    fn rounds_down_to_watts() {
        // 10 kW over three equal DERs: 3.333 each, 9.999 in all, never above target.
        let a = allocate(10.0, &[p(5.0, 5.0), p(5.0, 5.0), p(5.0, 5.0)]);
        assert_eq!(a.kw, vec![3.333, 3.333, 3.333]);
        assert_eq!(a.total_kw, 9.999);
    }

    #[test]
    fn nothing_to_share_with_or_nothing_to_share() {
        assert_eq!(allocate(10.0, &[]).total_kw, 0.0);
        assert_eq!(allocate(0.0, &[p(1.0, 1.0)]).kw, vec![0.0]);
        assert_eq!(allocate(f64::NAN, &[p(1.0, 1.0)]).kw, vec![0.0]);
    }

    fn fleet() -> impl Strategy<Value = Vec<Participant>> {
        prop::collection::vec(
            (0.001f64..500.0, 0.001f64..500.0).prop_map(|(c, n)| p(c, n)),
            0..60,
        )
    }

    proptest! {
        #[test]
        fn never_above_a_cap_or_the_target(target in 0.0f64..20_000.0, fleet in fleet()) {
            let a = allocate(target, &fleet);
            for (kw, d) in a.kw.iter().zip(&fleet) {
                prop_assert!(*kw >= 0.0 && *kw <= d.cap() + 1e-9, "{kw} > cap {}", d.cap());
            }
            prop_assert!(a.total_kw <= target + 1e-6);
        }

        #[test]
        fn covers_the_target_when_the_caps_allow(target in 0.0f64..20_000.0, fleet in fleet()) {
            let a = allocate(target, &fleet);
            let caps: f64 = fleet.iter().map(Participant::cap).sum();
            // Rounding down costs at most a watt per DER.
            let slack = 0.001 * fleet.len() as f64 + 1e-6;
            prop_assert!(a.total_kw >= target.min(caps) - slack, "{} < {}", a.total_kw, target.min(caps));
        }

        #[test]
        fn uncapped_ders_get_the_same_share_of_their_commitment(target in 0.0f64..20_000.0, fleet in fleet()) {
            let a = allocate(target, &fleet);
            let ratios: Vec<f64> = a.kw.iter().zip(&fleet)
                .filter(|(kw, d)| **kw < d.cap() - 0.002 && d.committed_kw > 1.0)
                .map(|(kw, d)| kw / d.committed_kw)
                .collect();
            if let (Some(lo), Some(hi)) = (ratios.iter().copied().reduce(f64::min), ratios.iter().copied().reduce(f64::max)) {
                // Within rounding: a watt over the smallest commitment counted.
                prop_assert!(hi - lo <= 0.002, "ratios spread {lo}..{hi}");
            }
        }

        #[test]
        fn order_does_not_matter(target in 0.0f64..20_000.0, fleet in fleet()) {
            let forward = allocate(target, &fleet);
            let reversed: Vec<Participant> = fleet.iter().rev().copied().collect();
            let mut backward = allocate(target, &reversed).kw;
            backward.reverse();
            for (f, b) in forward.kw.iter().zip(&backward) {
                prop_assert!((f - b).abs() <= 0.001 + 1e-9);
            }
        }
    }
}
