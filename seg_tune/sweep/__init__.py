"""The sweep: an experiment's life, one module per stage.

    keys, values     the names a space file may use; values as written and as stored
    distributions    one `space` value each (no Ray, no Optuna)
    spec             the typed, frozen ExperimentSpec: a trial's config, resume-sensitive keys
    load, wandb      a space file (seg_tune's syntax or a W&B sweep file) -> ExperimentSpec
    rungs, asha      where ASHA judges trials (pure); the schedulers and limiters on Ray
    tuner            the only place a Tuner is built or restored
    trial            one trial on Ray Tune or Ray Train (sessions, resources, placement)
    trial_log        a trial's own log on storage, and the lines of a failed attempt
    faults           a lost node told apart from a failing trial
    tracking         the trials' wandb runs (wandb_log: reading wandb's run files back)
    layout           every path of <storage>/<name>/
    lock, disk       one driver per experiment folder; the storage's free space
    summary          summary.json: its schema, written and read
    results          after the sweep: trials read back, the best model, the post-sweep steps
    final            the final phase: the best configurations replicated and scored on test
    study            a study file's cells: corpora or languages x training-set sizes
    cluster          starting or joining Ray: the private token, loopback ports, the dashboard

The command that drives it is `seg_tune.cli.run` (`python -m seg_tune.run`).
"""
