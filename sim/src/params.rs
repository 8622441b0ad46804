//! The DeepRacer reward-function `params` dict, field for field.

use serde::{Deserialize, Serialize};

/// Every key of DeepRacer's `params`, same names, units and meaning, so a
/// reward function written for DeepRacer reads it unchanged (serde
/// serialises to exactly the DeepRacer keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// All four wheel contact points are on the road.
    pub all_wheels_on_track: bool,
    /// Metres: the point 0.14 m ahead of the car's origin (rear axle centre).
    pub x: f64,
    pub y: f64,
    /// Degrees in (-180, 180]: car yaw.
    pub heading: f64,
    /// Metres to the nearest centre-line point (of the `x, y` point).
    pub distance_from_center: f64,
    pub is_left_of_center: bool,
    /// 0-100: % of the lap driven since the episode's start point.
    pub progress: f64,
    /// Steps so far this episode (15 per second).
    pub steps: u64,
    /// Commanded speed, m/s.
    pub speed: f64,
    /// Commanded steering angle, degrees, positive to the left.
    pub steering_angle: f64,
    pub track_width: f64,
    pub track_length: f64,
    /// Centre-line waypoints as in the track file.
    pub waypoints: Vec<[f64; 2]>,
    /// `[previous, next]` waypoint indices around the car.
    pub closest_waypoints: [usize; 2],
    /// No wheel on the road.
    pub is_offtrack: bool,
    /// Always false: the simulator has no obstacles yet.
    pub is_crashed: bool,
    /// True when the track is driven clockwise (against its file order).
    pub is_reversed: bool,
    /// Object-avoidance keys: empty / zero without objects, as DeepRacer
    /// sends on time-trial tracks.
    pub closest_objects: [usize; 2],
    pub objects_distance: Vec<f64>,
    pub objects_heading: Vec<f64>,
    pub objects_left_of_center: Vec<bool>,
    pub objects_location: Vec<[f64; 2]>,
    pub objects_speed: Vec<f64>,
    pub object_in_camera: bool,
}

impl Params {
    pub(crate) fn new(waypoints: Vec<[f64; 2]>, track_width: f64, track_length: f64) -> Params {
        Params {
            all_wheels_on_track: true,
            x: 0.0,
            y: 0.0,
            heading: 0.0,
            distance_from_center: 0.0,
            is_left_of_center: false,
            progress: 0.0,
            steps: 0,
            speed: 0.0,
            steering_angle: 0.0,
            track_width,
            track_length,
            waypoints,
            closest_waypoints: [0, 1],
            is_offtrack: false,
            is_crashed: false,
            is_reversed: false,
            closest_objects: [0, 0],
            objects_distance: Vec::new(),
            objects_heading: Vec::new(),
            objects_left_of_center: Vec::new(),
            objects_location: Vec::new(),
            objects_speed: Vec::new(),
            object_in_camera: false,
        }
    }
}
