"""Filtered behaviour cloning, VLAW's first baseline (paper §5.3, Figure 7).

`config.method = "filtered_bc"`: the same warm start and the same real-rollout budget per
iteration as VLAW (`loop.real_rollouts_per_task` rollouts of the current policy), and the
policy post-trained on the successful ones only, with no world model, no reward model and no
synthetic data. It is VLAW's own `train_policy` on fewer datasets: the phase reads the
demonstrations and every `iter_NN/real` (no `iter_NN/synthetic` exists) with Eq. 4's binary
weights, so failures weigh 0 and the update is behaviour cloning on D_real+ (plus the
demonstrations the base policy was fine-tuned on, which VLAW's update also keeps). The
comparison with VLAW therefore isolates what imagination adds.
"""

# The phases of one iteration, in order (the warm start is VLAW's).
ITERATION = ("collect", "train_policy", "evaluate")
