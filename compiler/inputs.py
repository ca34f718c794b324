"""The three disjoint input sets of a compile: calibration, selection and verification.

A fidelity figure is worth what its inputs are worth, so a compile never judges itself on what it tuned on:

    calibration    what quantization and the mixed-bit search *see*: QNN activation ranges, the mixed-bit
                   layer sensitivities, the fp16-overflow ranges (fp16_safety)
    selection      what choices are *judged* on: QNN remedies (which nodes go to 16 bits), the mixed-bit
                   search's secant steps on its noise budget
    verification   what `psnr_db` and the gates report; nothing is tuned on it

Each set is a set of real denoising trajectories of the checkpoint's own pipeline (its tokenizer, text
encoder, scheduler and VAE; classifier-free guidance on, the empty prompt as the unconditional branch) with
its own prompts, its own seeds and its own step count, so its timesteps fall elsewhere on the schedule
(DPM-Solver++ at 3 steps: 999/666/333; 4: 999/749/499/249; 5: 999/799/599/399/199). The prompt lists
below are disjoint (tests/test_inputs.py checks it, and that none is in the built-in model's training
check set); seeds are `--seed + i` (verification), `+ 1000 + i` (selection), `+ 2000 + i` (calibration).
The unconditional branch (the empty prompt) is the same input in every set: it is the same in real use.

A checkpoint that is not a whole pipeline (one component folder) gets the component's example inputs,
drawn from each role's own seed.

Sizes are options (`--calibration-prompts/--calibration-steps`, `--selection-prompts/--selection-steps`,
`--verify-prompts/--verify-steps`); a target asks only for the sets it uses (`input_roles`), so an onnx
compile costs one trajectory as before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from fusionc.checkpoint import Checkpoint
from fusionc.core.context import CALIBRATION, SELECTION, TRAJECTORY_GUIDANCE, VERIFICATION
from fusionc.core.numerics import Feeds
from fusionc.core.options import CompileOptions
from fusionc.controlnet import outline_image
from fusionc.export import component_spec, image_size, latent_scale, text_length
from fusionc.dit import geometry as dit_geometry
from fusionc.dit_trajectory import denoise_dit, load_dit_scheduler, load_dit_tokenizers
from fusionc.trajectory import denoise, load_scheduler, load_tokenizer

DIT_GUIDANCE = 4.5  # PixArt's default guidance; SD3's is 7.0 (either mixes a guidance batch of 2)

ROLES = (CALIBRATION, SELECTION, VERIFICATION)

VERIFICATION_PROMPTS = (
    "a red circle on the left", "a blue square at the top", "a green triangle on the right",
    "a yellow circle on the right", "a purple square at the bottom, striped background",
    "a cyan circle at the top, striped background", "a red triangle at the bottom", "a green cross at the bottom",
)
SELECTION_PROMPTS = (
    "a yellow circle at the bottom", "a purple triangle on the left, striped background",
    "a cyan cross on the right", "a green square in the center, striped background",
    "a red square on the right", "a blue circle in the center",
)
CALIBRATION_PROMPTS = (
    "a green circle at the top", "a red cross at the bottom, striped background", "a blue triangle in the center",
    "a yellow square on the left", "a cyan triangle at the bottom", "a purple circle on the right",
    "a green cross on the left, striped background", "a yellow triangle at the top",
    "a cyan square in the center", "a purple cross at the top", "a red circle in the center, striped background",
    "a blue square on the right, striped background",
)
PROMPTS = {CALIBRATION: CALIBRATION_PROMPTS, SELECTION: SELECTION_PROMPTS, VERIFICATION: VERIFICATION_PROMPTS}
SEED_OFFSETS = {VERIFICATION: 0, SELECTION: 1000, CALIBRATION: 2000}


@dataclass(frozen=True)
class InputSpec:
    """Which trajectories make one set: a prompt and a seed per trajectory, and the steps of each."""

    role: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.seeds):
            raise ValueError(f"{self.role}: {len(self.prompts)} prompts but {len(self.seeds)} seeds")


@dataclass
class InputSet:
    """One role's inputs per component (batch-2 guidance calls) and, where the loop ran, the torch outputs."""

    spec: InputSpec
    feeds: dict[str, list[Feeds]] = field(default_factory=dict)
    outputs: dict[str, list[Feeds]] = field(default_factory=dict)
    examples: bool = False  # no denoising loop ran (runs_loop): each component's example inputs, from seeds[0]

    def describe(self) -> dict[str, Any]:
        """The manifest's record: prompts, seeds, steps and the number of inputs per component (example inputs:
        no prompt and no step, the one seed they were drawn from)."""
        if self.examples:
            return {"prompts": [], "seeds": list(self.spec.seeds[:1]), "steps": 0, "example_inputs": True,
                    "count": {name: len(f) for name, f in self.feeds.items()}}
        return {"prompts": list(self.spec.prompts), "seeds": list(self.spec.seeds), "steps": self.spec.steps,
                "count": {name: len(f) for name, f in self.feeds.items()}}


def runs_loop(checkpoint: Checkpoint, components: list[str] | None) -> bool:
    """Whether the sets of a compile of `components` are denoising trajectories: the denoiser (UNet or transformer)
    is among them and the checkpoint has the VAE and tokenizers to run the loop; else each component's example
    inputs (random, drawn from the set's seed)."""
    names = components or checkpoint.component_names()
    denoiser = "transformer" if checkpoint.dit_family is not None else "unet"
    return denoiser in names and "vae" in checkpoint.models and bool(checkpoint.tokenizer_dirs)


def mixed_bit_search(options: CompileOptions) -> bool:
    from fusionc.passes.compression.dispatch import parse_palettize

    return parse_palettize(options.palettize)[1] is not None


def role_steps(options: CompileOptions, role: str) -> int:
    """The trajectory length of a role: its option, or the generation length when a mixed-bit search
    (`--palettize auto:DB`) chooses and is judged on it (a recipe fitted to 3 timesteps hides its error at the
    others: images 29 dB at a 36 dB UNet)."""
    steps = {CALIBRATION: options.calibration_steps, SELECTION: options.selection_steps,
             VERIFICATION: options.verify_steps}[role]
    return max(steps, options.mixed_bit_steps) if mixed_bit_search(options) else steps


def role_spec(options: CompileOptions, role: str) -> InputSpec:
    count = {CALIBRATION: options.calibration_prompts, SELECTION: options.selection_prompts,
             VERIFICATION: options.verify_prompts}[role]
    prompts = PROMPTS[role][: max(1, count)]
    seeds = tuple(options.seed + SEED_OFFSETS[role] + i for i in range(len(prompts)))
    return InputSpec(role, prompts, seeds, role_steps(options, role))


def user_spec(prompts: tuple[str, ...], seeds: tuple[int, ...] | None, steps: int) -> InputSpec:
    """`fusionc verify --prompts ... --seeds ...`: one seed per prompt (default 0, 1, ...)."""
    seeds = tuple(seeds) if seeds else tuple(range(len(prompts)))
    if len(seeds) == 1 and len(prompts) > 1:
        seeds = tuple(seeds[0] + i for i in range(len(prompts)))
    return InputSpec(VERIFICATION, tuple(prompts), seeds, steps)


def needed_roles(target: Any, options: CompileOptions) -> tuple[str, ...]:
    """The sets this compile uses: the target's (`input_roles(options)`), both tuning sets for a mixed-bit
    search, verification unless --no-verify."""
    roles = set(getattr(target, "input_roles", lambda o: ())(options))
    if mixed_bit_search(options):
        roles |= {CALIBRATION, SELECTION}
    if options.verify:
        roles.add(VERIFICATION)
    return tuple(r for r in ROLES if r in roles)


def collect(checkpoint: Checkpoint, options: CompileOptions, components: list[str],
            specs: dict[str, InputSpec]) -> dict[str, InputSet]:
    """Run the torch trajectories of every spec; one InputSet per role."""
    sets = {}
    for role, spec in specs.items():
        feeds, outputs = trajectory_samples(checkpoint, replace(options, seed=spec.seeds[0]), components,
                                            prompts=spec.prompts, seeds=spec.seeds, steps=spec.steps, role=role)
        sets[role] = InputSet(spec, feeds, outputs, examples=not runs_loop(checkpoint, components))
    return sets


def input_sets(checkpoint: Checkpoint, options: CompileOptions, components: list[str],
               roles: tuple[str, ...]) -> dict[str, InputSet]:
    return collect(checkpoint, options, components, {role: role_spec(options, role) for role in roles})


def reference_runners(checkpoint: Checkpoint, options: CompileOptions) -> dict[str, Callable[[Feeds], Feeds]]:
    return {name: component_spec(checkpoint, name, options).reference for name in checkpoint.component_names()}


def trajectory_steps(options: CompileOptions) -> int:
    """Steps of the verification trajectory: --verify-steps, or the generation length when a mixed-bit search
    (`--palettize auto:DB`) chooses its recipe (fusionc.inputs.role_steps)."""
    return role_steps(options, VERIFICATION)


def trajectory_samples(checkpoint: Checkpoint, options: CompileOptions, components: list[str] | None = None,
                       prompts: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
                       steps: int | None = None, role: str = VERIFICATION,
                       ) -> tuple[dict[str, list[Feeds]], dict[str, list[Feeds]]]:
    """(inputs, torch outputs) of every component call along denoising runs (guidance on), one per prompt
    with its seed. Defaults: the verification set of `options` (fusionc.inputs). Components the loop does not
    call (vae_encoder, or every component of a checkpoint that is not a full pipeline) get inputs only: the
    component's example inputs drawn from `seeds[0]`. A ControlNet's control image is the prompt's outline
    (fusionc.controlnet.outline_image), jittered by each trajectory's seed outside the verification `role`."""
    if prompts is None:
        spec = role_spec(options, VERIFICATION)
        prompts, seeds, steps = spec.prompts, spec.seeds, spec.steps
    seeds = tuple(seeds) if seeds is not None else tuple(options.seed + i for i in range(len(prompts)))
    steps = steps if steps is not None else trajectory_steps(options)
    feeds: dict[str, list[Feeds]] = defaultdict(list)
    outputs: dict[str, list[Feeds]] = defaultdict(list)
    names = components or checkpoint.component_names()
    dit = checkpoint.dit_family is not None  # SD3 / PixArt: fusionc.dit_trajectory
    if not runs_loop(checkpoint, names):
        example_options = replace(options, seed=seeds[0]) if seeds else options
        for name in names:
            spec = component_spec(checkpoint, name, example_options)
            feeds[name].append({k: v.numpy() for k, v in spec.example.items()})
        return dict(feeds), {}
    tokenizers = (load_dit_tokenizers(checkpoint.tokenizer_dirs) if dit
                  else {k: load_tokenizer(v) for k, v in checkpoint.tokenizer_dirs.items()})

    def recording(name: str, run: Callable[[Feeds], Feeds]) -> Callable[[Feeds], Feeds]:
        def call(f: Feeds) -> Feeds:
            out = run(f)
            if name in names:
                feeds[name].append(f)
                outputs[name].append(out)
            return out
        return call

    runners = {name: recording(name, run) for name, run in reference_runners(checkpoint, options).items()}
    height, width = image_size(checkpoint, options)
    scale = latent_scale(checkpoint)
    if dit:  # the flow-matching (SD3) or DiT (PixArt) loop
        geo = dit_geometry(checkpoint, options)
        for prompt, seed in zip(prompts, seeds):
            denoise_dit(runners, tokenizers, load_dit_scheduler(checkpoint.scheduler_dir), prompt, geo, steps=steps,
                        seed=seed, guidance=DIT_GUIDANCE, latent_hw=(height // scale, width // scale),
                        record=lambda name, f: feeds[name].append(f) if name == "vae_encoder" and name in names else None,
                        decode=bool({"vae_decoder", "vae_encoder"} & set(names)))
        return dict(feeds), dict(outputs)
    unet = checkpoint.models["unet"]
    vae = checkpoint.models["vae"]
    for prompt, seed in zip(prompts, seeds):
        denoise(runners, tokenizers, load_scheduler(checkpoint.scheduler_dir), prompt, steps=steps,
                seed=seed, guidance=TRAJECTORY_GUIDANCE, latent_shape=(unet.config.in_channels, height // scale, width // scale),
                scaling_factor=float(getattr(vae.config, "scaling_factor", 1.0) or 1.0),
                text_length=text_length(checkpoint), sdxl=checkpoint.is_sdxl, image_size=(height, width),
                record=lambda name, f: feeds[name].append(f) if name == "vae_encoder" and name in names else None,
                decode=bool({"vae_decoder", "vae_encoder"} & set(names)),
                control_image=outline_image(prompt, height, width, None if role == VERIFICATION else seed)
                if checkpoint.has_controlnet else None)
    return dict(feeds), dict(outputs)
