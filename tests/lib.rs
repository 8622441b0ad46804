//! End-to-end tests live in `tests/tests/*.rs`; they run the workspace's real
//! binaries (`car-runtime`, `car-sim`) as a racer would and check what a racer
//! would see. This library holds only helpers shared by those tests.
