"""The experiment configuration shared by every file in experiments/.

`experiment_config(tasks, preset)` returns one ml_collections ConfigDict grouped by subsystem
(`data`, `sim`, `policy`, `world_model`, `reward`, `loop`, `mesh`, `ckpt`). Presets:

- `tiny`: every code path in seconds on a CPU (tests).
- `sim`: the built-in simulated DROID station with small models; minutes on a laptop CPU.
- `paper`: the published hyper-parameters (VLAW §5.1, Appendix C) on a real DROID station,
  real DROID shards and the real checkpoints.

Every field is commented. Experiments override fields after calling this function.
"""

import ml_collections

PRESETS = ("tiny", "sim", "paper")

# `config.mesh.rules`: (logical axis name, mesh axis | tuple of mesh axes | None), read by
# vlaw/train/mesh.py, which says how they apply. Mesh axes: "data" (pure data parallelism),
# "fsdp" (parameters and optimizer state sharded) and "tensor" (wide matrices split).
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),  # activations' batch: every data-parallel axis (FSDP too)
    # Weight dimensions. "embed" carries FSDP (every transformer matrix has one), the wide
    # dimensions carry tensor parallelism (Megatron-style column/row split).
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("mlp", "fsdp"),
    ("heads", "tensor"),
    ("heads", "fsdp"),
    ("kv_heads", "tensor"),
    ("kv", None),  # head dimension: small, kept whole for attention kernels
    ("head_dim", None),
    ("vocab", "tensor"),
    ("vocab", "fsdp"),
    ("conv_out", "tensor"),
    ("conv_out", "fsdp"),
    ("conv_in", "fsdp"),
    ("layers", None),  # the nn.scan axis of stacked blocks
    ("norm", None),
)
TASKS = ("stack", "open_book", "erase", "scoop", "draw")


def _parse_arg(arg: str | None) -> str:
    """`experiments/x.py` -> paper; `experiments/x.py:sim` -> sim."""
    preset = (arg or "paper").strip()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    return preset


def experiment_config(tasks: tuple[str, ...], arg: str | None) -> ml_collections.ConfigDict:
    preset = _parse_arg(arg)
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    tiny, sim, paper = (preset == p for p in PRESETS)
    c = ml_collections.ConfigDict()
    c.preset = preset  # tiny | sim | paper
    c.tasks = tuple(tasks)  # task families this run trains and evaluates on
    c.seed = 0  # root seed; every phase folds in its own name and the iteration
    # What each iteration runs (vlaw/phases/loop.py): "vlaw", or the paper's baseline
    # "filtered_bc" (vlaw/baselines/filtered_bc.py: the real successes only, no imagination),
    # or "dsrl" (vlaw/baselines/dsrl.py: SAC steering the frozen base policy's noise).
    c.method = "vlaw"

    # --- Data (vlaw/data) -------------------------------------------------------------------
    c.data = d = ml_collections.ConfigDict()
    d.image_height = 180 if paper else 64  # camera frames as stored in RLDS (DROID: 180x320)
    d.image_width = 320 if paper else 64
    d.episodes_per_shard = 50 if paper else 16  # RLDS episodes per TFRecord shard
    d.skip_corrupt = False  # True: skip and count unreadable records instead of failing
    d.shuffle_buffer = 250_000 if paper else 2_000  # frames (openpi uses 250k for DROID)
    d.num_parallel_reads = 16 if paper else 2  # shards read concurrently per host
    # Co-training set of Eq. 2 (L = L_real + lambda * L_DROID). Empty path: no co-training.
    d.droid_path = "gs://gresearch/robotics/droid/1.0.1" if paper else ""
    d.droid_weight = 1.0  # lambda of Eq. 2 (the paper does not publish its value)

    # --- Simulated DROID station (vlaw/sim); ignored on a real robot --------------------------
    c.sim = s = ml_collections.ConfigDict()
    s.enabled = not paper  # paper: the real DROID station (vlaw/robot) instead
    s.num_workers = 1 if tiny else 2  # rendering processes (TensorFlow-free), one per core
    s.stations_per_worker = 1 if tiny else 4  # stations stepped (and rendered) as one batch
    s.max_steps = 30 if tiny else 150  # control steps per episode at 15 Hz
    s.expert_noise = 0.3  # scripted experts' action noise (0: near-perfect demonstrations)
    # Record the expert's correction, not the noisy action it executed (DART; vlaw/sim/expert.py):
    # demos that show the way back to the expert's path from where noise took the arm.
    s.expert_corrections = False
    # Share of each task's layout variety that resets draw (vlaw/sim/tasks/base.py): 1 the full
    # ranges, s < 1 the centred fraction s of each object's (0: one nominal layout).
    # sim: 0.3 (objects within a few cm of their places): trained on 25 demos, the base policy
    # succeeded on 7 of 20 held-out scoop layouts (full spread: 0 of 20; benchmarks/RESULTS.md).
    s.layout_spread = 0.3 if sim else 1.0

    # --- Which station collect and evaluate drive ------------------------------------------
    # "sim": the simulator (sim.enabled); "droid": the real DROID station (vlaw/robot), operator
    # labels; iteration 0's demonstrations must then already be in <workdir>/demos.
    c.station = "droid" if paper else "sim"
    c.robot = ro = ml_collections.ConfigDict()
    # ZED serial of each DROID camera (droid/misc/parameters.py); the left lens is read.
    ro.cameras = ml_collections.ConfigDict(
        {"exterior_image_1_left": "", "exterior_image_2_left": "", "wrist_image_left": ""}
    )
    ro.max_steps = 300  # control steps per episode at 15 Hz (20 s); Ctrl+C ends one earlier
    # Tool-centre workspace box in the robot base frame (m), enforced before every command
    # (DROID's own box is +-1 m, i.e. none). Measure the table and fixtures before a run.
    ro.workspace_min = (0.2, -0.6, 0.02)
    ro.workspace_max = (0.9, 0.6, 0.9)
    ro.watchdog_s = 1.0  # the arm is stopped when the policy's chunk takes longer than this

    # --- Iteration schedule (Algorithm 1) ----------------------------------------------------
    c.loop = lo = ml_collections.ConfigDict()
    lo.iterations = 2  # VLAW iterations (paper: 2)
    lo.warmstart_demos_per_task = 2 if tiny else 25  # demonstrations for the base policy
    lo.real_rollouts_per_task = 2 if tiny else (20 if sim else 50)  # K per task, iteration
    lo.synthetic_rollouts_per_task = 2 if tiny else (50 if sim else 500)  # N per task
    # imagine: policy <-> world-model exchanges per imagined episode, each executing
    # (world_model.num_future - 1) * frame_stride = 12 robot steps; tiny/sim cover
    # sim.max_steps, paper as Fig. 5 (20 interactions, ~16 s).
    lo.imagine_interactions = 3 if tiny else (13 if sim else 20)
    lo.imagine_batch_size = 2 if tiny else 8  # rollouts imagined together (one compiled shape)
    # Replay each imagined action sequence in the simulator from its start's reset and store
    # the outcome as the episode's ground-truth `success` (needs sim.enabled).
    lo.imagine_sim_replay = True
    # Fine-tune the reward model at every iteration on all labelled rollouts so far (True), or
    # at iteration 1 only and reuse it after (False: the paper's Appendix C).
    lo.retrain_reward = False
    # Ablation (a) of vlaw.study: fine-tune the world model on the online rollouts as well
    # (True, the paper) or on the demonstrations alone (False: Table 1's expert-only model).
    lo.world_model_online_rollouts = True
    # Ablation (c): the policy's update keeps the real rollouts' successes (True, Eq. 4) or
    # trains on the demonstrations and kept synthetic rollouts only (False: Figure 9).
    lo.policy_real_rollouts = True

    # --- Evaluation (vlaw/phases/evaluate.py) ------------------------------------------------
    c.evaluate = ev = ml_collections.ConfigDict()
    # Station episodes per task for each evaluated policy, on layouts no training phase uses
    # (the same layouts for every iteration, so policies are compared on equal footing).
    ev.episodes_per_task = 2 if tiny else (50 if sim else 20)
    # World-model checks after the station episodes, from iteration 1 on (a world model exists):
    # action replay, event confusion and the world model as a policy evaluator, in the report.
    ev.world_model_checks = True
    ev.camera = "wrist_image_left"  # replay scores' view (Table 1: the wrist camera)
    # Action replay (Table 1): clips of this iteration's evaluate episodes (held out from every
    # trainer), each replayed for `replay_seconds` from an evenly spread start. Paper: 256 clips
    # of 5 s. tiny: episodes last 2 s (sim.max_steps 30); sim: 16 clips keep evaluate to minutes.
    ev.replay_clips = 2 if tiny else (16 if sim else 256)
    ev.replay_seconds = 2.0 if tiny else 5.0
    # Event confusion (Table 1, right): whole evaluate episodes replayed from their first frame
    # (paper: 50 interaction clips); the imagined outcome is the reward model's decision unless
    # this JSON file ({clip id: true|false}, ids as the report lists them) labels the clip.
    ev.confusion_clips = 2 if tiny else (16 if sim else 50)
    ev.confusion_labels = ""
    # LPIPS: an `lpips.LPIPS` state dict (torch file holding backbone and heads, BUILD.md
    # "Video-metric networks"); empty: LPIPS is not computed and the report says so.
    ev.lpips_weights = ""
    ev.lpips_backbone = "alex"  # the LPIPS paper's recommended forward metric
    # The world model as a policy evaluator: every evaluated policy of the run imagined from the
    # first frames of iteration 0's evaluate episodes (the same starts for all), starts x
    # rollouts per task each, decided by the reward model. tiny: one batch per policy.
    ev.evaluator_starts_per_task = 1 if tiny else (2 if sim else 10)
    ev.evaluator_rollouts_per_start = 2 if tiny else (4 if sim else 5)
    # Run directories of baselines (method "filtered_bc", "dsrl") with this run's tasks and
    # seed, hence the same evaluation layouts: their evaluated policies join the comparison.
    ev.baseline_workdirs = ()
    ev.report_clips = 2 if tiny else 4  # replayed clips and rollout grids drawn in the report

    # --- pi0.5 policy (vlaw/models/policy) ---------------------------------------------------
    c.policy = p = ml_collections.ConfigDict()
    p.variant = preset  # model size preset
    p.action_horizon = 15  # actions per chunk (DROID: 15)
    # Actions executed before re-planning (openpi's DROID client: 8). sim: 4, as the policy
    # that fits its 3 noise-free scoop demos (R^2 0.86) replayed 1 of 3 of their layouts at 4
    # and 0 of 3 at 8, its tool ending closer to the demo's path (benchmarks/RESULTS.md).
    p.open_loop_steps = 4 if sim else 8
    p.num_sampling_steps = 10  # Euler steps of the flow-matching sampler
    # How the state reaches the model: "tokens" (openpi's pi0.5: 256 text bins in the prompt,
    # as its checkpoints expect) or "continuous" (a Dense projection added to the action
    # expert's tokens). tiny/sim: continuous, as the sim model trained from scratch ignored the
    # text bins (issue 13); the prompt is then ~10 tokens, hence max_token_len 32.
    p.state_input = "tokens" if paper else "continuous"
    # True: the loss trains all 32 padded action dims, the padding towards 0 (openpi; its
    # checkpoints were trained so). False: only the 8 real dims (the sampler then integrates
    # the padding's exact flow). Either way `loss_arm` and `loss_gripper` are logged apart.
    p.loss_on_padding = paper
    # Post-training (iterations >= 1, from the previous policy). sim: LR 1e-3, as the policy
    # trained from scratch at 3e-4 was still far from fitting its demos (benchmarks/RESULTS.md).
    p.train = _train_section(
        steps=4 if tiny else (750 if sim else 2_000),
        batch_size=2 if tiny else (32 if sim else 256),
        learning_rate=5e-5 if paper else (1e-3 if sim else 3e-4),
    )
    # Steps of the base policy's training (iteration 0; 0: policy.train.steps). sim: from
    # scratch, held-out scoop success was 0 of 20 up to 750 steps, 2 at 1000, 7 at 1500.
    p.warmstart_steps = 1500 if sim else 0
    # True: every policy update (the base policy's and each iteration's, whose data hold the
    # demos too) trains on every demonstration, failed ones included (weight 1; a scripted
    # expert's commands are its own wherever its executed noise made it fail, and with
    # sim.expert_corrections they are the noise-free ones). False: Eq. 4's weight, successes
    # only. Rollouts always keep Eq. 4's weight.
    p.failed_demos = False
    p.tokenizer_path = ""  # PaliGemma's SentencePiece model (paper); empty: train a small one
    p.tokenizer_vocab_size = 512  # pieces of that small model (then the model's vocab size)
    p.max_token_len = 200 if paper else 32  # prompt tokens incl. any state bins (openpi: 200)
    p.openpi_asset_id = "droid"  # norm stats of an openpi init_from: assets/<id>/norm_stats.json

    # --- Ctrl-World world model (vlaw/models/world_model) ------------------------------------
    c.world_model = w = ml_collections.ConfigDict()
    w.variant = preset
    w.num_history = 6  # memory frames (Ctrl-World: 6)
    w.num_future = 5  # predicted frames, the first being the current frame (Ctrl-World: 5)
    w.frame_stride = 3  # 15 Hz robot steps per world-model frame (5 Hz frames)
    # "latent": diffusion on VAE latents (paper: SVD's VAE; tiny/sim: a small VAE trained
    # first). "pixel": on the pixels themselves, packed onto channels (no VAE to train).
    w.space = "latent" if paper else "pixel"
    # Pixel space: pixels per UNet cell and side (0: the preset VAE's factor). sim: 8 (8x8 cells
    # per 64x64 view): at 4 (16x16) a train step cost 14 s at batch 2 and 24 GB at batch 8.
    w.pixel_patch = 8 if sim else 0
    # Diffuse each frame's change from the current frame instead of the frame (tiny/sim, from
    # scratch: "nothing moves" is then the zero output; paper: False, Ctrl-World's weights).
    w.diffuse_residuals = not paper
    # How each frame's pose is scaled to [-1, 1] for the action encoder (ctrl_world.py,
    # POSE_NORMALIZATIONS): "droid", Ctrl-World's DROID percentiles (what its weights expect);
    # "sim", the simulated station's workspace with the Euler angles wrapped about the gripper
    # pointing down, whose roll otherwise flips between -1 and +1.
    w.pose_normalization = "droid" if paper else "sim"
    # Pose maps (vlaw/models/world_model/pose_maps.py, not Ctrl-World's): each frame also gets,
    # per camera, a blob where the gripper appears, from the cameras' calibration. "": off
    # (Ctrl-World's weights); "sim": the simulated station's exterior cameras.
    w.pose_maps = ""
    # Euler steps (Ctrl-World: 50). sim: 3, stopping at sampler_sigma_min = 5 (below).
    w.num_sampling_steps = 4 if tiny else (3 if sim else 50)
    # Per-frame CFG rises linearly from 1 to this (Ctrl-World: 2; 1: off). tiny/sim: off, as
    # guidance 2 gained at most 0.1 dB of held-out PSNR at tiny (lost up to 0.23) and doubles
    # the sampler's forwards.
    w.max_guidance = 2.0 if paper else 1.0
    # Training noise ln(sigma) ~ N(p_mean, p_std^2) and the sampler's largest sigma. paper:
    # Ctrl-World's (0.7, 1.6, 700), tuned for fine-tuning SVD. tiny/sim diffuse residuals from
    # scratch: most of a residual is exactly zero and what moved is decided at large sigma, so
    # training centres there (measured at tiny, 600 steps: EDM's -1.2, 1.2 gave 24.3 dB held
    # out, 1.0, 1.0 gave 24.9 dB; copying the current frame 24.4-24.6 dB). sigma_max: EDM's 80.
    w.noise_p_mean = 0.7 if paper else 1.0
    w.noise_p_std = 1.6 if paper else 1.0
    w.sigma_max = 700.0 if paper else 80.0
    # The sampler's last sigma before its final step to 0, whose output is then the denoiser's
    # estimate at this sigma (Ctrl-World: 0.002). Measured at sim: the from-scratch model's
    # samples at 0.002 change each frame twice as much as the truth does (speckle from noise
    # levels it barely trained on) and lose 1.6 dB to copying the current frame. sim: 5, in 3
    # steps, which beat 10 steps to 0.002 by 1.4-2.5 dB of held-out PSNR on all five sim world
    # models measured (benchmarks/RESULTS.md) and costs a third of the denoiser calls.
    w.sampler_sigma_min = 5.0 if sim else 0.002
    w.train = _train_section(
        steps=4 if tiny else (500 if sim else 50_000),
        batch_size=2 if tiny else (4 if sim else 32),
        learning_rate=1e-5 if paper else 1e-4,
    )
    # tiny/sim: the small VAE trained first as an autoencoder (checkpoints/vae), then frozen.
    # batch_size counts clips, 3 per window (one per camera). Unused at paper (SVD VAE).
    w.vae_train = _train_section(
        steps=4 if tiny else 300,
        batch_size=6 if tiny else 24,
        learning_rate=3e-4,
    )
    w.vae_kl_weight = 1e-6  # KL weight of that autoencoder (small: a near-deterministic code)
    w.vae_init_from = ""  # SVD VAE (diffusers vae safetensors or .pt); "" = init_from's `vae.`
    w.clip_path = ""  # local CLIP ViT-B/32 dir (paper); "" = seeded vector per instruction
    w.eval_holdout_episodes = 1  # newest real episodes kept out of training for the check
    w.eval_windows = 2 if tiny else 8  # held-out windows of the one-chunk PSNR check (0: off)

    # --- Qwen3-VL reward model (vlaw/models/reward) ------------------------------------------
    c.reward = r = ml_collections.ConfigDict()
    r.variant = preset
    r.alpha = 0.8  # success iff P("yes") > alpha (Eq. 3; paper: 0.8)
    r.num_frames = 16  # frames sampled uniformly from each trajectory (Appendix C)
    r.train = _train_section(
        steps=4 if tiny else 200,
        batch_size=2 if tiny else (16 if sim else 128),
        learning_rate=1e-5 if paper else 1e-4,
    )
    r.camera = "exterior_image_1_left"  # the view the reward model watches (DROID's names)
    r.tokenizer_path = ""  # local Qwen3-VL tokenizer dir; "" = small built-in (tiny/sim only)
    r.max_instruction_tokens = 64  # prompt room for the instruction (fixes jitted lengths)
    r.train_on_demos = not paper  # also fine-tune on <workdir>/demos (paper: D_real only)
    r.evaluate_after_training = True  # score the training set after train_reward (accuracy)
    # Also train on the training episodes replayed whole in the iteration's world model, with
    # their recorded labels (vlaw/rollout/recorded_replay.py): imagined frames with a known
    # outcome. Off at paper (Appendix C trains on D_real alone), and at sim, where it raised the
    # agreement on replays of unseen episodes but cut the precision on the policy's imagined
    # ones (benchmarks/RESULTS.md, "Fine-tuning from the pre-trained world model").
    r.train_on_world_model_replays = False
    r.label_batch_size = 2 if tiny else (16 if sim else 32)  # episodes per scoring batch
    # Datasets `label` scores, relative to the workdir, "{iteration}" formatted in.
    r.label_dataset_dirs = ("iter_{iteration:02d}/synthetic",)
    # Sources whose stored `success` is ground truth for the confusion matrices; "synthetic"
    # where imagine stores the simulator's replayed outcome (sim presets).
    r.known_label_sources = ("real", "demo", "droid", "replay") + (
        ("synthetic",) if s.enabled else ()
    )
    r.progress = True  # progress bars while training and scoring

    # --- DSRL baseline, method "dsrl" (vlaw/baselines/dsrl.py) -------------------------------
    # DSRL-SAC with the official pi0 recipe (dsrl_pi0; reward_dsrl_metrics.md §3.5) unless noted.
    c.dsrl = ds = ml_collections.ConfigDict()
    ds.noise_rows = 1  # steered noise rows of action_dim (32), the last repeated (recipe: 1)
    ds.action_magnitude = 1.0  # noise bound: SAC's tanh output times this (recipe, Libero: 1.0)
    ds.hidden_dims = (32, 32) if tiny else (128, 128, 128)  # actor and critic MLPs (recipe)
    ds.use_layer_norm = True  # LayerNorm after each hidden layer (all DSRL configs)
    ds.num_critics = 2 if tiny else 10  # Q ensemble (recipe: 10)
    ds.critic_reduction = "mean"  # how the ensemble's Qs combine: "mean" (recipe) or "min"
    ds.actor_learning_rate = 1e-4  # Adam (recipe)
    ds.critic_learning_rate = 3e-4  # Adam (recipe)
    ds.temperature_learning_rate = 3e-4  # Adam on log alpha (recipe)
    ds.initial_temperature = 1.0  # alpha at the start (SB3 DSRL's "auto" starts at 1.0)
    ds.target_entropy = 0.0  # SAC's entropy target (all DSRL configs, and the recipe on Aloha)
    ds.tau = 0.005  # Polyak rate of the target critics (recipe)
    ds.backup_entropy = True  # the -alpha log pi term in the TD target (standard SAC)
    ds.gamma = 0.999  # per robot step; a decision's discount is gamma ** executed steps (recipe)
    ds.batch_size = 16 if tiny else 256  # SAC minibatch (recipe: 256)
    ds.updates_per_transition = 2 if tiny else 20  # UTD: SAC steps per new decision (recipe: 20)

    # --- Study: methods x tasks x seeds, and ablations (vlaw/study.py) -----------------------
    c.study = st = ml_collections.ConfigDict()
    # Task families, one run each (as experiments/<task>.py): scoop and draw, the paper's
    # hardest task and the one its ablations use (Fig. 9); tiny: one, for the test.
    st.tasks = ("scoop",) if tiny else ("scoop", "draw")
    st.seeds = (0,) if tiny else (0, 1, 2)  # each run's config.seed; 3 give a spread over seeds
    st.methods = ("filtered_bc", "dsrl", "vlaw")  # each compared with the shared base policy
    # vlaw.study.ABLATIONS by name; one that retrains adds a vlaw run per (task, seed).
    st.ablations = ()

    # --- Parallelism (vlaw/train/mesh.py) ----------------------------------------------------
    c.mesh = m = ml_collections.ConfigDict()
    m.data = -1  # data-parallel axis; -1 takes the devices left over
    m.fsdp = 1  # parameters and optimizer state sharded along this axis
    m.tensor = 1  # tensor (model) parallelism
    m.distributed = False  # launch.py calls jax.distributed.initialize() (multi-host pods)
    # Logical axis name -> mesh axes (see LOGICAL_AXIS_RULES above); override as a whole, e.g.
    # --config.mesh.rules="(('embed', 'fsdp'), ('mlp', 'tensor'))".
    m.rules = LOGICAL_AXIS_RULES

    # --- Checkpoints (vlaw/train/checkpoints.py) ---------------------------------------------
    c.ckpt = k = ml_collections.ConfigDict()
    k.save_every_steps = 2 if tiny else 500  # also saved at the end and on SIGTERM
    k.keep = 3  # most recent checkpoints kept
    k.keep_period = 0 if not paper else 10_000  # also keep every Nth step forever (0: off)
    k.async_save = True  # write in the background while training goes on
    return c


def _train_section(steps: int, batch_size: int, learning_rate: float) -> ml_collections.ConfigDict:
    """Optimisation knobs shared by the three trainers (vlaw/train/trainer.py)."""
    t = ml_collections.ConfigDict()
    t.steps = steps  # optimizer steps
    t.batch_size = batch_size  # global batch
    t.learning_rate = learning_rate  # peak of warmup-cosine
    t.warmup_steps = max(1, steps // 20)  # linear warmup
    t.weight_decay = 1e-10  # AdamW (openpi's pi0.5 fine-tuning default)
    t.grad_clip_norm = 1.0  # global-norm clipping
    t.ema_decay = 0.0  # 0 disables the EMA of parameters (openpi: 0.99 for pi0.5)
    t.log_every_steps = 1 if steps <= 10 else 20  # metrics fetched from device this often
    t.max_nonfinite_steps = 10  # refused non-finite updates before the run stops
    t.compute_dtype = "float32" if steps <= 10 else "bfloat16"  # activations
    t.param_dtype = "float32"  # master weights and optimizer moments
    t.remat_policy = "nothing_saveable"  # jax.checkpoint_policies name; "none" disables
    t.init_from = ""  # external or vlaw checkpoint to start from (separate from resume)
    return t
