//! Property tests for the `.npy` parser and the track loader behind it:
//! arbitrary bytes and mutated real headers never panic and never hang,
//! and whatever is accepted is a well-formed array or track.

use proptest::prelude::*;
use sim::npy::{parse_f64_2d, write_f64_2d};
use sim::Track;

fn good_track_bytes() -> Vec<u8> {
    // A 4 m square, closed in the file.
    let c = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
    let mut flat = Vec::new();
    for p in c {
        flat.extend([p[0], p[1], p[0] + 0.3, p[1] + 0.3, p[0] - 0.3, p[1] - 0.3]);
    }
    write_f64_2d(5, 6, &flat)
}

/// Parse as an array and as a track; both must return (not panic), and an
/// accepted array must match its own shape.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(a) = parse_f64_2d(bytes) {
        prop_assert_eq!(a.data.len(), a.rows * a.cols);
        prop_assert!(a.data.len() * 8 <= bytes.len());
    }
    if let Ok(t) = Track::from_npy_bytes("p", "p.npy", bytes) {
        prop_assert!(t.length().is_finite() && t.length() > 0.0);
        prop_assert!(t.width().is_finite());
        // The geometry answers for any position, including silly ones.
        for s in [0.0, -1.0, t.length(), 1e9, f64::NAN] {
            let (p, h) = t.point_at(s);
            prop_assert!(t.segment_at(s) < t.segment_count());
            let _ = (p, h);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(
        major in 0u8..5, minor in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend([major, minor]);
        b.extend(rest);
        check(&b)?;
    }

    /// A real header with bytes flipped, cut short or lengthened.
    #[test]
    fn mutated_real_headers_never_panic(
        flips in proptest::collection::vec((0usize..128, any::<u8>()), 0..8),
        cut in 0usize..400,
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut b = good_track_bytes();
        for (at, x) in flips {
            b[at] ^= x;
        }
        b.truncate(cut.min(b.len()));
        b.extend(extra);
        check(&b)?;
    }

    /// Header text rewritten with arbitrary shape and dtype values.
    #[test]
    fn arbitrary_header_values_never_panic(
        shape in "\\(([0-9]{0,20}, ?){0,4}[0-9]{0,20}\\)",
        descr in "[<>=|]?[a-zA-Z][0-9]{0,3}",
        order in "(True|False|1|None)",
    ) {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((dict.len() as u16).to_le_bytes());
        b.extend(dict.as_bytes());
        b.extend(std::iter::repeat_n(0u8, 240));
        check(&b)?;
    }

    /// Any finite coordinates: a track comes out or an error does, quickly.
    #[test]
    fn arbitrary_coordinates_never_panic_or_hang(
        rows in proptest::collection::vec(proptest::array::uniform6(
            prop_oneof![any::<f64>(), -50.0f64..50.0, Just(0.0), Just(1e-200), Just(1e300)]
        ), 0..12),
    ) {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        check(&write_f64_2d(rows.len(), 6, &flat))?;
    }
}
