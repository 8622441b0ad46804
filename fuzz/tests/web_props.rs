//! Property tests of the web bodies the fuzzer cannot easily reach by
//! mutation: well-formed JSON with arbitrary numbers, through the real
//! router (`fuzz_targets::web::post`). The answer must follow the route's
//! stated range exactly: inside it 200, outside it 400, never a 5xx.

use axum::http::StatusCode;
use fuzz_targets::web::{post, route_index};
use proptest::prelude::*;

fn cmd(v: serde_json::Value) -> (StatusCode, String) {
    post(
        route_index("/api/command").unwrap(),
        true,
        &serde_json::to_vec(&v).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn manual_commands_inside_the_range_pass_and_outside_are_refused(
        steering in -3.0f64..3.0, throttle in -3.0f64..3.0,
    ) {
        let (status, text) = cmd(serde_json::json!({"cmd": "manual", "steering": steering, "throttle": throttle}));
        let inside = (-1.0..=1.0).contains(&(steering as f32)) && (-1.0..=1.0).contains(&(throttle as f32));
        let want = if inside { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        prop_assert_eq!(status, want, "{} {} -> {}", steering, throttle, text);
    }

    #[test]
    fn max_speed_is_0_to_100_percent(percent in -50.0f64..150.0) {
        let (status, text) = cmd(serde_json::json!({"cmd": "set_max_speed", "percent": percent}));
        let want = if (0.0..=100.0).contains(&(percent as f32)) { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        prop_assert_eq!(status, want, "{} -> {}", percent, text);
    }

    #[test]
    fn a_calibration_is_taken_exactly_when_the_driver_accepts_it(
        v in proptest::collection::vec(400_000u32..2_700_000, 6),
        pol in proptest::collection::vec(prop_oneof![Just(1i8), Just(-1i8), Just(0i8), Just(2i8)], 2),
        period_ns in 1_000_000u32..60_000_000,
    ) {
        let ch = |i: usize, p: i8| serde_json::json!({"min": v[i], "mid": v[i + 1], "max": v[i + 2], "polarity": p});
        let body = serde_json::json!({"steering": ch(0, pol[0]), "throttle": ch(3, pol[1]), "period_ns": period_ns});
        let (status, text) = post(route_index("/api/calibration").unwrap(), true, &serde_json::to_vec(&body).unwrap());
        let cal: servo_driver::Calibration = serde_json::from_value(body).unwrap();
        let want = if cal.validate().is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        prop_assert_eq!(status, want, "{}", text);
    }

    #[test]
    fn any_json_value_is_answered_without_a_server_error(
        route in 0usize..7, s in "\\PC{0,40}", n in proptest::num::f64::ANY, b in any::<bool>(),
    ) {
        for body in [
            serde_json::json!({"cmd": s, "percent": n}),
            serde_json::json!({"password": s}),
            serde_json::json!({"duration_s": n}),
            serde_json::json!({"channel": s, "pulse_ns": n}),
            serde_json::json!([s, n, b]),
            serde_json::json!({"Calibration": {"Servo": {"min": n}, "Motor": s}}),
        ] {
            let (status, text) = post(route, true, &serde_json::to_vec(&body).unwrap());
            prop_assert!(!status.is_server_error(), "{} {} -> {} {}", route, body, status, text);
        }
    }
}
