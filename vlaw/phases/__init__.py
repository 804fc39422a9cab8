"""Algorithm 1, one module per phase, in its order: `collect`, `train_world_model`,
`train_reward`, `imagine`, `label`, `train_policy`. Each is `(config, workdir, iteration) ->
summary`, reads and writes the run directory through `vlaw.workdir`, gets its models through
`vlaw.agents`, and is registered in `vlaw.pipeline.PHASES`."""
