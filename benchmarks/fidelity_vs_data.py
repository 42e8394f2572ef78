"""On-log fidelity of the response model against the number of logged users and its settings.

    python -m benchmarks.fidelity_vs_data --world wide --users 12500 25000 50000 100000
    python -m benchmarks.fidelity_vs_data --world wide --users 50000 \\
        --set embed_dim=16,hidden_dim=64 --set embed_dim=32,hidden_dim=128

Prints ONE JSON object on stdout (one row per (users, setting)); progress goes to stderr. It
answers "does the simulator miss its on-log targets because the model is too small or because the
logs are too few?": a miss that shrinks with more users at a fixed size is a data limit, one that
shrinks with size at fixed users a capacity limit. See ``METHOD``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace

METHOD = (
    "For each --users n: the logging policy's logs of n users of the world config (conf/world/"
    "<--world>, the default experiment's campaign), split by user as every run splits them "
    "(LoggedDataset, split seed --seed); for each --set: ONE response model (ensemble_size 1 unless set, the "
    "conf/simulator defaults with the --set fields replaced) fitted by the pipeline's own code "
    "(member_jobs + fit_member: same batch-size rule, early stopping and recalibration; an ensemble "
    "when a --set gives ensemble_size > 1). Metrics on "
    "the held-out test users against the truth replayed from the world (envs.true_world.replay_oracle): "
    "click / conversion AUC, the segment oracle's AUC (the same world with each user's latent replaced "
    "by its segment mean), their gaps (target of the sim-to-real issue: gap >= -0.01) and the ECE "
    "against the true probabilities (target <= 0.005). fit_seconds is wall time on one torch thread. "
    "Off the logs (--repeat-users > 0): for every offer k, the policy that sends k at every step, rolled "
    "out for --repeat-users users in TrueWorld and in a LearnedWorld of the fitted model whose users are "
    "the logged training profiles resampled (so the probe judges the response model, not the GAN); "
    "repeat_click_ratio[k] = learned / true clicks per user, summarised by the median and the mean "
    "|log ratio| over offers (0 = the model extrapolates repetition like the world)."
)
TARGET_GAP, TARGET_ECE = -0.01, 0.005


def _setting(text: str) -> dict[str, bool | int | float | str]:
    """``embed_dim=32,category_sharing=true`` -> {"embed_dim": 32, "category_sharing": True},
    fields of ResponseModelConfig."""
    from recsys.simulator.response_model import ResponseModelConfig

    known = {f.name for f in fields(ResponseModelConfig)}
    out: dict[str, bool | int | float | str] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise argparse.ArgumentTypeError(f"--set {item!r}: expected <field>=<value> with a field of "
                                             f"ResponseModelConfig ({', '.join(sorted(known))})")
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
            continue
        for cast in (int, float, str):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fidelity_vs_data", description=__doc__.splitlines()[0])
    p.add_argument("--world", default="default", help="a config of conf/world/")
    p.add_argument("--users", type=int, nargs="+", default=[12_500, 25_000, 50_000], help="logged users")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=None,
                   help="response-model fields, e.g. embed_dim=32,hidden_dim=128 (repeatable; default: the defaults)")
    p.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides (e.g. experiment=smoke)")
    p.add_argument("--seed", type=int, default=0, help="experiment seed: logged users' block and split")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--repeat-users", type=int, default=3000,
                   help="users per offer of the repeated-offer probe (0: skip it)")
    args = p.parse_args(argv)
    if min(args.users) < 50:
        p.error("--users: need >= 50 (the split keeps >= 10 training and validation users)")
    args.settings = args.settings or [{}]
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from envs.true_world import TrueWorld, replay_oracle
    from experiments import config as config_module
    from experiments import setup_torch
    from experiments.collect import collect_logs
    from experiments.fidelity import response_model_fidelity
    from recsys.data.dataset import LoggedDataset
    from recsys.simulator.response_model import assemble_response_model, fit_member, member_jobs, predict

    setup_torch(args.threads)
    config_module.register()
    conf_dir = str(Path(__file__).resolve().parent.parent / "conf")
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose("config", overrides=[f"world={args.world}", f"experiment.seed={args.seed}", *args.overrides])
    config = config_module.load(cfg)
    rows = []
    for n_users in args.users:
        _log(f"logs of {n_users} users in world={args.world} ...")
        data = LoggedDataset.from_table(collect_logs(config, False, n_users), TrueWorld(config.world).catalog,
                                        args.seed)
        train, validation, test = (data.split(s) for s in ("train", "validation", "test"))
        oracle = replay_oracle(config.world, test.user_ids, test.actions, test.click, test.conversion, test.mask)
        for setting in args.settings:
            model_config = replace(config.simulator.response_model, **{"ensemble_size": 1, **setting})
            _log(f"  fit {setting or 'defaults'} on {train.n_users} training users ...")
            start = time.perf_counter()
            model = assemble_response_model([fit_member(*job) for job in member_jobs(
                train, validation, model_config, False, None, data.catalog.category)], validation)
            seconds = time.perf_counter() - start
            f = response_model_fidelity({model_config.history_encoder: predict(model, test)}, test, oracle,
                                        main=model_config.history_encoder, n_boot=10, seed=args.seed)
            repeat = (repeat_probe(model, data, config, args.repeat_users, args.seed) if args.repeat_users > 0
                      else {})
            rows.append({
                "users": n_users, "train_users": train.n_users, "setting": setting, "fit_seconds": round(seconds, 1),
                "click_auc": f["click_auc"], "segment_oracle_click_auc": f["segment_oracle_click_auc"],
                "click_gap": f["click_auc"] - f["segment_oracle_click_auc"],
                "conversion_auc": f["conversion_auc"], "segment_oracle_conversion_auc": f["segment_oracle_conversion_auc"],
                "conversion_gap": f["conversion_auc"] - f["segment_oracle_conversion_auc"],
                "click_ece": f["click_ece"], "conversion_ece": f["conversion_ece"], **repeat,
            })
            _log("  " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}))
    out = {"benchmark": "fidelity_vs_data", "world": args.world, "seed": args.seed, "method": METHOD,
           "targets": {"gap": TARGET_GAP, "ece": TARGET_ECE}, "rows": rows}
    print(json.dumps(out, indent=1))
    return out


def repeat_probe(model, data, config, n_users: int, seed: int) -> dict:
    """``experiments.fidelity.repeat_probe`` of a fitted model (see ``METHOD``)."""
    from envs.learned_world import LearnedWorld
    from envs.true_world import TrueWorld
    from experiments.collect import make_env_factory
    from experiments.fidelity import repeat_probe as probe
    from recsys.simulator.user_gan.marginals import ResampledProfiles

    sampler, catalog = ResampledProfiles(data.split_profiles("train")), data.catalog
    out = probe(make_env_factory(lambda n: TrueWorld(config.world, n), config.campaign),
                make_env_factory(lambda n: LearnedWorld(model, sampler, catalog, n), config.campaign),
                catalog.n_actions, n_users, seed=10**7 + seed)
    return {"repeat_click_ratio": [round(r, 4) for r in out["ratio"]],
            "repeat_click_ratio_median": out["median_ratio"], "repeat_mean_abs_log_ratio": out["mean_abs_log_ratio"]}


if __name__ == "__main__":
    main()
