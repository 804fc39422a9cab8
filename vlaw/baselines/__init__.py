"""The paper's baselines (§5.3, Figure 7), each a `config.method` of the same experiments:
`filtered_bc` (filtered_bc.py) and `dsrl` (dsrl.py, its SAC learner in sac.py)."""
