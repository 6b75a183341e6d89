"""Issue #11, part of section 2: a mistyped config is one line naming the key, before any work (no trial, no run folder).

Each case below ran on the old main: most were accepted and failed later, trial after trial (`n_trials: 1.5` ran 2,
`model.window: "five"` 1,001 failed trials, `costs.fee_bps: "five"` 461), or ended in a pandas/YAML traceback."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atf.config import ConfigError
from atf.experiments import load_experiment, run_experiment
from atf.studies import load_config

BAD = [
    ({"tuning": {"n_trials": 1.5}}, "tuning.n_trials: expected int, got 1.5"),
    ({"tuning": {"n_trials": 0}}, "tuning.n_trials: 0 must be >= 1"),
    ({"tuning": {"n_trials": -3}}, "tuning.n_trials: -3 must be >= 1"),
    ({"model": {"window": "five"}}, "model.window: expected int, got 'five'"),
    ({"model": {"window": 0}}, "model.window: 0 must be >= 1"),
    ({"costs": {"fee_bps": "five"}}, "costs.fee_bps: expected float, got 'five'"),
    ({"costs": {"slippage_bps": -1}}, "costs.slippage_bps: -1 must be >= 0"),
    ({"train": {"lr": 0}}, "train.lr: 0 must be above 0"),
    ({"trading": {"long_only": "yes"}}, "trading.long_only: expected true/false, got 'yes'"),
    ({"features": {"atr_window": "x"}}, "features.atr_window: 'x' must be a whole number, null or 'auto'"),
    ({"data": {"start": "2006-13-45"}}, "data.start: '2006-13-45' is not a date"),
    ({"data": {"start": "2010-01-01", "end": "2005-01-01"}}, "data.start 2010-01-01 is after data.end 2005-01-01"),
    ({"data": {"timeframes": ["2X"]}}, "data.timeframes: '2X' is neither 'native' nor a pandas resample rule"),
    ({"data": {"timeframes": ["1M"]}}, "'M' is no longer supported for offsets. Please use 'ME' instead."),
    ({"walk_forward": {"train": [500]}}, "walk_forward.train: expected int or str, got [500]"),
    ({"model": {"name": "mlp", "params": {"hiden": 16}}}, "model.params.hiden: not a parameter of MLP (did you mean hidden?)"),
    ({"model": {"name": "tcn", "params": {"hidden": 16}}}, "model.params.hidden: not a parameter of TCN; its parameters: batch_size, channels"),
    ({"model": {"name": "lstm", "params": {"hidden": "16"}}}, "model.params.hidden: expected int, got '16'"),
    ({"search_space": {"hiden": [16, 32]}}, "search_space.hiden: not a parameter of MLP (did you mean hidden?)"),
    ({"search_space": {"layers": {"type": "float", "low": 1, "high": 3}}}, "search_space.layers: expected int, got 1.0"),
    ({"search_space": {"dropout": ["none", 0.1]}}, "search_space.dropout: expected float, got 'none'"),
    ({"model": {"name": "ppo", "params": {"n_step": 64}}, "tuning": {"metric": "sharpe"}}, "model.params.n_step: not a parameter of PPO (did you mean n_steps?)"),
    ({"model": {"name": "dqn", "params": {"buffer_size": 1e5}}, "tuning": {"metric": "sharpe"}}, "model.params.buffer_size: expected int, got 100000.0"),
    ({"data": {"dataset": "x.csv", "tz": "America/New_Yrok"}}, "data.tz: 'America/New_Yrok' is not a time zone (did you mean America/New_York?)"),
    ({"data": {"repairs": {"duplicates": "keeplast"}}}, "data.repairs.duplicates: 'keeplast' (did you mean keep_last?)"),
    ({"search_space": {"lr": {"typ": "float"}}}, "space['lr']: no 'type' (keys given: ['typ'])"),
    ({"tuning": {"pruner": "medain"}}, "tuning.pruner: 'medain' not in ['median', 'hyperband', 'none']"),
]


@pytest.mark.parametrize("raw, says", BAD, ids=[s.split(":")[0] for _, s in BAD])
def test_a_bad_value_is_one_line_naming_its_key(raw, says):
    with pytest.raises(ConfigError) as e: load_experiment(raw)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_yaml_quirks_and_good_values_still_load():
    "YAML 1.1 reads 1e-4 as text: where a float is declared it is the number; lists accept one value; spans stay text."
    cfg = load_experiment({"train": {"lr": "1e-4"}, "data": {"assets": "MSFT", "timeframes": ["1W", "ME"]},
                           "walk_forward": {"train": "730D"}, "costs": {"fee_bps": 1}})
    assert cfg.train.lr == 1e-4 and cfg.data.assets == ["MSFT"] and cfg.walk_forward.train == "730D"
    for f in sorted(Path("configs").glob("*.yaml")):
        (load_config if f.name == "demo.yaml" else load_experiment)(f)           # every shipped config still loads


@pytest.mark.parametrize("text, says", [("", "the config file is empty"),
                                        ("model: [1, 2\nname: x\n", "not valid YAML at line 2, column 5"),
                                        ("- a\n- b\n", "expected a mapping of sections, got list")])
def test_an_empty_or_broken_file_is_one_line(tmp_path, text, says):
    f = tmp_path / "c.yaml"; f.write_text(text)
    for load in (load_experiment, load_config):
        with pytest.raises(ConfigError, match="c.yaml: " + says.split(" at ")[0]) as e: load(f)
        assert says in str(e.value) and "\n" not in str(e.value)


def test_a_date_range_without_data_names_the_span_before_any_work(tmp_path):
    cfg = load_experiment({"data": {"start": "2030-01-01"}, "output_dir": str(tmp_path), "memory_bank": None})
    with pytest.raises(ConfigError, match=r"data.start/data.end: 2030-01-01..None holds no bars of AAPL; us_stocks spans 2000"):
        run_experiment(cfg, run_id="nothing", progress=False)
    assert not (tmp_path / "nothing").exists()                          # no run folder, no study


def test_the_cli_exits_2_with_one_line_in_seconds(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text(f"model: {{name: mlp, window: five}}\noutput_dir: {tmp_path}\nmemory_bank: null\n")
    t0 = time.time()
    res = subprocess.run([str(Path(sys.executable).parent / "atf"), "experiment", str(f)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].endswith("model.window: expected int, got 'five'"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and time.time() - t0 < 60
    assert not any(p.is_dir() for p in tmp_path.iterdir())              # nothing ran


def test_a_misspelt_model_parameter_is_caught_before_the_first_trial(tmp_path):
    "model.params: {hiden: 16} failed 790 trials with 15,011 lines of tracebacks; now one line, exit 2, no trial, no run."
    f = tmp_path / "typo.yaml"
    f.write_text(f"data: {{start: '2006-01-01', end: '2009-12-31'}}\nmodel: {{name: mlp, window: 5, params: {{hiden: 16}}}}\n"
                 f"tuning: {{n_trials: 1000}}\nwalk_forward: {{train: 500, validation: 100, test: 200}}\n"
                 f"output_dir: {tmp_path}\nmemory_bank: null\n")
    t0 = time.time()
    res = subprocess.run([str(Path(sys.executable).parent / "atf"), "experiment", str(f), "-q"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "atf experiment: error: model.params.hiden: not a parameter of MLP (did you mean hidden?); its parameters: "
        "batch_size, dropout, grad_clip, hidden, layers, lr, max_epochs, patience, weight_decay, window"], res.stderr[-2000:]
    assert time.time() - t0 < 60 and not any(p.is_dir() for p in tmp_path.iterdir())      # nothing ran


def test_every_default_search_space_names_parameters_of_its_model():
    "The spaces atf tunes when a config gives none pass the same check as a user's (a space naming `hidden` for TCN did not)."
    from atf.learners import LEARNERS
    for name, learner in LEARNERS.items():
        assert set(learner.default_space(name)) <= set(learner.parameters(name)), name
        load_experiment({"model": {"name": name}, "search_space": learner.default_space(name),
                         "tuning": {"metric": "sharpe"}, "trading": {"long_only": name not in ("sac", "ppo", "a2c", "dqn")}})
