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
        targets.append(env.unwrapped.target(a)); rewards.append(r)
        if term or trunc: break
    return start, targets, rewards, info


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["discrete3", "discrete2", "continuous"]), fee=st.floats(0, 30), slip=st.floats(0, 30),
       seed=st.integers(0, 10_000), rebalance=st.sampled_from(["on_change", "every_bar"]), hold=st.integers(1, 4))
def test_episode_equity_equals_backtest(ibm, kind, fee, slip, seed, rebalance, hold):
    "In both rebalancing modes; actions repeat `hold` times so that continuous targets are held too."
    env = TradingEnv(ibm, window=5, action=kind, fee_bps=fee, slippage_bps=slip, rebalance=rebalance)
    env.action_space.seed(seed)
    actions = [a for a in (env.action_space.sample() for _ in range(len(ibm) // hold + 1)) for _ in range(hold)]
    start, targets, rewards, info = run_episode(env, actions)
    bt = backtest(ibm["close"].iloc[start:], pd.Series(targets + [0.0], index=ibm.index[start:]), fee, slip,
                  rebalance=rebalance)
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


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["discrete3", "discrete2", "continuous"]),
       reward=st.sampled_from(["log_return", "differential_sharpe"]), fee=st.floats(0, 30), slip=st.floats(0, 30),
       length=st.sampled_from([None, 37]), seed=st.integers(0, 10_000),
       rebalance=st.sampled_from(["on_change", "every_bar"]))
def test_vec_env_steps_exactly_like_n_single_envs(ibm, kind, reward, fee, slip, length, seed, rebalance):
    "TradingVecEnv in lockstep with N TradingEnvs auto-reset the way SB3's DummyVecEnv does: same obs, rewards, dones."
    from atf.envs import TradingVecEnv
    kw = dict(df=ibm, window=6, action=kind, reward=reward, fee_bps=fee, slippage_bps=slip, include_pnl=True,
              episode_length=length, rebalance=rebalance)
    n = 3
    venv = TradingVecEnv(n, **kw)
    singles = [TradingEnv(**kw) for _ in range(n)]
    obs = venv.reset()
    np.testing.assert_array_equal(obs, np.stack([s.reset()[0] for s in singles]))
    venv.action_space.seed(seed)
    dones = 0
    for _ in range(900):
        acts = np.array([venv.action_space.sample() for _ in range(n)])
        obs, rew, done, infos = venv.step(acts)
        for i, s in enumerate(singles):
            o, r, _, trunc, info = s.step(acts[i])
            assert trunc == done[i]
            np.testing.assert_allclose(rew[i], r, rtol=1e-5, atol=1e-7)
            if trunc:
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert abs(infos[i]["equity"] - info["equity"]) < 1e-12
                o, _ = s.reset(); dones += 1
            np.testing.assert_allclose(obs[i], o, rtol=1e-6, atol=1e-6)
    assert dones >= n


def test_vec_env_random_starts_and_sb3_training(ibm):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from atf.envs import TradingVecEnv
    venv = TradingVecEnv(8, seed=3, df=ibm, window=5, segment=(100, 300), random_start=True, episode_length=30)
    venv.reset()
    starts = set()
    for _ in range(200):
        starts.update(venv._t.tolist())
        _, _, done, infos = venv.step(np.ones(8, dtype=int))
        assert all(100 <= t < 300 for t in venv._t) and all("terminal_observation" in infos[i] for i in np.flatnonzero(done))
    assert len(starts) > 30
    model = PPO("MlpPolicy", VecMonitor(venv), n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(512)
    assert len(model.ep_info_buffer) > 0 and all(ep["l"] == 30 for ep in model.ep_info_buffer)


@settings(max_examples=15, deadline=None)
@given(fee=st.floats(0, 30), slip=st.floats(0, 30), long_only=st.booleans(), seed=st.integers(0, 10_000),
       rebalance=st.sampled_from(["on_change", "every_bar"]), hold=st.integers(1, 4))
def test_portfolio_env_equity_equals_backtest_portfolio(fee, slip, long_only, seed, rebalance, hold):
    from atf.backtest import backtest_portfolio
    from atf.envs import PortfolioEnv
    frames = {a: load_dataset("us_stocks", a).iloc[:300] for a in ("AAPL", "IBM", "MSFT")}
    env = PortfolioEnv(frames, window=4, fee_bps=fee, slippage_bps=slip, long_only=long_only, rebalance=rebalance)
    env.action_space.seed(seed)
    obs, info = env.reset()
    start, decided, k = info["bar"], [], 0
    while True:
        if k % hold == 0: action = env.action_space.sample()          # each action repeats `hold` times
        k += 1
        obs, r, term, trunc, info = env.step(action)
        decided.append(info["weights"])
        if trunc: break
    bars = env.index[start:]
    prices = pd.DataFrame({a: f["close"] for a, f in frames.items()}).loc[bars]
    W = pd.DataFrame(decided + [np.zeros(3)], index=bars, columns=list(frames))
    assert (W.abs().sum(axis=1) <= 1 + 1e-12).all() and (not long_only or (W >= 0).all().all())
    assert abs(backtest_portfolio(prices, W, fee, slip, rebalance=rebalance).final_equity - info["equity"]) < 1e-9


def test_portfolio_env_checkers_and_bad_input():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check
    from atf.envs import PortfolioEnv
    env = gym.make("atf/Portfolio-v0").unwrapped                     # no arguments: AAPL, IBM, MSFT daily
    check_env(env); sb3_check(env, warn=False)
    frames = {"AAPL": load_dataset("us_stocks", "AAPL").iloc[:300], "IBM": load_dataset("us_stocks", "IBM").iloc[5:300]}
    with pytest.raises(ValueError, match=r"do not share timestamps.*'AAPL': 5"):
        PortfolioEnv(frames)
    assert len(PortfolioEnv(frames, align="inner", window=5).index) == 295
    with pytest.raises(ValueError, match="at least two assets"):
        PortfolioEnv({"AAPL": frames["AAPL"]})


def test_envs_build_from_one_public_env_arrays(ibm):
    "TradingEnv, TradingVecEnv and export read one EnvArrays: read-only, shared, equal to building from the frame."
    from atf.envs import EnvArrays, TradingVecEnv, env_arrays
    data = env_arrays(ibm, window=5, segment=(50, 300))
    assert isinstance(data, EnvArrays) and not data.features.flags.writeable and not data.returns.flags.writeable
    assert (data.window, data.end, data.obs_features) == (5, 300, 5 * data.n_features)
    env, same = TradingEnv(data=data, fee_bps=3), TradingEnv(ibm, window=5, segment=(50, 300), fee_bps=3)
    assert env.data is data and env.observation_space.shape == (data.obs_features + 1,)
    (o1, i1), (o2, _) = env.reset(), same.reset()
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(o1[:data.obs_features], data.window_at(i1["bar"]))
    for a in [2, 2, 0, 1, 1, 2] * 10:
        s1, s2 = env.step(a), same.step(a)
        np.testing.assert_array_equal(s1[0], s2[0]); assert s1[1:4] == s2[1:4] and s1[4] == s2[4]
    venv = TradingVecEnv(3, data=data)
    assert venv.data is data and venv.proto.data is data
    np.testing.assert_array_equal(data.windows[data.first - 4], data.window_at(data.first))


def test_portfolio_env_builds_without_single_asset_envs(monkeypatch):
    from atf.envs import PortfolioEnv
    def refuse(*a, **k): raise AssertionError("PortfolioEnv built a TradingEnv")
    monkeypatch.setattr(TradingEnv, "__init__", refuse)
    frames = {a: load_dataset("us_stocks", a).iloc[:200] for a in ("AAPL", "IBM")}
    env = PortfolioEnv(frames, window=4)
    from atf.envs import env_arrays
    assert env.data.returns.shape == (200, 2) and env.data.n_features == 2 * env_arrays(frames["IBM"], window=4).n_features
    obs, info = env.reset()
    np.testing.assert_array_equal(obs[:env.data.obs_features], env.data.window_at(info["bar"]))


def test_no_module_reads_a_private_attribute_of_another_object():
    "Every atf module touches only its own (self./cls.) private names and imports none; SB3's policy._predict is the one exception."
    import ast
    from pathlib import Path
    import atf
    root, allowed = Path(atf.__file__).parent, {"_predict"}        # SB3's policy entry point, as in SB3's ONNX recipe
    for path in sorted(root.rglob("*.py")):
        mod = str(path.relative_to(root))
        if mod == "_modidx.py": continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("atf")):
                assert not [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")], \
                    f"{mod}:{node.lineno} imports a private name"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                assert own or node.attr in allowed, f"{mod}:{node.lineno} reads .{node.attr} of another object"
