"""TradingEnv: gymnasium and SB3 checkers, vectorised envs, and equity equal to atf.backtest to 1e-9."""
import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import atf.envs  # noqa: F401  (registers atf/Trading-v0)
from atf.backtest import backtest
from atf.data import load_dataset
from atf.envs import TradingEnv


@pytest.fixture(scope="module")
def ibm() -> pd.DataFrame:
    return load_dataset("us_stocks", "IBM").iloc[:400]


def run_episode(env, actions):
    obs, info = env.reset()
    start, targets, rewards = info["bar"], [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        targets.append(env.unwrapped._target(a)); rewards.append(r)
        if term or trunc: break
    return start, targets, rewards, info


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["discrete3", "discrete2", "continuous"]), fee=st.floats(0, 30), slip=st.floats(0, 30),
       seed=st.integers(0, 10_000))
def test_episode_equity_equals_backtest(ibm, kind, fee, slip, seed):
    env = TradingEnv(ibm, window=5, action=kind, fee_bps=fee, slippage_bps=slip)
    env.action_space.seed(seed)
    start, targets, rewards, info = run_episode(env, [env.action_space.sample() for _ in range(len(ibm))])
    bt = backtest(ibm["close"].iloc[start:], pd.Series(targets + [0.0], index=ibm.index[start:]), fee, slip)
    assert abs(bt.final_equity - info["equity"]) < 1e-9
    assert np.isclose(np.exp(np.sum(rewards)), info["equity"], rtol=1e-12)


def test_checkers_pass_for_every_action_kind(ibm):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check
    for kind in ("discrete3", "discrete2", "continuous"):
        for reward in ("log_return", "differential_sharpe"):
            env = TradingEnv(ibm, window=8, action=kind, reward=reward, include_pnl=True, fee_bps=5)
            check_env(env)
            sb3_check(env, warn=False)


def test_make_with_no_arguments_and_with_a_frame_or_dataset(ibm):
    assert gym.make("atf/Trading-v0").unwrapped.index[0] == load_dataset("us_stocks", "AAPL").index[0]
    assert len(gym.make("atf/Trading-v0", df=ibm).unwrapped.index) == 400
    assert gym.make("atf/Trading-v0", dataset="eurusd_1h", asset="EURUSD").unwrapped.index.freq is None


def test_vectorised_envs(ibm):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    for cls in (DummyVecEnv, SubprocVecEnv):
        venv = make_vec_env(TradingEnv, n_envs=2, vec_env_cls=cls, env_kwargs=dict(df=ibm, window=5, random_start=True,
                                                                                   episode_length=50))
        obs = venv.reset()
        for _ in range(120):
            obs, rewards, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
        assert obs.shape == (2, venv.observation_space.shape[0]) and np.isfinite(obs).all()
        venv.close()


def test_random_starts_stay_inside_the_segment(ibm):
    env = TradingEnv(ibm, window=5, random_start=True, episode_length=30, segment=(100, 300))
    env.reset(seed=0)
    starts = set()
    for _ in range(20):
        start, _, _, last = run_episode(env, [1] * 100)
        starts.add(start)
        assert 100 <= start <= 300 - 31 and last["bar"] - start == 30 and last["bar"] < 300
    assert len(starts) > 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=500), "usable bars"),
    (dict(action="discrete5"), "action 'discrete5'"),
    (dict(reward="sharpe"), "reward 'sharpe'"),
    (dict(segment=(0, 1000)), "outside the 400 bars"),
])
def test_bad_arguments_fail_at_construction(ibm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TradingEnv(ibm, **kwargs)


def test_nan_features_inside_the_episode_are_refused(ibm):
    bad = ibm.copy()
    bad.iloc[200, bad.columns.get_loc("volume")] = np.nan
    with pytest.raises(Exception, match="NaN"):
        TradingEnv(bad, window=5)
