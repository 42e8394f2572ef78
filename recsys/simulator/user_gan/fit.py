"""``fit_user_gan``: WGAN-GP training of the profile generator, with an exponential moving
average of the generator's weights and post-hoc marginal calibration."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from envs.world import Profiles
from recsys.simulator.user_gan.config import UserGANConfig
from recsys.simulator.user_gan.encoding import ProfileEncoder
from recsys.simulator.user_gan.model import UserGAN
from recsys.simulator.user_gan.networks import (
    Critic,
    Generator,
    copy_generator,
    gradient_penalty,
    training_pick,
)

_ADAM_BETAS = (0.5, 0.9)  # WGAN-GP's Adam betas


def fit_user_gan(
    data: Profiles,
    config: UserGANConfig | None = None,
    progress: bool = True,
    tensorboard_dir: Path | None = None,
    callback: Callable[[int, UserGAN], None] | None = None,
) -> UserGAN:
    """Train a WGAN-GP profile generator on ``data`` (one row per user) and return it,
    marginal-calibrated on ``data`` unless ``config.calibrate`` is False.

    Reproducible: the same data, config and seed give the same weights, provided training
    finishes its ``config.steps`` within ``config.max_seconds`` (the budget stops training
    early otherwise; ``metrics["stopped_by_budget"]`` says so) and torch uses the same number
    of threads. The global torch RNG is left as it was. ``progress`` shows a tqdm bar;
    ``tensorboard_dir`` receives the critic loss, generator loss, gradient penalty, the
    critic's Wasserstein estimate and steps per second every ``config.log_every`` steps;
    ``callback(step, snapshot)`` is called at the same times with a calibrated copy of the
    current (averaged) generator, e.g. to track a fidelity metric."""
    config = config or UserGANConfig()
    if len(data) < config.pac:
        raise ValueError(f"data: {len(data)} users, need at least pac={config.pac}")
    encoder = ProfileEncoder.fit(data, config)
    encoded = torch.from_numpy(encoder.encode(data, config.seed))
    spans = [(s.kind, s.size) for s in encoder.spans]
    pick = training_pick([kind for kind, _ in spans], config.tau)
    batch = min(config.batch_size, len(data) - len(data) % config.pac)
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))
        rows = "\n".join(f"|{k}|{v}|" for k, v in config.to_json().items())
        writer.add_text("user_gan/hyperparameters", f"|param|value|\n|-|-|\n{rows}")
    from tqdm.auto import tqdm

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = Generator(config.latent_dim, config.generator_hidden, spans, config.head_hidden)
        ema = copy_generator(generator)
        ema_params, gen_params = list(ema.parameters()), list(generator.parameters())
        critic = Critic(encoder.dim, config.critic_hidden, config.pac, config.critic_dropout)
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=_ADAM_BETAS, weight_decay=1e-6)
        opt_c = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=_ADAM_BETAS, weight_decay=1e-6)
        index_gen = torch.Generator().manual_seed(config.seed)
        stopped_by_budget, step = False, 0
        last: dict[str, float] = {}
        bar = tqdm(total=config.steps, desc="user GAN", unit="step", disable=not progress)
        try:
            for step in range(1, config.steps + 1):
                for _ in range(config.n_critic):
                    real = encoded[torch.randint(len(encoded), (batch,), generator=index_gen)]
                    with torch.no_grad():
                        fake = generator(torch.randn(batch, config.latent_dim), pick)
                    w_est = critic(real).mean() - critic(fake).mean()
                    gp = gradient_penalty(critic, real, fake) if config.gp_weight > 0 else torch.zeros(())
                    loss_c = -w_est + config.gp_weight * gp
                    opt_c.zero_grad(set_to_none=True)
                    loss_c.backward()
                    opt_c.step()
                loss_g = -critic(generator(torch.randn(batch, config.latent_dim), pick)).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                with torch.no_grad():
                    decay = min(config.ema_decay, step / (step + 10.0))  # warm-up: early weights fade fast
                    for e, p in zip(ema_params, gen_params, strict=True):
                        e.lerp_(p, 1.0 - decay)
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    elapsed = time.perf_counter() - start
                    last = {"critic_loss": loss_c.item(), "generator_loss": loss_g.item(),
                            "gradient_penalty": gp.item(), "wasserstein_estimate": w_est.item()}
                    bar.set_postfix(critic=f"{last['critic_loss']:.3f}", gen=f"{last['generator_loss']:.3f}")
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"user_gan/{k}", v, step)
                        writer.add_scalar("charts/steps_per_second", step / max(elapsed, 1e-9), step)
                    if callback is not None:
                        callback(step, _finish(config, encoder, ema, data, {"steps_done": step}))
                if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                    stopped_by_budget = step < config.steps
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    metrics = {
        "n_train": len(data),
        "steps_done": step,
        "steps_configured": config.steps,
        "train_seconds": time.perf_counter() - start,
        "stopped_by_budget": stopped_by_budget,
        **{f"final_{k}": v for k, v in last.items()},
    }
    return _finish(config, encoder, ema, data, metrics)


def _finish(config: UserGANConfig, encoder: ProfileEncoder, ema: Generator, data: Profiles,
            metrics: dict[str, Any]) -> UserGAN:
    gan = UserGAN(config, encoder, copy_generator(ema).eval(), metrics)
    if config.calibrate:
        gan.calibrate_marginals(data, config.calibration_samples, config.seed)
    return gan
