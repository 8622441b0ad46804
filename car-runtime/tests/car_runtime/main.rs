//! car-runtime's one integration-test harness (one binary to link): the
//! daemon as `car-runtime run` assembles it, its lights on a fake sysfs
//! tree, and the model check against the real binary.

mod daemon;
mod lights;
mod model_check;
