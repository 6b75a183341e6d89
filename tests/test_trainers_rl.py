"""RLTrainer: every algorithm trains and evaluates; evaluation is the backtest's account; pruning propagates."""
import numpy as np
import pandas as pd
import pytest

from atf.backtest import backtest
from atf.data import load_dataset
from atf.trainers.rl import RLTrainer
from atf.tuning import Pruned


@pytest.fixture(scope="module")
def data():
    df = load_dataset("us_stocks", "MSFT").loc["2005":"2008"]
    return df, np.arange(0, 600), np.arange(602, len(df))


@pytest.mark.parametrize("algo, params", [
    ("ppo", {"n_steps": 128, "batch_size": 64}),
    ("a2c", {"n_steps": 16}),
    ("dqn", {"learning_starts": 64, "buffer_size": 2_000, "train_freq": 4}),
    ("sac", {"learning_starts": 64, "buffer_size": 2_000, "batch_size": 64}),
])
def test_each_algorithm_trains_and_evaluates(data, algo, params):
    df, tr, va = data
    t = RLTrainer(algo, {**params, "net_arch": "tiny"}, {"window": 5, "fee_bps": 5}, total_timesteps=256, eval_every=128)
    res = t.train(df, tr, va)
    assert len(res.history) == 2 and res.history["val_reward"].notna().all()
    ev = t.evaluate(df, va)
    assert np.isfinite(ev["trading"]["total_return"]) and 0 < len(ev["returns"]) < len(va)
    assert (t.make_env(df, va).action_kind == "continuous") == (algo == "sac")


def test_evaluation_account_is_the_backtest(data):
    df, tr, va = data
    t = RLTrainer("ppo", {"n_steps": 128, "batch_size": 64}, {"window": 5, "fee_bps": 7, "slippage_bps": 3,
                                                              "action": "discrete3"}, total_timesteps=256, eval_every=256)
    t.train(df, tr, va)
    ev = t.evaluate(df, va)
    pos = ev["positions"]
    start = df.index.get_loc(pos.index[0]) - 1                       # the first decision is taken a bar earlier
    close = df["close"].iloc[start:start + len(pos) + 1]
    bt = backtest(close, pd.Series(np.r_[pos.to_numpy(), 0.0], close.index), fee_bps=7, slippage_bps=3)
    assert abs(bt.final_equity - ev["equity"]) < 1e-9


def test_pruning_from_the_eval_callback_stops_training(data):
    df, tr, va = data
    def prune(step, row): raise Pruned(f"pruned at {step}")
    with pytest.raises(Pruned):
        RLTrainer("a2c", {"n_steps": 16}, {"window": 5}, total_timesteps=256, eval_every=64).train(df, tr, va, callback=prune)


def test_saved_agent_reloads_with_the_same_actions(data, tmp_path):
    from stable_baselines3 import PPO
    df, tr, va = data
    t = RLTrainer("ppo", {"n_steps": 128, "batch_size": 64}, {"window": 5}, total_timesteps=128, eval_every=128)
    t.train(df, tr, va)
    zip_path = t.save(tmp_path / "agent")
    assert zip_path.exists() and (tmp_path / "agent.atf.pkl").exists()
    env = t.make_env(df, va)
    obs, _ = env.reset()
    again = PPO.load(zip_path)
    for _ in range(50):
        a1, _ = t.model.predict(obs, deterministic=True); a2, _ = again.predict(obs, deterministic=True)
        assert a1 == a2
        obs, *_ = env.step(a1)


def test_dqn_refuses_continuous_actions():
    with pytest.raises(ValueError, match="dqn needs a discrete action space"):
        RLTrainer("dqn", env_kwargs={"action": "continuous"})


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "sac"])
def test_every_rl_space_draw_builds_an_agent(data, algo):
    "rl-zoo style spaces: every sampled parameter set is accepted by the stable-baselines3 constructor."
    import optuna
    from atf.trainers.rl import RL_SPACES, algo_class, policy_kwargs
    from atf.tuning import check_space, suggest
    df, tr, va = data
    env = RLTrainer(algo, env_kwargs={"window": 5}).make_env(df, tr, training=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = suggest(study.ask(), check_space(RL_SPACES[algo]))
        kw = policy_kwargs(params)
        if "n_steps" in params and "batch_size" in params: params["batch_size"] = min(params["batch_size"], params["n_steps"])
        algo_class(algo)("MlpPolicy", env, policy_kwargs=kw or None, device="cpu", **params)


def test_rl_objective_reports_and_prunes(data, tmp_path):
    from atf.trainers.rl import rl_objective
    from atf.tuning import tune
    df, tr, va = data
    seen = []
    obj = rl_objective(df, tr, va, "a2c", {"window": 5}, total_timesteps=192, eval_every=64)
    value = obj({"n_steps": 16, "net_arch": "tiny"}, lambda step, v: seen.append((step, v)))
    assert [s for s, _ in seen] == [64, 128, 192] and np.isfinite(value) and value == seen[-1][1]
    res = tune(obj, {"n_steps": [8, 16], "net_arch": ["tiny"]}, n_trials=3, storage=f"sqlite:///{tmp_path / 'rl.db'}",
               study_name="a2c", pruner="none")
    assert res.counts.get("COMPLETE", 0) + res.counts.get("PRUNED", 0) == 3


@pytest.mark.parametrize("extra, action", [({"model": {"name": "sac"}}, "continuous"),
                                           ({"model": {"name": "ppo"}, "rl": {"action": "discrete3"}}, "discrete3")])
def test_a_long_only_config_refuses_an_agent_that_can_go_short(extra, action):
    "trading.long_only (the default) with an action space that holds shorts is a config error, not a silent short book."
    from atf.config import ConfigError
    from atf.experiments import load_experiment
    with pytest.raises(ConfigError, match=f"trading.long_only: .* action '{action}' can go short"):
        load_experiment({**extra, "tuning": {"metric": "sharpe"}})
    load_experiment({**extra, "tuning": {"metric": "sharpe"}, "trading": {"long_only": False}})
