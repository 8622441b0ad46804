"""A reward function as a DeepRacer racer writes it: stay near the centre
line and point the car along the track. Runs unchanged on the DeepRacer
console and with `car-trainer train --algo ppo --reward this_file.py`."""
import math


def reward_function(params):
    if params["is_offtrack"]:
        return 1e-3

    # Near the centre line: 1.0 on it, falling to 0 at the border.
    half = 0.5 * params["track_width"]
    centre = max(0.0, 1.0 - params["distance_from_center"] / half)

    # Direction of the track between the waypoints around the car.
    waypoints = params["waypoints"]
    prev_wp, next_wp = params["closest_waypoints"]
    (x0, y0), (x1, y1) = waypoints[prev_wp], waypoints[next_wp]
    track_dir = math.degrees(math.atan2(y1 - y0, x1 - x0))
    diff = abs(track_dir - params["heading"]) % 360.0
    diff = min(diff, 360.0 - diff)
    heading = 1.0 if diff < 10.0 else max(0.0, 1.0 - (diff - 10.0) / 30.0)

    return float(1e-3 + centre * (0.5 + 0.5 * heading))
