//! Property tests of the command -> pulse mapping and the driver.

use proptest::prelude::*;
use servo_driver::sim::SimActuator;
use servo_driver::sim_link::SimLink;
use servo_driver::{Calibration, ChannelCalibration, ServoDriver};
use std::sync::Arc;

fn channel() -> impl Strategy<Value = ChannelCalibration> {
    (500_000u32..=2_499_998, any::<bool>()).prop_flat_map(|(min, pos)| {
        ((min + 1)..=2_499_999).prop_flat_map(move |mid| {
            ((mid + 1)..=2_500_000).prop_map(move |max| ChannelCalibration {
                min,
                mid,
                max,
                polarity: if pos { 1 } else { -1 },
            })
        })
    })
}

fn calibration() -> impl Strategy<Value = Calibration> {
    (channel(), channel(), 3_000_000u32..=50_000_000).prop_map(|(steering, throttle, period_ns)| {
        Calibration {
            steering,
            throttle,
            period_ns,
        }
    })
}

/// Any f32 at all, weighted towards the interesting ones.
fn command() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1.0f32..=1.0,
        1 => any::<f32>(),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
    ]
}

proptest! {
    #[test]
    fn generated_calibrations_are_valid(c in calibration()) {
        prop_assert!(c.validate().is_ok());
    }

    #[test]
    fn pulse_stays_within_min_max(c in channel(), v in command()) {
        let p = c.pulse_ns(v);
        prop_assert!(c.min <= p && p <= c.max, "{p} outside [{}, {}]", c.min, c.max);
    }

    #[test]
    fn neutral_is_exactly_mid(c in channel()) {
        prop_assert_eq!(c.pulse_ns(0.0), c.mid);
        prop_assert_eq!(c.pulse_ns(-0.0), c.mid);
        prop_assert_eq!(c.pulse_ns(f32::NAN), c.mid);
    }

    #[test]
    fn ends_are_exactly_min_and_max(c in channel()) {
        let (lo, hi) = if c.polarity == 1 { (c.min, c.max) } else { (c.max, c.min) };
        prop_assert_eq!(c.pulse_ns(-1.0), lo);
        prop_assert_eq!(c.pulse_ns(1.0), hi);
    }

    #[test]
    fn polarity_flips_direction(c in channel(), v in 0.0f32..=1.0) {
        let plus = ChannelCalibration { polarity: 1, ..c };
        let minus = ChannelCalibration { polarity: -1, ..c };
        prop_assert!(plus.pulse_ns(v) >= c.mid);
        prop_assert!(minus.pulse_ns(v) <= c.mid);
        prop_assert_eq!(minus.pulse_ns(v), plus.pulse_ns(-v));
        prop_assert_eq!(minus.pulse_ns(-v), plus.pulse_ns(v));
    }

    #[test]
    fn mapping_is_monotonic(c in channel(), a in -1.0f32..=1.0, b in -1.0f32..=1.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (plo, phi) = (c.pulse_ns(lo), c.pulse_ns(hi));
        if c.polarity == 1 { prop_assert!(plo <= phi) } else { prop_assert!(plo >= phi) }
    }

    #[test]
    fn sim_wire_undoes_the_calibration(c in calibration(), s in -1.0f32..=1.0, t in -1.0f32..=1.0) {
        let link = Arc::new(SimLink::default());
        let act = SimActuator::new(Arc::clone(&link), c);
        let rec = act.record();
        let mut d = ServoDriver::new(c, Box::new(act)).unwrap();
        d.drive(s, t).unwrap();
        let (ls, lt) = link.load();
        // One ns of rounding over the shorter half-range.
        let tol = |ch: &ChannelCalibration| 1.0 / (ch.mid - ch.min).min(ch.max - ch.mid) as f32 + 1e-6;
        prop_assert!((ls - s).abs() <= tol(&c.steering), "{ls} vs {s}");
        prop_assert!((lt - t).abs() <= tol(&c.throttle), "{lt} vs {t}");
        prop_assert_eq!(rec.last(), c.pulses(s, t));
    }

    #[test]
    fn driver_never_puts_bad_commands_on_the_wire(c in calibration(), s in command(), t in command()) {
        let link = Arc::new(SimLink::default());
        let act = SimActuator::new(link, c);
        let rec = act.record();
        let mut d = ServoDriver::new(c, Box::new(act)).unwrap();
        let p = d.drive(s, t).unwrap();
        prop_assert_eq!(rec.last(), p);
        prop_assert!(c.steering.min <= p.steering_ns && p.steering_ns <= c.steering.max);
        prop_assert!(c.throttle.min <= p.throttle_ns && p.throttle_ns <= c.throttle.max);
        let bad = d.bad_commands();
        let expect = |v: f32| (v.is_nan() as u64, (!v.is_nan() && !(-1.0..=1.0).contains(&v)) as u64);
        let (sn, so) = expect(s);
        let (tn, to) = expect(t);
        prop_assert_eq!(bad.nan, sn + tn);
        prop_assert_eq!(bad.out_of_range, so + to);
    }
}
