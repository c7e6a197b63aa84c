"""--cosine STEPS: R3GAN's schedules, the learning rates, Adam's beta2 and the
R1/R2 weights gamma moving on a half cosine from the run's values at step 0
to their end values at step STEPS, and held there after it. A leaf module
(stdlib only).

The values are a pure function of the global step and STEPS (not of --epochs
or the clock), so a resumed run, which knows its step, continues on exactly
the same curve. Without --cosine (0) every value is the config's, unchanged.

End values (R3GAN decays from its start values by a factor; these are ours):
the learning rates to a quarter (R3GAN goes from 2e-4 to 5e-5), gamma to a
tenth (R3GAN's factor), and beta2 up to 0.999, Adam's usual value, from
rpgan's 0.99: a longer memory of the gradient's scale once the steps are
small. A beta2 at or above 0.999 stays where it is.
"""
import math

LR_END, GAMMA_END, BETA2_END = 0.25, 0.1, 0.999
SCHEDULED = ("lr_gen", "lr_disc", "beta2", "r1", "r2")


def cosine(start, end, step, steps):
    """start at step 0, end from step `steps` on, a half cosine in between."""
    t = min(step / steps, 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def at_step(cfg, step):
    """{lr_gen, lr_disc, beta2, r1, r2} for global step `step`: the config's own
    values without --cosine, else their point on the cosine."""
    values = {k: cfg[k] for k in SCHEDULED}
    if not cfg["cosine"]:
        return values
    end = {"lr_gen": cfg["lr_gen"] * LR_END, "lr_disc": cfg["lr_disc"] * LR_END,
           "beta2": max(cfg["beta2"], BETA2_END), "r1": cfg["r1"] * GAMMA_END,
           "r2": cfg["r2"] * GAMMA_END}
    return {k: cosine(v, end[k], step, cfg["cosine"]) for k, v in values.items()}


def set_optimizers(opt_g, opt_d, cfg, values):
    """Put this step's learning rates and beta2 into both Adams (with --cosine)."""
    if not cfg["cosine"]:
        return
    for opt, lr in ((opt_g, values["lr_gen"]), (opt_d, values["lr_disc"])):
        for group in opt.param_groups:
            group["lr"], group["betas"] = lr, (cfg["beta1"], values["beta2"])
