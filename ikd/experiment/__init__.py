"""`ikd experiment`: the paper's tables from one experiment file (systems x seeds, trained, averaged, evaluated,
tabulated). Modules: spec (the file and its validation), layout (run folders and their state), steps (one run:
data, training, averaging, evaluation), runner (local execution, progress), slurm (submitit), table, published,
plot."""
