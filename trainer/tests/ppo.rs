//! A short PPO run from a random network learns: the mean episode reward of
//! its later updates beats its first. An interrupted run resumes from its
//! checkpoint with the same networks, optimisers and random stream.

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
        checkpoint_dir: None,
    };
    let r = ppo::train(&cfg, false, |u| {
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

/// A cheap run: 8 cars, 8 episodes of 6 steps per update (every car ends
/// its episode on the same step, so no episode spans two updates), one epoch.
fn short_run(dir: &std::path::Path, episodes: usize, space: &str) -> PpoConfig {
    PpoConfig {
        tracks: vec![Track::builtin("oval").unwrap()],
        net: NetKind::Small,
        space: actions::parse(space).unwrap(),
        reward: Reward::Preset(Preset::CentreLine),
        hyper: Hyper {
            num_episodes_between_training: 8,
            num_epochs: 2,
            batch_size: 16,
            max_episodes: Some(episodes),
            ..Hyper::default()
        },
        seed: 3,
        time_budget: Duration::from_secs(600),
        envs: 8,
        max_episode_steps: 6,
        speed_scale: 0.4,
        randomization: Randomization::none(),
        init: None,
        checkpoint_dir: Some(dir.to_path_buf()),
    }
}

/// What an update computed, to 7 digits (a resumed history has been
/// through JSON), without its wall-clock time.
fn figures(h: &[ppo::UpdateStats]) -> Vec<String> {
    h.iter()
        .map(|s| {
            format!(
                "update {} episodes {} steps {} reward {:.6e} entropy {:.6e} policy loss {:.6e} value loss {:.6e} check {:.6e}",
                s.update, s.episodes, s.steps, s.reward_mean, s.entropy, s.policy_loss, s.value_loss, s.eval_progress
            )
        })
        .collect()
}

#[test]
fn an_interrupted_ppo_run_resumes_where_it_stopped() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let whole = ppo::train(
        &short_run(&t.path().join("w"), 32, "continuous"),
        false,
        |_| {},
    )
    .unwrap();
    // The premise of the comparison: every update is 8 whole episodes.
    let per_update: Vec<(usize, usize)> = whole
        .history
        .iter()
        .map(|s| (s.episodes, s.steps))
        .collect();
    assert_eq!(per_update, [(8, 48), (16, 48), (24, 48), (32, 48)]);

    let first = ppo::train(&short_run(&a, 16, "continuous"), false, |_| {}).unwrap();
    assert_eq!(first.history.len(), 2);
    for f in [
        "state.json",
        "actor.bpk",
        "critic.bpk",
        "actor-optim.bpk",
        "critic-optim.bpk",
        "best.bpk",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let names: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");

    // Resumed, the run computes exactly what the uninterrupted one did: the
    // networks, Adam's moments, the random stream and each car's episode
    // all come back from the checkpoint.
    // (--seed given again differently: the run goes on with its own.)
    let mut again = short_run(&a, 32, "continuous");
    again.seed = 99;
    let resumed = ppo::train(&again, true, |_| {}).unwrap();
    assert_eq!(figures(&resumed.history), figures(&whole.history));
    assert_eq!(resumed.best_update, whole.best_update);
    assert!(resumed.history[2].elapsed_s >= first.history[1].elapsed_s);

    // Nothing left to do: the run ends at once with the checkpoint's best network.
    let done = ppo::train(&short_run(&a, 32, "continuous"), true, |_| {}).unwrap();
    assert_eq!(figures(&done.history), figures(&whole.history));
    assert_eq!(done.best_update, whole.best_update);

    // A different action space, or a damaged file, is refused by name.
    let e = ppo::train(&short_run(&a, 40, "discrete"), true, |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("state.json") && e.contains("continuous") && e.contains("discrete"),
        "{e}"
    );
    std::fs::write(a.join("critic.bpk"), b"not a model").unwrap();
    let e = ppo::train(&short_run(&a, 40, "continuous"), true, |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("critic.bpk"), "{e}");
    let none = t.path().join("none");
    let e = ppo::train(&short_run(&none, 40, "continuous"), true, |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("state.json") && e.contains("cannot resume"),
        "{e}"
    );
}
