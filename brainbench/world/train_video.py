"""Trains and ships the world video models from fresh world movies (frame autoencoder and generator).

The networks are :mod:`brainbench.backbones.frame_autoencoder` and :mod:`brainbench.backbones.world_video`.

``python -m brainbench.world.train_video --out brainbench/generators/assets`` renders ``--movies``
world movies (:func:`brainbench.world.video.render_movie`, seed 1 and keys ``(901, n)``, so none is a
movie of the benchmark's world, which uses seed 0 and keys ``(101|102, n)``) at 3 fps and 64 px, the rate
and size the CC2017 adapter samples; the last two movies are held out. Then, in order:

1. the frame autoencoder (L1 on pixels), whose latents are normalised by their per-channel mean and sd;
2. the keyframe head: world-CLIP tokens of a frame -> its latent (L1), every other step from tokens
   corrupted as a regression from fMRI returns them (:func:`simulate_tokens`);
3. the frame generator: 6-frame clips whose "blurry video" is simulated from the true latents (spatial
   blur, temporal averaging, some of another clip's content, shrinkage, noise; calibrated on what the
   perception reconstructor returns, :func:`simulate_blurry`), noised to
   ``z_init = sqrt(1-ϑ) z_b + sqrt(ϑ) ε`` with ϑ = the strength (70 %), 1 (15 %: the no-blurry ablation) or
   uniform (15 %); the keyframe (the head's output on corrupted tokens of frame 0 or 2, the store's
   keyframe being frame 2) is dropped 15 % of the time, the caption (noisy) 10 %; L1 on the clean latents;
4. the fusion classifier: are two keyframes 2 s apart from the same shot (BCE).

Each model is saved as float16 safetensors + ``card.json`` (sha256, command, held-out numbers measured on the
float16 weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from brainbench.backbones.frame_autoencoder import (
    AE_NAME,
    TRAIN_COMMAND,
    WEIGHTS_FILE,
    FrameAutoencoder,
    load_autoencoder,
)
from brainbench.backbones.world_clip import sha256_file
from brainbench.backbones.world_video import GENERATOR_NAME, WorldVideoModel, load_video_model, to_uint8_clips
from brainbench.metrics.video import frame_psnr, frame_ssim

SEED, MOVIE_KEY, FPS, FRAME_SIZE, N_FRAMES = 1, 901, 3, 64, 6
BACKBONE = "world-clip:v1"


def render_movies(n_movies: int, duration_s: float) -> list[Any]:
    """Fresh world movies at 3 fps, 64 px (module docstring)."""
    from brainbench.world.video import render_movie

    return [
        render_movie(f"train{n}", SEED, (MOVIE_KEY, n), duration_s, FPS, FRAME_SIZE)
        for n in range(1, n_movies + 1)
    ]


def movie_features(movies: list[Any]) -> dict[str, list[torch.Tensor]]:
    """Per movie: tokens of its even frames ``(n/2, 65, 128)`` and each frame's shot caption embedding."""
    from brainbench.backbones.openclip import load_backbone
    from brainbench.metrics.text_retrieval import caption_embeddings

    backbone = load_backbone(BACKBONE)
    tokens, captions, shots = [], [], []
    for movie in movies:
        even = torch.from_numpy(movie.frames[::2].copy())
        tokens.append(torch.cat([backbone.forward_features(even[i : i + 256])["clip_tokens"] for i in
                                 range(0, len(even), 256)]))  # fmt: skip
        texts = [list(shot.captions) for shot in movie.shots]
        owners = torch.repeat_interleave(torch.arange(len(texts)), torch.tensor([len(t) for t in texts]))
        per_shot = caption_embeddings(backbone.encode_text([c for t in texts for c in t]), owners, len(texts))
        shot_of_frame = torch.from_numpy(movie.shot_of_frame())
        captions.append(per_shot[shot_of_frame])
        shots.append(shot_of_frame)
    return {"tokens": tokens, "captions": captions, "shots": shots}


def as_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 255.0


def train_autoencoder(frames: np.ndarray, steps: int, batch_size: int, lr: float) -> FrameAutoencoder:
    """L1 autoencoder on ``(N, 64, 64, 3)`` uint8 frames; sets the latent shift/scale from all of them."""
    ae = FrameAutoencoder(FRAME_SIZE)
    optimizer = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = as_float(frames[torch.randint(len(frames), (batch_size,), generator=generator).numpy()])
        loss = F.l1_loss(ae.decode(ae.encode(x)), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"autoencoder step {step}: L1 {loss.item():.4f}", flush=True)
    with torch.no_grad():
        z = torch.cat([ae.encoder(as_float(frames[i : i + 512]) * 2 - 1) for i in range(0, len(frames), 512)])
    ae.latent_shift.copy_(z.mean(dim=(0, 2, 3)))
    ae.latent_scale.copy_(z.std(dim=(0, 2, 3)))
    return ae.eval()


@torch.no_grad()
def encode_movies(ae: FrameAutoencoder, movies: list[Any]) -> list[torch.Tensor]:
    """Normalised latents ``(n_frames, C, h, w)`` of every frame of every movie."""
    return [torch.cat([ae.encode(as_float(m.frames[i : i + 512])) for i in range(0, len(m.frames), 512)])
            for m in movies]  # fmt: skip


def simulate_blurry(latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A brain-decoded estimate of clip latents ``(B, F, C, h, w)``: blurred, static, partly wrong, noisy.

    Calibrated on the perception reconstructor's validation predictions (world-cc2017 subject 1): they are
    nearly static (frame-to-frame sd 0.06 vs 0.20 for the true latents), their slope on the truth is 0.8 and
    their residual sd half the truth's, with errors that look like other clips rather than white noise.
    """
    b = len(latents)

    def draw(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator))[:, None, None, None, None]

    kernel = torch.tensor([0.25, 0.5, 0.25])
    blurred = latents.flatten(0, 2)[:, None]
    blurred = F.conv2d(F.pad(blurred, (1, 1, 1, 1), mode="replicate"), (kernel[:, None] * kernel)[None, None])
    spatial = draw(0, 1)
    z = spatial * blurred.view_as(latents) + (1 - spatial) * latents
    temporal = draw(0.5, 1.0)
    z = (1 - temporal) * z + temporal * z.mean(dim=1, keepdim=True)
    wrong = draw(0.0, 0.6)
    z = (1 - wrong) * z + wrong * z.roll(1, dims=0)
    return draw(0.6, 1.0) * z + draw(0.0, 0.4) * torch.randn(latents.shape, generator=generator)


def simulate_tokens(
    tokens: torch.Tensor, mean: torch.Tensor, generator: torch.Generator, max_noise: float
) -> torch.Tensor:
    """A regression's estimate of keyframe tokens ``(B, T, D)``: shrunk to the mean, partly another's, noisy.

    Calibrated on the semantics reconstructor's validation predictions (``keyframe_tokens``, world-cc2017
    subject 1): slope 0.31 on the centred truth, residual sd 0.57 of the truth's.
    """
    b = len(tokens)

    def draw(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator))[:, None, None]

    centred = tokens - mean
    sd = centred.std()
    shrunk = draw(0.2, 0.8) * centred + draw(0.0, 0.4) * centred.roll(1, dims=0)
    return mean + shrunk + draw(0.0, max_noise) * sd * torch.randn(tokens.shape, generator=generator)


def noisy(x: torch.Tensor, generator: torch.Generator, max_sd: float) -> torch.Tensor:
    """``x`` plus Gaussian noise of a per-row sd uniform in ``[0, max_sd] * sd(x)``."""
    sd = max_sd * torch.rand(len(x), generator=generator).view(-1, *[1] * (x.ndim - 1)) * x.std()
    return x + sd * torch.randn(x.shape, generator=generator)


def clip_starts(movies: list[Any]) -> np.ndarray:
    """``(M, 2)`` (movie, first frame) of every 6-frame clip starting on an even frame."""
    return np.array(
        [(m, s) for m, movie in enumerate(movies) for s in range(0, len(movie.frames) - N_FRAMES + 1, 2)]
    )


def clip_batch(
    starts: np.ndarray, latents: list[torch.Tensor], feats: dict[str, list[torch.Tensor]], g: torch.Generator
) -> dict[str, torch.Tensor]:
    """True latents ``(B, F, C, h, w)``, keyframe tokens (frame 0 or 2, noisy) and captions of clips."""
    jitter = 2 * torch.randint(2, (len(starts),), generator=g)
    return {
        "latents": torch.stack([latents[m][s : s + N_FRAMES] for m, s in starts]),
        "tokens": torch.stack([feats["tokens"][m][(s + j) // 2] for (m, s), j in zip(starts, jitter.tolist(),
                                                                                      strict=True)]),
        "caption": torch.stack([feats["captions"][m][s + 2] for m, s in starts]),
    }  # fmt: skip


def _optimise(params: Any, lr: float, steps: int) -> tuple[Any, Any]:  # noqa: ANN401
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
    )


def train_video_model(
    latents: list[torch.Tensor],
    feats: dict[str, list[torch.Tensor]],
    starts: np.ndarray,
    steps: int,
    batch_size: int,
    lr: float,
    strength: float,
    token_noise: float = 0.5,
    caption_noise: float = 0.5,
) -> WorldVideoModel:
    """Keyframe head, then frame generator, then fusion classifier (module docstring).

    ``token_noise`` / ``caption_noise``: the most Gaussian noise (in sds of the features) added to the
    keyframe tokens / caption embeddings in training, so the models expect brain predictions' errors.
    """
    model = WorldVideoModel(latent_shape=tuple(latents[0].shape[1:]), n_frames=N_FRAMES)
    g = torch.Generator().manual_seed(1)
    frames = [(m, f) for m, lat in enumerate(latents) for f in range(0, len(lat), 2)]
    mean_tokens = torch.cat(feats["tokens"]).mean(dim=0)
    optimizer, schedule = _optimise(model.keyframe_head.parameters(), lr, steps // 3)
    for step in range(steps // 3):
        pick = [frames[i] for i in torch.randint(len(frames), (batch_size,), generator=g).tolist()]
        tokens = torch.stack([feats["tokens"][m][f // 2] for m, f in pick])
        tokens = simulate_tokens(tokens, mean_tokens, g, token_noise) if step % 2 else tokens
        loss = F.l1_loss(model.keyframe_head(tokens), torch.stack([latents[m][f] for m, f in pick]))
        optimizer.zero_grad(), loss.backward(), optimizer.step(), schedule.step()
        if step % 50 == 0:
            print(f"keyframe head step {step}: L1 {loss.item():.4f}", flush=True)
    model.keyframe_head.requires_grad_(False)
    optimizer, schedule = _optimise(model.frame_generator.parameters(), lr, steps)
    for step in range(steps):
        batch = clip_batch(
            starts[torch.randint(len(starts), (batch_size,), generator=g).numpy()], latents, feats, g
        )
        b = batch_size
        u = torch.rand(b, generator=g)
        level = torch.where(u < 0.7, strength, torch.where(u < 0.85, 1.0, torch.rand(b, generator=g)))
        blurry = simulate_blurry(batch["latents"], g)
        eps = torch.randn(blurry.shape, generator=g)
        z_init = (1 - level).sqrt().view(-1, 1, 1, 1, 1) * blurry + level.sqrt().view(-1, 1, 1, 1, 1) * eps
        with torch.no_grad():
            keyframe = model.keyframe_head(simulate_tokens(batch["tokens"], mean_tokens, g, token_noise))
        mask = torch.zeros(b, N_FRAMES)
        mask[:, 0] = (torch.rand(b, generator=g) > 0.15).float()
        caption = F.normalize(noisy(batch["caption"], g, caption_noise), dim=-1)
        caption = caption * (torch.rand(b, 1, generator=g) > 0.1).float()
        pred = model.frame_generator(z_init, keyframe, mask, caption, level)
        loss = F.l1_loss(pred, batch["latents"])
        optimizer.zero_grad(), loss.backward(), optimizer.step(), schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"frame generator step {step}: L1 {loss.item():.4f}", flush=True)
    model.frame_generator.requires_grad_(False)
    pairs = same_shot_pairs(feats, starts)
    optimizer, schedule = _optimise(model.same_shot.parameters(), 3e-3, 300)
    for _ in range(300):
        idx = torch.randint(len(pairs["a"]), (256,), generator=g)
        logits = model.same_shot(noisy(pairs["a"][idx], g, 0.5), noisy(pairs["b"][idx], g, 0.5))
        loss = F.binary_cross_entropy_with_logits(logits, pairs["same"][idx])
        optimizer.zero_grad(), loss.backward(), optimizer.step(), schedule.step()
    return model.eval()


def same_shot_pairs(feats: dict[str, list[torch.Tensor]], starts: np.ndarray) -> dict[str, torch.Tensor]:
    """Keyframe embeddings (CLS tokens of frame 2) of clips 2 s apart and whether they share a shot."""
    a, b, same = [], [], []
    for m, s in starts:
        if (s + N_FRAMES + 2) // 2 < len(feats["tokens"][m]):
            a.append(feats["tokens"][m][(s + 2) // 2, 0])
            b.append(feats["tokens"][m][(s + N_FRAMES + 2) // 2, 0])
            same.append(float(feats["shots"][m][s + 2] == feats["shots"][m][s + N_FRAMES + 2]))
    return {"a": torch.stack(a), "b": torch.stack(b), "same": torch.tensor(same)}


def save_asset(out: Path, name: str, module: torch.nn.Module, card: dict[str, Any], command: str) -> None:
    """``out/<name>/model.safetensors`` (float16) and ``card.json`` with its sha256 and the command."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().half().contiguous() for k, v in module.state_dict().items()}, folder / WEIGHTS_FILE
    )
    card = {"name": name, **card, "sha256": sha256_file(folder / WEIGHTS_FILE), "command": command}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")


def _scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean frame SSIM (NEURONS, MindEye-like) and PSNR of ``(N, F, 3, S, S)`` clips in [0, 1]."""
    p, t = to_uint8_clips(pred, FRAME_SIZE), to_uint8_clips(truth, FRAME_SIZE)
    return {
        "ssim_mindvideo": round(float(frame_ssim(p, t, flavour="mindvideo").mean()), 4),
        "ssim_neurons": round(float(frame_ssim(p, t, flavour="neurons").mean()), 4),
        "psnr": round(float(frame_psnr(p, t).mean()), 3),
    }


@torch.no_grad()
def held_out_report(
    ae: FrameAutoencoder, model: WorldVideoModel, movies: list[Any], feats: dict[str, list[torch.Tensor]],
    strength: float,
) -> dict[str, Any]:  # fmt: skip
    """Held-out numbers of the float16 models: AE, keyframe head, generator and its ablations, fusion."""
    g = torch.Generator().manual_seed(123)
    latents = encode_movies(ae, movies)
    starts = clip_starts(movies)[::3]
    batch = clip_batch(starts, latents, feats, g)
    truth = torch.stack([as_float(movies[m].frames[s : s + N_FRAMES]) for m, s in starts])
    b = len(starts)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return ae.decode(z.flatten(0, 1)).unflatten(0, (b, N_FRAMES))

    keyframe = model.keyframe_head(batch["tokens"])
    blurry = simulate_blurry(batch["latents"], g)
    eps = torch.randn(blurry.shape, generator=g)

    def generate(use_key: bool, use_blurry: bool, key: torch.Tensor = keyframe) -> torch.Tensor:
        level = torch.full((b,), strength if use_blurry else 1.0)
        z = (1 - level).sqrt().view(-1, 1, 1, 1, 1) * (blurry if use_blurry else 0) + level.sqrt().view(
            -1, 1, 1, 1, 1) * eps  # fmt: skip
        mask = torch.zeros(b, N_FRAMES)
        mask[:, 0] = float(use_key)
        return model.frame_generator(z, key, mask, F.normalize(batch["caption"], dim=-1), level)

    full = generate(True, True)
    swapped = generate(True, True, keyframe.roll(1, dims=0))
    change = (full - swapped).abs().mean(dim=(0, 2, 3, 4))
    pairs = same_shot_pairs(feats, clip_starts(movies))
    same_pred = model.same_shot(pairs["a"], pairs["b"]) > 0
    return {
        "held_out": f"{len(movies)} movies, {b} clips of {N_FRAMES} frames (every 6th frame start)",
        "autoencoder_reconstruction": _scores(decode(batch["latents"]), truth),
        "keyframe_head_from_true_tokens": _scores(ae.decode(keyframe)[:, None], truth[:, :1]),
        "keyframe_head_from_simulated_tokens": _scores(
            ae.decode(model.keyframe_head(simulate_tokens(batch["tokens"], batch["tokens"].mean(0), g, 0.5)))[
                :, None
            ],
            truth[:, :1],
        ),
        "simulated_blurry_video": _scores(decode(blurry), truth),
        "generator_full": _scores(decode(full), truth),
        "generator_no_keyframe": _scores(decode(generate(False, True)), truth),
        "generator_no_blurry": _scores(decode(generate(True, False)), truth),
        "keyframe_swap_mean_abs_latent_change_per_frame": [round(float(c), 4) for c in change],
        "fusion_same_shot_accuracy": round(float((same_pred.float() == pairs["same"]).float().mean()), 4),
        "fusion_same_shot_base_rate": round(float(pairs["same"].mean()), 4),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: train both assets and write them under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("brainbench/generators/assets"))
    parser.add_argument("--movies", type=int, default=10, help="movies rendered (the last 2 held out)")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds per movie")
    parser.add_argument("--ae-steps", type=int, default=400)
    parser.add_argument("--gen-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=24, help="clips per generator step")
    parser.add_argument("--ae-batch-size", type=int, default=32, help="frames per autoencoder step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--strength", type=float, default=0.3, help="ϑ of the init (paper Eq. 5)")
    parser.add_argument("--token-noise", type=float, default=0.5, help="most white token noise (sds)")
    parser.add_argument("--caption-noise", type=float, default=2.0, help="most caption noise (sds)")
    parser.add_argument(
        "--reuse-autoencoder",
        action="store_true",
        help="keep the autoencoder under --out (and the latents methods were trained on); train the rest",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1: OpenMP barriers cost more than they give on a shared machine",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    movies = render_movies(args.movies, args.duration)
    train_movies, test_movies = movies[:-2], movies[-2:]
    frames = np.concatenate([m.frames for m in train_movies])
    print(
        f"rendered {len(movies)} movies ({len(frames)} training frames) in {time.time() - t0:.0f}s",
        flush=True,
    )
    command = " ".join([TRAIN_COMMAND.split(" --out")[0], *(argv if argv is not None else sys.argv[1:])])
    data = f"world movies seed {SEED} keys ({MOVIE_KEY}, 1..{args.movies}), {args.duration:.0f} s each"
    common = {"data": f"{data} at {FPS} fps, {FRAME_SIZE} px; last 2 held out", "threads": args.threads}
    if not args.reuse_autoencoder:
        t_ae = time.time()
        ae = train_autoencoder(frames, args.ae_steps, args.ae_batch_size, args.lr)
        ae_seconds = time.time() - t_ae
        save_asset(args.out, AE_NAME, ae, {
            "model": ae.config(), **common,
            "training": {"steps": args.ae_steps, "batch_size": args.ae_batch_size, "lr": args.lr,
                         "loss": "L1 pixels", "seconds": round(ae_seconds, 1)},
            "latent_normalisation": {"shift": ae.latent_shift.tolist(), "scale": ae.latent_scale.tolist()},
        }, command)  # fmt: skip
    ae = load_autoencoder(args.out / AE_NAME)
    t_feat = time.time()
    feats = movie_features(movies)
    train_feats = {k: v[:-2] for k, v in feats.items()}
    print(f"world-CLIP features in {time.time() - t_feat:.0f}s", flush=True)
    t_gen = time.time()
    model = train_video_model(
        encode_movies(ae, train_movies), train_feats, clip_starts(train_movies), args.gen_steps,
        args.batch_size, args.lr, args.strength, args.token_noise, args.caption_noise,
    )  # fmt: skip
    gen_seconds = time.time() - t_gen
    save_asset(args.out, GENERATOR_NAME, model, {
        "model": model.config(), "backbone": BACKBONE, "autoencoder": AE_NAME, **common,
        "training": {"steps": args.gen_steps, "keyframe_head_steps": args.gen_steps // 3, "fusion_steps": 300,
                     "batch_size": args.batch_size, "lr": args.lr, "strength": args.strength,
                     "token_noise": args.token_noise, "caption_noise": args.caption_noise,
                     "seconds": round(gen_seconds, 1)},
    }, command)  # fmt: skip
    model = load_video_model(args.out / GENERATOR_NAME)
    report = held_out_report(ae, model, test_movies, {k: v[-2:] for k, v in feats.items()}, args.strength)
    ae_keys = ("held_out", "autoencoder_reconstruction")
    for name, metrics in (
        (AE_NAME, {k: report[k] for k in ae_keys}),
        (GENERATOR_NAME, {k: v for k, v in report.items() if k != "autoencoder_reconstruction"}),
    ):
        if name == AE_NAME and args.reuse_autoencoder:
            continue  # its card keeps the numbers of the run that trained it
        card_path = args.out / name / "card.json"
        card = json.loads(card_path.read_text())
        card["held_out_metrics"] = metrics
        card["total_seconds_this_run"] = round(time.time() - t0, 1)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(report, indent=2), f"\ntotal {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
