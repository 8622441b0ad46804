//! A short PPO run from a random network learns: the mean episode reward of
//! its later updates beats its first.

use std::time::Duration;

use sim::{Randomization, Track};
use trainer::actions;
use trainer::net::NetKind;
use trainer::ppo::{self, Hyper, PpoConfig};
use trainer::reward::{Preset, Reward};

#[test]
fn a_short_ppo_run_improves_the_mean_reward() {
    let cfg = PpoConfig {
        tracks: vec![Track::builtin("oval").unwrap()],
        net: NetKind::Small,
        space: actions::parse("continuous").unwrap(),
        reward: Reward::Preset(Preset::CentreLine),
        hyper: Hyper {
            num_episodes_between_training: 16,
            num_epochs: 10,
            max_episodes: Some(16 * 9),
            ..Hyper::default()
        },
        seed: 1,
        time_budget: Duration::from_secs(600),
        envs: 16,
        // Short episodes keep each update cheap (a test, not a race).
        max_episode_steps: 80,
        speed_scale: 0.4,
        randomization: Randomization::none(),
        init: None,
    };
    let r = ppo::train(&cfg, |u| {
        eprintln!(
            "update {} reward {:.2} progress {:.1} entropy {:.3}",
            u.update, u.reward_mean, u.progress_mean, u.entropy
        )
    })
    .unwrap();
    let h = &r.history;
    assert!(h.len() >= 6, "{} updates", h.len());
    let first = h[0].reward_mean;
    let late = h[h.len() - 3..].iter().map(|s| s.reward_mean).sum::<f64>() / 3.0;
    assert!(
        late > first * 2.0,
        "mean reward per episode: first update {first:.2}, last three {late:.2}"
    );
}
