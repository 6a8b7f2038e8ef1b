"""The training command line: every numeric flag's bad values stop it with the flag, the value
and what is allowed, before anything is loaded."""

import pytest

from s2s.training.flags import NUMERIC_FLAGS, parse_args

BASE = ["--data", "x.jsonl", "--out", "y"]
INT_FLAGS = {"--steps", "--stop-after", "--batch-frames", "--warmup", "--onset-steps", "--crop-frames",
             "--crop-until", "--mask-spans", "--rank-steps", "--seed", "--log-every", "--eval-every",
             "--check-every", "--check-n", "--save-every", "--threads", "--workers"}


def bad_values(flag):
    lo, hi, lo_open, _ = NUMERIC_FLAGS[flag]
    out = [lo if lo_open else lo - 1]
    if hi is not None:
        out.append(hi + 1)
    if flag not in INT_FLAGS:
        out += [float("nan"), float("inf")]
    return out


def test_every_numeric_flag_is_checked():
    parsed = vars(parse_args(BASE))
    numeric = {f"--{k.replace('_', '-')}" for k, v in parsed.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric <= set(NUMERIC_FLAGS), f"no allowed range for {sorted(numeric - set(NUMERIC_FLAGS))}"
    assert set(NUMERIC_FLAGS) == numeric | {"--stop-after", "--threads"}  # the two that default to None


@pytest.mark.parametrize("flag,value", [(f, v) for f in NUMERIC_FLAGS for v in bad_values(f)])
def test_a_bad_numeric_value_names_the_flag_and_the_allowed_range(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_args([*BASE, flag, str(int(value) if flag in INT_FLAGS else value)])
    err = capsys.readouterr().err
    assert f"{flag} must be a finite number >" in err and repr(int(value) if flag in INT_FLAGS else value) in err


def test_zero_means_never_where_a_flag_says_so():
    args = parse_args([*BASE, "--eval-every", "0", "--check-every", "0", "--save-every", "0", "--rank-steps", "0"])
    assert (args.eval_every, args.check_every, args.save_every, args.rank_steps) == (0, 0, 0, 0)
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--log-every", "0"])
