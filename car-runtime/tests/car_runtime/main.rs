//! car-runtime's one integration-test harness (one binary to link): the
//! daemon as `car-runtime run` assembles it, and the model check against
//! the real binary.

mod daemon;
mod model_check;
