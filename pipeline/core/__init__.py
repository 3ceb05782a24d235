"""What every stage shares: params, paths, atomic writes, logs, errors, the dataset's constants, IDX
files, splits, figures and the stage command line. Never imports TensorFlow."""
