//! Frame sources: the simulator (closes the loop through the sim actuator),
//! a replayed folder of frames, and a V4L2 camera.

pub mod replay;
pub mod sim;
pub mod v4l2;
